"""The HTTP search API and web page: FastAPI app over one warm Searcher (model, text tower and table handles
loaded once) shared by a pool of query threads. POST /search takes and returns JSON (schema at /openapi.json),
GET /thumbnail/{id} cuts a JPEG frame from the source video with ffmpeg, GET /video/{id} serves an indexed video's
file (with range requests, so a player can seek), GET / is a search page that plays each hit from its best span.

Security defaults (ServeConfig): loopback only unless a token is set; with a token every route but /health needs
`Authorization: Bearer TOKEN` or the page's cookie; no CORS unless origins are named; every parameter is validated,
so a malformed request gets a 4xx, never a 500; ffmpeg processes and queued queries are bounded, and work beyond
the bounds gets 503 with Retry-After instead of piling up."""

from __future__ import annotations

import asyncio
import hmac
import json
import math
import os
import unicodedata
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Annotated, Literal, TypeVar

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from starlette.types import ASGIApp, Receive, Scope, Send

from pipelines.configs import ServeConfig
from workers.ingest.decode import thumbnail_command
from workers.search.filters import OPERATORS, Filter
from workers.search.results import SearchResult, VideoFile
from workers.search.searcher import MAX_K, Searcher, SearchError

PAGE = Path(__file__).parent / "static" / "search.html"
THUMBNAIL_WIDTH = 192
THUMBNAIL_CACHE = 1024  # JPEGs kept in memory, a few KiB each
MAX_QUERY_CHARS = 1000  # longer texts are cut to the model's word limit anyway
MAX_VALUE_CHARS = 256
MAX_FILTERS = 16
MAX_FILTER_VALUES = 256
MAX_ID_CHARS = 256
TOKEN_COOKIE = "glscl_token"
OPEN_PATHS = ("/health",)
T = TypeVar("T")


def _has_control(text: str) -> bool:
    """Whether `text` holds a control or unpaired surrogate character (tabs and line breaks aside): no video id,
    caption or filter value holds one, and they break tokenizers and SQL literals."""
    return any(unicodedata.category(c) in ("Cc", "Cs") and c not in "\t\n\r" for c in text)


def _no_control_characters(text: str) -> str:
    """Refuse text with control characters (a 422)."""
    if _has_control(text):
        raise ValueError("control characters are not allowed")
    return text


Value = Annotated[str, Field(max_length=MAX_VALUE_CHARS), AfterValidator(_no_control_characters)]
Number = Annotated[float, Field(strict=True, allow_inf_nan=False)]


class FilterIn(BaseModel):
    """One metadata condition: column, operator (= != < <= > >= in) and value (a list for `in`)."""

    model_config = ConfigDict(extra="forbid")

    column: str = Field(max_length=64, pattern=r"^\w+$")
    op: Literal[OPERATORS]
    value: Value | Number | Annotated[list[Value | Number], Field(min_length=1, max_length=MAX_FILTER_VALUES)]


class SearchRequest(BaseModel):
    """A text query with its options."""

    model_config = ConfigDict(extra="forbid")

    text: Annotated[str, AfterValidator(_no_control_characters)] = Field(
        min_length=1, max_length=MAX_QUERY_CHARS, description=f"what to look for (at most {MAX_QUERY_CHARS} chars)"
    )
    k: int = Field(10, ge=1, le=MAX_K, strict=True, description="results to return")
    filters: list[FilterIn] = Field(
        default_factory=list, max_length=MAX_FILTERS, description="metadata conditions, ANDed"
    )
    exact: bool = Field(False, strict=True, description="score every video exactly instead of ANN + re-rank")
    hybrid: bool = Field(False, strict=True, description="fuse full-text matches on captions")


class Busy(Exception):
    """More work is waiting than the server takes on: answered 503 with Retry-After."""


