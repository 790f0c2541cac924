"""Where the tables live, as a config the command line and every flow share (no LanceDB import needed)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class StoreConfig:
    """Where the tables live: any LanceDB URI (local folder, s3://...) and its object-store options."""

    uri: str = "./data/lancedb"
    storage_options: dict[str, str] = field(default_factory=dict)
