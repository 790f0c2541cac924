"""The ANN projection of a video index: the basis that maps each segment vector to the indexed width, how well it
fits, and the settings its vector index was built with, stored in a table beside the index (a table, so object
stores work too)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import numpy as np
import pyarrow as pa
import torch

from glscl.search_vectors import captured_energy, fit_projection
from schemas.catalog import Catalog
from schemas.tables import projection_spec
from workers.index.config import AnnConfig


@dataclass(frozen=True)
class Projection:
    """The ANN projection basis of one video index, how well it fits the vectors it was fitted on, and the ANN
    settings (`AnnConfig` fields) its vector index was last built with, so upkeep can rebuild it the same way."""

    basis: np.ndarray
    fitted_on: int
    captured_energy: float
    ann: dict = field(default_factory=dict)

    @classmethod
    def fit(cls, vectors: torch.Tensor, width: int, ann: AnnConfig) -> Projection:
        """The basis of the top `width` directions of the first `ann.projection_sample` segment vectors [N, D],
        recording the ANN settings."""
        sample = vectors[: ann.projection_sample]
        basis = fit_projection(sample, width)
        return cls(basis.numpy(), len(sample), captured_energy(sample, basis), asdict(ann))


def load_projection(catalog: Catalog, index_name: str) -> Projection | None:
    """The stored projection of the named video index, or None before the first index run."""
    spec = projection_spec(index_name)
    if not catalog.exists(spec):
        return None
    rows = catalog.scan(spec, spec.schema().names)
    if rows.num_rows == 0:
        return None
    shape = (rows["rows"][0].as_py(), rows["cols"][0].as_py())
    basis = np.asarray(rows["values"][0].values.to_numpy(), dtype=np.float32).reshape(shape)
    ann = json.loads(rows["ann"][0].as_py())
    return Projection(basis, rows["fitted_on"][0].as_py(), rows["captured_energy"][0].as_py(), ann)


def save_projection(catalog: Catalog, index_name: str, projection: Projection) -> None:
    """Store the projection and ANN settings (the basis is fitted once per index: later runs reuse it so old
    and new vectors stay comparable; the settings are replaced whenever the vector index is rebuilt)."""
    spec = projection_spec(index_name)
    row = {
        "name": "vector",
        "rows": projection.basis.shape[0],
        "cols": projection.basis.shape[1],
        "values": projection.basis.reshape(-1).tolist(),
        "fitted_on": projection.fitted_on,
        "captured_energy": projection.captured_energy,
        "ann": json.dumps(projection.ann, sort_keys=True),
    }
    catalog.merge(spec, pa.Table.from_pylist([row], schema=spec.schema()), update=True)