class TokenGate:
    """ASGI middleware admitting a request with the token, as `Authorization: Bearer`, as the page's cookie, or as
    `?token=` on the page itself; /health is open. Comparisons take constant time."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.token = token.encode()

    def matches(self, candidate: str | bytes) -> bool:
        """Whether `candidate` is the token, in time independent of where they differ."""
        given = candidate.encode("utf-8", "surrogateescape") if isinstance(candidate, str) else candidate
        return hmac.compare_digest(given, self.token)

    def admits(self, request: Request) -> bool:
        """Whether the request carries the token in any of the accepted places."""
        scheme, _, credential = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and self.matches(credential.strip()):
            return True
        if self.matches(request.cookies.get(TOKEN_COOKIE, "")):
            return True
        return request.url.path == "/" and self.matches(request.query_params.get("token", ""))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS or self.admits(Request(scope)):
            await self.app(scope, receive, send)
            return
        detail = "missing or wrong token: send Authorization: Bearer TOKEN, or open the page as /?token=TOKEN"
        response = JSONResponse({"detail": detail}, 401, headers={"WWW-Authenticate": "Bearer"})
        await response(scope, receive, send)


class QueryPool:
    """Runs searches on a fixed set of threads with a bounded number waiting; beyond it, `run` raises Busy at once.
    Used from the event loop thread only, so the count needs no lock."""

    def __init__(self, workers: int, queue: int) -> None:
        self.executor = ThreadPoolExecutor(workers, thread_name_prefix="query")
        self.limit = workers + queue
        self.pending = 0

    def _release(self, _: object) -> None:
        self.pending -= 1

    async def run(self, function: Callable[[], T]) -> T:
        """`function()` on a pool thread; the slot stays taken until it finishes, even if the client left."""
        if self.pending >= self.limit:
            raise Busy("all query workers are busy and the queue is full")
        self.pending += 1
        loop = asyncio.get_running_loop()
        future = self.executor.submit(function)
        future.add_done_callback(lambda done: loop.call_soon_threadsafe(self._release, done))
        return await asyncio.wrap_future(future)


class Thumbnails:
    """JPEG frames cut by at most `processes` ffmpeg processes at once, each killed after `timeout_s`; a request
    waits `wait_s` for a process slot, then is refused (Busy). The last frames cut are kept in memory."""

    def __init__(self, processes: int, timeout_s: float, wait_s: float) -> None:
        self.slots = asyncio.Semaphore(processes)
        self.timeout_s = timeout_s
        self.wait_s = wait_s
        self.cache: OrderedDict[tuple[str, int], bytes] = OrderedDict()

    async def frame(self, video_id: str, path: str, tenths: int) -> bytes:
        """The frame of `path` at `tenths` / 10 seconds, from the cache or a new ffmpeg process."""
        key = (video_id, tenths)
        if key in self.cache:
            self.cache.move_to_end(key)
            return self.cache[key]
        try:
            await asyncio.wait_for(self.slots.acquire(), self.wait_s)
        except TimeoutError:
            raise Busy("every thumbnail process is busy") from None
        try:
            image = await self._cut(path, tenths / 10)
        finally:
            self.slots.release()
        self.cache[key] = image
        if len(self.cache) > THUMBNAIL_CACHE:
            self.cache.popitem(last=False)
        return image

    async def _cut(self, path: str, seconds: float) -> bytes:
        """Run ffmpeg for one frame, killing it at the timeout (504); a file it cannot read is a 404."""
        command = thumbnail_command(path, seconds, THUMBNAIL_WIDTH)
        process = await asyncio.create_subprocess_exec(
            *command, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        try:
            image, errors = await asyncio.wait_for(process.communicate(), self.timeout_s)
        except TimeoutError:
            process.kill()
            await process.wait()
            raise HTTPException(504, f"cutting a frame took more than {self.timeout_s:g} s") from None
        if process.returncode != 0 or not image:
            raise HTTPException(404, f"cannot cut a frame from the video: {errors.decode(errors='replace')[-200:]}")
        return image


def _invalid(_: Request, error: RequestValidationError) -> Response:
    """The 422 of a request that fails validation, without echoing its input (which may be megabytes, or hold
    characters that UTF-8 cannot encode)."""
    errors = [{key: value for key, value in item.items() if key != "input"} for item in error.errors()]
    return Response(json.dumps({"detail": errors}, default=str), 422, media_type="application/json")


def _busy(config: ServeConfig, error: Busy) -> JSONResponse:
    """The 503 of work over the server's bounds, saying when to try again."""
    return JSONResponse({"detail": str(error)}, 503, headers={"Retry-After": str(config.retry_after_s)})


