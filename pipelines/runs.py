"""The `runs` table: every flow records its parameters when it starts and its outcome when it ends (counts,
failures by reason, timings, table versions, or the error that stopped it), so results can be reproduced."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime

import pyarrow as pa

from schemas.catalog import Catalog
from schemas.tables import RUNS
from workers.rows import now_utc


@dataclass
class RunRecorder:
    """One row in `runs` for one flow run, written at start ('running') and updated at the end.

    Used as a context manager: entering records the start, an exception leaving the block records the failure
    (and propagates); the block calls `finish` with the outcome.
    """

    catalog: Catalog
    flow: str
    params: dict
    run_id: str = ""
    started_at: datetime = field(default_factory=now_utc)

    def __post_init__(self) -> None:
        self.run_id = self.run_id or f"{self.flow}-{self.started_at:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"

    def start(self) -> RunRecorder:
        """Record the run as running, with its parameters and the table versions it starts from."""
        self._write("running", finished=False)
        return self

    def __enter__(self) -> RunRecorder:
        return self.start()

    def __exit__(self, kind, error, traceback) -> None:
        if error is not None:
            self.fail(error)

    def finish(self, status: str, counts: dict, failures: dict, timings: dict) -> dict[str, int]:
        """Record the outcome; returns the table versions after the run (this row included)."""
        self._write(status, True, counts=counts, failures=failures, timings=timings)
        return self.catalog.versions()

    def fail(self, error: BaseException) -> None:
        """Record that the run stopped with an error."""
        self._write("failed", True, error=f"{type(error).__name__}: {error}")

    def _write(self, status: str, finished: bool, counts=None, failures=None, timings=None, error=None) -> None:
        row = {
            "run_id": self.run_id,
            "flow": self.flow,
            "status": status,
            "started_at": self.started_at,
            "finished_at": now_utc() if finished else None,
            "params": json.dumps(self.params, default=str),
            "counts": json.dumps(counts or {}),
            "failures": json.dumps(failures or {}),
            "timings": json.dumps(timings or {}),
            "table_versions": json.dumps(self.catalog.versions()),
            "error": error,
        }
        self.catalog.merge(RUNS, pa.Table.from_pylist([row], schema=RUNS.schema()), update=True)
