"""Serving until interrupted: one process, or several sharing a port (`pipelines.service.processes`)."""

from __future__ import annotations

import uvicorn

from pipelines.configs import ServeConfig
from pipelines.service.app import create_app
from pipelines.service.processes import serve_processes
from workers.search.config import SearchConfig
from workers.search.searcher import Searcher
from workers.search.sharded import ShardedSearchConfig, ShardedSearcher


def serve(search: SearchConfig, config: ServeConfig) -> None:
    """Load the searcher once (in each of `config.processes` processes; over Ray actors for a gallery in shards) and
    serve HTTP until interrupted."""
    if config.gallery_shards > 1:
        searcher = ShardedSearcher(ShardedSearchConfig(search, config.gallery_shards, config.ray))
        uvicorn.run(create_app(searcher, config), host=config.host, port=config.port, log_level="info")
        return
    if config.processes == 1:
        uvicorn.run(create_app(Searcher(search), config), host=config.host, port=config.port, log_level="info")
        return
    serve_processes(search, config)