def _guarded_app(config: ServeConfig) -> FastAPI:
    """A FastAPI app with the service's error answers, its token gate and (when configured) CORS."""
    app = FastAPI(title="glscl search", description="Text-to-video search with GLSCL over LanceDB.")
    app.add_exception_handler(Busy, lambda _, error: _busy(config, error))
    app.add_exception_handler(RequestValidationError, _invalid)
    if config.token:
        app.add_middleware(TokenGate, token=config.token)
    if config.cors_origins:  # added last, so it is outermost: preflight requests carry no token
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(config.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type", "Range"],
        )
    return app


def _add_media_routes(app: FastAPI, searcher: Searcher, queries: QueryPool, thumbnails: Thumbnails) -> None:
    """GET /thumbnail/{id} and /video/{id}: frames and files of indexed videos only, looked up by id."""

    async def video_file(video_id: str) -> VideoFile:
        """An indexed video with a readable source file, else 404 (ids are looked up, never used as paths)."""
        if len(video_id) > MAX_ID_CHARS or _has_control(video_id):
            raise HTTPException(404, "unknown video")
        found = await queries.run(partial(searcher.video_file, video_id))
        if found is None:
            raise HTTPException(404, f"unknown video {video_id!r}")
        if not found.source_path or not Path(found.source_path).is_file():
            raise HTTPException(404, f"video {video_id!r} has no readable source file")
        return found

    @app.get(
        "/thumbnail/{video_id}",
        response_class=Response,
        responses={200: {"content": {"image/jpeg": {}}}, 503: {"description": "busy: retry after Retry-After s"}},
    )
    async def thumbnail(
        video_id: str, t: Annotated[float, Query(ge=0, allow_inf_nan=False, description="seconds")] = 0.0
    ) -> Response:
        """A JPEG frame of the video at `t` seconds (0 up to its duration)."""
        found = await video_file(video_id)
        if found.duration_s is not None and t > found.duration_s:
            raise HTTPException(422, f"t={t:g} is past the end of the video ({found.duration_s:g} s)")
        image = await thumbnails.frame(video_id, found.source_path, math.floor(t * 10))
        return Response(image, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})

    @app.get("/video/{video_id}", response_class=FileResponse, responses={206: {"description": "a byte range"}})
    async def video(video_id: str) -> FileResponse:
        """The indexed video's source file, with range requests (a player seeks by asking for byte ranges)."""
        found = await video_file(video_id)
        return FileResponse(found.source_path, headers={"Cache-Control": "private, max-age=3600"})


def create_app(searcher: Searcher, config: ServeConfig | None = None) -> FastAPI:
    """The FastAPI app answering with `searcher` under `config`'s credentials and bounds."""
    config = config or ServeConfig()
    app = _guarded_app(config)
    queries = QueryPool(config.worker_count, config.queue)
    thumbnails = Thumbnails(config.thumbnail_processes, config.thumbnail_timeout_s, config.busy_wait_s)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page(request: Request) -> HTMLResponse:
        response = HTMLResponse(PAGE.read_text())
        token = request.query_params.get("token")
        if config.token and token:  # the gate admitted it: keep it for the page's requests
            response.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="strict")
        return response

    @app.get("/health")
    async def health() -> dict[str, str | int]:
        """Liveness plus what is served and by which server process (open without a token)."""
        return {"status": "ok", **searcher.describe(), "pid": os.getpid()}

    @app.post(
        "/search",
        response_model=SearchResult,
        responses={400: {"description": "a bad query"}, 503: {"description": "busy: retry after Retry-After s"}},
    )
    async def search(request: SearchRequest) -> SearchResult:
        """Top-k videos for a text query: ranked hits, the mode used, candidates re-ranked, timings (ms)."""
        if request.exact and config.exact_max_videos is not None and searcher.videos > config.exact_max_videos:
            raise HTTPException(
                400,
                f"exact mode scores every one of the {searcher.videos} videos, more than this server's "
                f"{config.exact_max_videos}; run `glscl query --exact` offline instead",
            )
        filters = [Filter(f.column, f.op, f.value) for f in request.filters]
        run = partial(searcher.search, request.text, request.k, filters, request.exact, request.hybrid)
        try:
            return await queries.run(run)
        except SearchError as error:
            raise HTTPException(400, str(error)) from None

    _add_media_routes(app, searcher, queries, thumbnails)
    return app
