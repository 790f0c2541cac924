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
from collections.abc import Callable
from dataclasses import asdict
from functools import partial
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from multiprocessing.reduction import recv_handle, send_handle

import uvicorn
from fastapi import FastAPI

from glscl.backbone_config import BackboneConfig
from pipelines.configs import ServeConfig
from pipelines.errors import is_bad_input
from pipelines.service.app import create_app
from schemas.store import StoreConfig
from workers.search.config import SearchConfig
from workers.search.searcher import Searcher

PROCESS_CONFIG_ENV = "GLSCL_SERVE_PROCESS_CONFIG"  # the configs the parent passes its server processes
BACKLOG = 2048
READY = b"ready"  # what a server process sends its parent once it serves
EXIT_CANNOT_START = 3  # a server process whose searcher cannot load (it sent its parent why)
log = logging.getLogger("uvicorn.error")


def serve_processes(search: SearchConfig, config: ServeConfig) -> None:
    """Start `config.processes` server processes, deal them the port's connections until interrupted (replacing a
    process that dies), then wait for them to finish."""
    os.environ[PROCESS_CONFIG_ENV] = json.dumps({"search": asdict(search), "serve": asdict(config)})
    uvicorn.Config(app_from_environment, factory=True, log_level="info")  # sets up uvicorn's loggers, as run() does
    with listening_socket(config.host, config.port) as listener:
        port = listener.getsockname()[1]
        url = f"http://[{config.host}]" if ":" in config.host else f"http://{config.host}"
        log.info("Uvicorn running on %s:%d (Press CTRL+C to quit)", url, port)
        processes = ServerProcesses(config.processes)
        log.info("Started %d server processes [%s]", config.processes, ", ".join(map(str, processes.pids())))
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda signum, _: processes.stop(signum))
        dealer = ConnectionDealer(listener, processes.live)
        threading.Thread(target=dealer.run, name="connection-dealer", daemon=True).start()
        processes.supervise()


class ServerProcesses:
    """The server processes and the pipes their connections go through. One that dies (a non-zero exit, e.g. killed
    for memory) after it began serving, while the server is not stopping, is replaced. One that dies before stops
    the server with the reason it sent (a missing index, say), since its replacement would fail alike."""

    def __init__(self, count: int) -> None:
        self.context = multiprocessing.get_context("spawn")
        self.lock = threading.Lock()
        self.stopping = False
        self.members = [self._start() for _ in range(count)]

    def _start(self) -> tuple[BaseProcess, Connection]:
        parent, child = self.context.Pipe()
        process = self.context.Process(target=_serve_process, args=(child,))
        process.start()
        child.close()
        return process, parent

    def pids(self) -> list[int]:
        """The current processes' ids."""
        with self.lock:
            return [process.pid for process, _ in self.members]

    def live(self) -> list[tuple[Connection, int]]:
        """The pipe and process id of every process still running."""
        with self.lock:
            return [(pipe, process.pid) for process, pipe in self.members if process.is_alive()]

    def stop(self, signum: int) -> None:
        """Pass `signum` on to every process; none is replaced from now on."""
        self.stopping = True
        for process, _ in list(self.members):
            if process.is_alive():
                os.kill(process.pid, signum)

    def supervise(self) -> None:
        """Wait until every process has exited, replacing those that die while the server runs."""
        while True:
            with self.lock:
                running = {process.sentinel: (process, pipe) for process, pipe in self.members}
            if not running:
                return
            for sentinel in wait(list(running)):
                self._ended(*running[sentinel])

    def _ended(self, process: BaseProcess, pipe: Connection) -> None:
        """Drop an exited process, or put a new one in its place."""
        process.join()
        said = pipe.recv_bytes() if pipe.poll() else b""  # READY once it began serving, or why it could not start
        pipe.close()
        replacement = []
        if not self.stopping and process.exitcode != 0:
            if said != READY:
                self.stop(signal.SIGTERM)
                if said:
                    raise ValueError(said.decode())
                raise RuntimeError(f"server process {process.pid} exited with code {process.exitcode} while starting")
            replacement = [self._start()]
            code, new = process.exitcode, replacement[0][0].pid
            log.warning("server process %d exited with code %s; process %d takes its place", process.pid, code, new)
        with self.lock:
            index = [member[0] for member in self.members].index(process)
            self.members[index : index + 1] = replacement


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

    def __init__(self, listener: socket.socket, processes: Callable[[], list[tuple[Connection, int]]]) -> None:
        self.listener = listener
        self.processes = processes
        self.turn = 0

    def run(self) -> None:
        """Deal until the listening socket is closed."""
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            with connection:
                self.hand_out(connection)

    def hand_out(self, connection: socket.socket) -> None:
        """Give `connection` to the next live process; with none left it is closed unanswered (by the caller, who
        closes the parent's copy in any case)."""
        live = self.processes()
        for attempt in range(len(live)):
            pipe, pid = live[(self.turn + attempt) % len(live)]
            try:
                send_handle(pipe, connection.fileno(), pid)
            except OSError:
                continue
            self.turn = (self.turn + attempt + 1) % len(live)
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
        self.pipe.send_bytes(READY)

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
        try:
            app = app_from_environment()
        except Exception as error:
            if not is_bad_input(error):  # a bug: its traceback
                raise
            pipe.send_bytes(str(error).encode())  # a missing index, a checkpoint that does not load...
            sys.exit(EXIT_CANNOT_START)
        HandedConnectionsServer(uvicorn.Config(app, log_level="info"), pipe).run()


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
