"""The HTTP search API and web page: FastAPI app over one warm Searcher (model, text tower and table handles
loaded once). POST /search takes and returns JSON (schema at /openapi.json), GET /thumbnail/{id} cuts a JPEG
frame from the source video with ffmpeg, GET / is a minimal search page."""

from __future__ import annotations

import threading
from functools import lru_cache
from pathlib import Path

import ffmpeg
import uvicorn
from fastapi import FastAPI, HTTPException
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel, Field

from workers.search.config import SearchConfig
from workers.search.filters import Filter
from workers.search.searcher import MAX_K, Searcher, SearchError, SearchResult

PAGE = Path(__file__).parent / "static" / "search.html"
THUMBNAIL_WIDTH = 192


class FilterIn(BaseModel):
    """One metadata condition: column, operator (= != < <= > >= in) and value (a list for `in`)."""

    column: str
    op: str
    value: str | float | list[str] | list[float]


class SearchRequest(BaseModel):
    """A text query with its options."""

    text: str = Field(description="what to look for")
    k: int = Field(10, ge=1, le=MAX_K, description="results to return")
    filters: list[FilterIn] = Field(default_factory=list, description="metadata conditions, ANDed")
    exact: bool = Field(False, description="score every video exactly instead of ANN + re-rank")
    hybrid: bool = Field(False, description="fuse full-text matches on captions")


def _thumbnail(path: str, seconds: float) -> bytes:
    """One JPEG frame of `path` at `seconds`, scaled to THUMBNAIL_WIDTH pixels wide."""
    stream = ffmpeg.input(path, ss=max(0.0, seconds)).output(
        "pipe:", vframes=1, format="image2", vcodec="mjpeg", vf=f"scale={THUMBNAIL_WIDTH}:-2"
    )
    image, _ = stream.run(capture_stdout=True, capture_stderr=True)
    return image


def create_app(searcher: Searcher) -> FastAPI:
    """The FastAPI app answering with `searcher`; queries run one at a time (one warm model)."""
    app = FastAPI(title="glscl search", description="Text-to-video search with GLSCL over LanceDB.")
    lock = threading.Lock()

    @lru_cache(maxsize=1024)
    def thumbnail(video_id: str, tenths: int) -> bytes:
        path = searcher.source_path(video_id)
        if path is None:
            raise HTTPException(404, f"unknown video {video_id!r}")
        if not path or not Path(path).is_file():
            raise HTTPException(404, f"video {video_id!r} has no readable source file")
        try:
            return _thumbnail(path, tenths / 10)
        except ffmpeg.Error as error:
            raise HTTPException(404, f"cannot cut a frame from {path}: {error.stderr.decode()[-200:]}") from None

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> str:
        return PAGE.read_text()

    @app.get("/health")
    def health() -> dict[str, str | int]:
        """Liveness plus what is served."""
        return {"status": "ok", **searcher.describe()}

    @app.post("/search", response_model=SearchResult, responses={400: {"description": "a bad query"}})
    def search(request: SearchRequest) -> SearchResult:
        """Top-k videos for a text query: ranked hits, the mode used, candidates re-ranked, timings (ms)."""
        filters = [Filter(f.column, f.op, f.value) for f in request.filters]
        try:
            with lock:
                result = searcher.search(request.text, request.k, filters, request.exact, request.hybrid)
        except SearchError as error:
            raise HTTPException(400, str(error)) from None
        return result

    @app.get("/thumbnail/{video_id}", response_class=Response, responses={200: {"content": {"image/jpeg": {}}}})
    def thumbnail_route(video_id: str, t: float = 0.0) -> Response:
        """A JPEG frame of the video at `t` seconds."""
        return Response(thumbnail(video_id, round(t * 10)), media_type="image/jpeg")

    return app


def serve(config: SearchConfig, host: str = "127.0.0.1", port: int = 8080) -> None:
    """Load the searcher once and serve HTTP until interrupted."""
    uvicorn.run(create_app(Searcher(config)), host=host, port=port, log_level="info")
