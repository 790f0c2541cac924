"""Several server processes on one port: the parent accepts every connection and deals them out in turn, each
process serving the connections it was handed with its own searcher, query pool and queue.

Why dealt out, not shared: one listening socket accepted by every process went, connection after connection, to
whichever process woke first (measured: all load on one); one SO_REUSEPORT socket per process spread connections
by a hash of their addresses, which put both of two keep-alive clients on one process about half the time
(measured: 0.89x one process's throughput at 2 clients). Dealing in turn gives N processes an equal share of any
N or more connections."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import multiprocessing
import os
import signal
import socket
import sys
import threading
from dataclasses import asdict
from functools import partial
from multiprocessing.connection import Connection
from multiprocessing.reduction import recv_handle, send_handle

import uvicorn
from fastapi import FastAPI

from glscl.backbone_config import BackboneConfig
from pipelines.configs import ServeConfig
from pipelines.serve import create_app
from schemas.store import StoreConfig
from workers.search.config import SearchConfig
from workers.search.searcher import Searcher

PROCESS_CONFIG_ENV = "GLSCL_SERVE_PROCESS_CONFIG"  # the configs the parent passes its server processes
BACKLOG = 2048
log = logging.getLogger("uvicorn.error")


def serve_processes(search: SearchConfig, config: ServeConfig) -> None:
    """Start `config.processes` server processes, deal them the port's connections until interrupted, then wait
    for them to finish."""
    os.environ[PROCESS_CONFIG_ENV] = json.dumps({"search": asdict(search), "serve": asdict(config)})
    uvicorn.Config(app_from_environment, factory=True, log_level="info")  # sets up uvicorn's loggers, as run() does
    with listening_socket(config.host, config.port) as listener:
        port = listener.getsockname()[1]
        url = f"http://[{config.host}]" if ":" in config.host else f"http://{config.host}"
        log.info("Uvicorn running on %s:%d (Press CTRL+C to quit)", url, port)
        spawn = multiprocessing.get_context("spawn")
        pipes = [spawn.Pipe() for _ in range(config.processes)]
        processes = [spawn.Process(target=_serve_process, args=(child,)) for _, child in pipes]
        for process in processes:
            process.start()
        for _, child in pipes:
            child.close()
        log.info("Started %d server processes [%s]", len(processes), ", ".join(str(p.pid) for p in processes))

        def forward(signum: int, _: object) -> None:
            for process in processes:
                if process.is_alive():
                    os.kill(process.pid, signum)

        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, forward)
        handles = [(parent, process.pid) for (parent, _), process in zip(pipes, processes, strict=True)]
        dealer = ConnectionDealer(listener, handles)
        threading.Thread(target=dealer.run, name="connection-dealer", daemon=True).start()
        for process in processes:
            process.join()


def listening_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on (host, port); the protocol is given so that asyncio turns Nagle's algorithm off
    for the connections accepted from it (without that a keep-alive client waited about 50 ms, a delayed ACK, for
    each answer sent in two writes)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(BACKLOG)
    return sock


class ConnectionDealer:
    """Accepts connections and hands each, as a file descriptor, to the next server process in turn; a process
    that has exited is skipped."""

    def __init__(self, listener: socket.socket, processes: list[tuple[Connection, int]]) -> None:
        self.listener = listener
        self.processes = processes
        self.turn = 0

    def run(self) -> None:
        """Deal until no process is left to take a connection."""
        while self.processes:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            with connection:
                self.hand_out(connection)

    def hand_out(self, connection: socket.socket) -> None:
        """Give `connection` to the next live process (the parent's copy is closed by the caller)."""
        while self.processes:
            self.turn %= len(self.processes)
            pipe, pid = self.processes[self.turn]
            try:
                send_handle(pipe, connection.fileno(), pid)
            except OSError:
                del self.processes[self.turn]
                continue
            self.turn += 1
            return


class HandedConnectionsServer(uvicorn.Server):
    """A uvicorn server that listens on no socket of its own: it serves the connections its parent hands it through
    `pipe`, with uvicorn's own HTTP protocol, so keep-alive, limits and graceful shutdown work as in `uvicorn.run`."""

    def __init__(self, config: uvicorn.Config, pipe: Connection) -> None:
        super().__init__(config)
        self.pipe = pipe
        self.adopting: set[asyncio.Task[object]] = set()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=[])
        loop = asyncio.get_running_loop()
        protocol = partial(
            self.config.http_protocol_class,
            config=self.config,
            server_state=self.server_state,
            app_state=self.lifespan.state,
        )
        loop.add_reader(self.pipe.fileno(), self._adopt, loop, protocol)

    def _adopt(self, loop: asyncio.AbstractEventLoop, protocol: partial[asyncio.Protocol]) -> None:
        """Serve the connection waiting in the pipe; stop reading when the parent has gone."""
        try:
            descriptor = recv_handle(self.pipe)
        except (EOFError, OSError):
            loop.remove_reader(self.pipe.fileno())
            return
        task = loop.create_task(loop.connect_accepted_socket(protocol, socket.socket(fileno=descriptor)))
        self.adopting.add(task)
        task.add_done_callback(self.adopting.discard)


def _serve_process(pipe: Connection) -> None:
    """One of several server processes: its own searcher and app, serving the connections its parent deals it. Its
    log lines go to standard error, as those of the `glscl` process that started it."""
    with contextlib.redirect_stdout(sys.stderr):
        HandedConnectionsServer(uvicorn.Config(app_from_environment(), log_level="info"), pipe).run()


def app_from_environment() -> FastAPI:
    """The app of one of several server processes, from the configs its parent put in the environment."""
    settings = json.loads(os.environ[PROCESS_CONFIG_ENV])
    search, serve_settings = settings["search"], settings["serve"]
    backbone = search.pop("backbone")
    search = SearchConfig(
        **search | {"store": StoreConfig(**search["store"]), "backbone": backbone and BackboneConfig(**backbone)}
    )
    config = ServeConfig(**serve_settings | {"cors_origins": tuple(serve_settings["cors_origins"])})
    return create_app(Searcher(search), config)
