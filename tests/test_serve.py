"""The search service as users and attackers meet it: real `glscl serve` processes on loopback over a real index
(ingest, train and index flows), checked for credentials, CORS, validation of hostile input (a property test),
bounded thumbnails, queries and exact mode, video range requests, and a page that plays the matched span."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from conftest import ingest_synthetic
from fastapi import HTTPException
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from glscl.config import TrainConfig
from pipelines.cli.failures import EXIT_BAD_INPUT
from pipelines.configs import DEMO_MAX_WORDS, IndexConfig, ServeConfig, TrainFlowConfig, is_loopback
from pipelines.index import index_flow
from pipelines.service.app import MAX_QUERY_CHARS, Busy, QueryPool, Thumbnails
from pipelines.train import train_flow
from workers.index.config import AnnConfig
from workers.search.config import SearchConfig
from workers.search.filters import OPERATORS
from workers.search.searcher import Searcher
from workers.train.worker import BEST_DIR

pytestmark = pytest.mark.usefixtures("ray_local", "prefect_server")

TOKEN = "s3cret-token-for-tests"
FLAT = AnnConfig(vector_dim=32, min_rows=1_000)  # tiny gallery: no vector index, every vector scanned
HIT_COLUMNS = ("video_id", "dataset", "split", "source_path", "duration_s")


@pytest.fixture(scope="module")
def gallery(tmp_path_factory) -> tuple[str, str]:
    """A checkpoint and the database holding its video index of 16 synthetic videos."""
    root = tmp_path_factory.mktemp("serve")
    store = ingest_synthetic(root, n_train=12, n_val=4, seed=11)
    train = TrainConfig(epochs=1, batch_size=6, seed=1)
    output = str(root / "run")
    train_flow(
        TrainFlowConfig(store=store, max_words=DEMO_MAX_WORDS, head_preset="tiny", train=train, output_dir=output)
    )
    checkpoint = str(root / "run" / BEST_DIR)
    assert index_flow(IndexConfig(checkpoint, store, ann=FLAT)).added == 16
    return checkpoint, store.uri


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=30).status_code == 200
    except httpx.ConnectError:
        return False


@contextlib.contextmanager
def glscl_serve(gallery: tuple[str, str], log: Path, *options: str, env: dict | None = None) -> Iterator[str]:
    """A `glscl serve` process on 127.0.0.1 and a free port (port 0: the log names the one bound); yields its URL
    once /health answers and stops it with SIGINT."""
    checkpoint, db = gallery
    command = [sys.executable, "-m", "pipelines.cli", "serve", "--checkpoint", checkpoint, "--db", db, "--port", "0"]
    with log.open("w") as stderr:
        process = subprocess.Popen([*command, *options], stderr=stderr, env={**os.environ, **(env or {})})
        try:
            url, deadline = None, time.monotonic() + 120
            while url is None and process.poll() is None and time.monotonic() < deadline:
                found = re.search(r"Uvicorn running on (http://127\.0\.0\.1:\d+)", log.read_text())
                url = found.group(1) if found else time.sleep(0.2)
            assert url is not None, log.read_text()[-3000:]
            while not _healthy(url) and process.poll() is None and time.monotonic() < deadline:
                time.sleep(0.2)  # with --processes the port is bound before the processes load their searchers
            assert _healthy(url), log.read_text()[-3000:]
            yield url
        finally:
            process.send_signal(2)
            process.wait(timeout=30)
    assert process.returncode == 0, log.read_text()[-3000:]
    assert "Traceback" not in log.read_text(), log.read_text()[-3000:]


@pytest.fixture(scope="module")
def open_server(gallery, tmp_path_factory) -> Iterator[str]:
    """A server without a token (loopback), two query workers, no CORS."""
    log = tmp_path_factory.mktemp("open") / "serve.log"
    with glscl_serve(gallery, log, "--workers", "2") as url:
        yield url


@pytest.fixture(scope="module")
def guarded_server(gallery, tmp_path_factory) -> Iterator[str]:
    """A server with a token from the environment, one CORS origin and exact mode capped below the gallery."""
    log = tmp_path_factory.mktemp("guarded") / "serve.log"
    options = ("--cors-origin", "http://allowed.example", "--exact-max-videos", "10")
    with glscl_serve(gallery, log, *options, env={"GLSCL_SERVE_TOKEN": TOKEN}) as url:
        yield url


def bearer(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_a_token_guards_every_route_but_health(guarded_server):
    url, query = guarded_server, {"text": "a red circle", "k": 2}
    assert httpx.get(f"{url}/health").status_code == 200
    for method, path in (("POST", "/search"), ("GET", "/"), ("GET", "/openapi.json"), ("GET", "/docs")):
        for headers in ({}, bearer("wrong"), bearer(TOKEN[:-1]), {"Authorization": TOKEN}):
            answer = httpx.request(method, f"{url}{path}", json=query, headers=headers)
            assert answer.status_code == 401 and answer.headers["www-authenticate"] == "Bearer", (path, headers)
    video = httpx.post(f"{url}/search", json=query, headers=bearer()).json()["hits"][0]["video_id"]
    for path in (f"/thumbnail/{video}", f"/video/{video}", f"/?token={TOKEN[:-1]}"):
        assert httpx.get(f"{url}{path}").status_code == 401
    page = httpx.get(f"{url}/?token={TOKEN}")
    assert page.status_code == 200 and "<title>glscl search</title>" in page.text
    cookie = page.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie
    with httpx.Client(base_url=url, cookies=page.cookies) as browser:  # the page's own requests carry the cookie
        assert browser.post("/search", json=query).status_code == 200
        assert browser.get(f"/thumbnail/{video}").headers["content-type"] == "image/jpeg"


def test_cors_answers_only_the_named_origin(guarded_server, open_server):
    preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization"}
    allowed = httpx.options(f"{guarded_server}/search", headers={"Origin": "http://allowed.example", **preflight})
    assert allowed.status_code == 200 and allowed.headers["access-control-allow-origin"] == "http://allowed.example"
    other = httpx.options(f"{guarded_server}/search", headers={"Origin": "http://evil.example", **preflight})
    assert "access-control-allow-origin" not in other.headers
    plain = httpx.post(f"{open_server}/search", json={"text": "a circle"}, headers={"Origin": "http://evil.example"})
    assert plain.status_code == 200 and "access-control-allow-origin" not in plain.headers


def test_an_open_host_without_a_token_is_refused_before_loading_anything(gallery):
    checkpoint, db = gallery
    command = [sys.executable, "-m", "pipelines.cli", "serve", "--checkpoint", checkpoint, "--db", db]
    env = {key: value for key, value in os.environ.items() if key != "GLSCL_SERVE_TOKEN"}
    done = subprocess.run([*command, "--host", "0.0.0.0"], capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == EXIT_BAD_INPUT
    assert "refusing to serve on 0.0.0.0 without a token" in done.stderr and "--insecure" in done.stderr
    assert [is_loopback(host) for host in ("127.0.0.1", "127.8.0.1", "::1", "localhost", "0.0.0.0", "10.0.0.1")] == [
        True,
        True,
        True,
        True,
        False,
        False,
    ]
    assert ServeConfig(host="0.0.0.0", token="t").token == "t" and ServeConfig(host="::", insecure=True).insecure


def test_exact_mode_is_refused_beyond_the_gallery_budget(guarded_server):
    answer = httpx.post(f"{guarded_server}/search", json={"text": "a circle", "exact": True}, headers=bearer())
    assert answer.status_code == 400 and "glscl query --exact" in answer.json()["detail"]
    assert "16 videos" in answer.json()["detail"]
    two_stage = httpx.post(f"{guarded_server}/search", json={"text": "a circle"}, headers=bearer())
    assert two_stage.status_code == 200 and two_stage.json()["mode"] == "two-stage"


def test_hostile_parameters_get_4xx_answers(open_server):
    url = open_server
    video = httpx.post(f"{url}/search", json={"text": "a red circle", "k": 1}).json()["hits"][0]
    for t in ("nan", "NaN", "inf", "-inf", "-1", "1e400", "abc", str(video["duration_s"] + 1)):
        answer = httpx.get(f"{url}/thumbnail/{video['video_id']}", params={"t": t})
        assert answer.status_code == 422, (t, answer.text)
    edge = httpx.get(f"{url}/thumbnail/{video['video_id']}", params={"t": video["duration_s"]})
    assert edge.status_code in (200, 404) and edge.status_code != 500
    assert httpx.post(f"{url}/search", json={"text": "x" * MAX_QUERY_CHARS}).status_code == 200
    assert httpx.post(f"{url}/search", json={"text": "x" * (MAX_QUERY_CHARS + 1)}).status_code == 422
    for segment in (
        "..%2F..%2Fetc%2Fpasswd",
        "%2Fetc%2Fpasswd",
        "%2e%2e",
        "%00",
        video["source_path"].replace("/", "%2F"),
    ):
        for route in ("thumbnail", "video"):
            assert httpx.get(f"{url}/{route}/{segment}").status_code == 404, (route, segment)


def test_video_route_serves_byte_ranges_of_indexed_files_only(open_server):
    hit = httpx.post(f"{open_server}/search", json={"text": "a red circle", "k": 1}).json()["hits"][0]
    data = Path(hit["source_path"]).read_bytes()
    whole = httpx.get(f"{open_server}/video/{hit['video_id']}")
    assert whole.status_code == 200 and whole.content == data and whole.headers["accept-ranges"] == "bytes"
    assert whole.headers["content-type"] == "video/mp4"
    part = httpx.get(f"{open_server}/video/{hit['video_id']}", headers={"Range": "bytes=100-299"})
    assert part.status_code == 206 and part.content == data[100:300]
    assert part.headers["content-range"] == f"bytes 100-299/{len(data)}"
    beyond = httpx.get(f"{open_server}/video/{hit['video_id']}", headers={"Range": f"bytes={len(data) + 10}-"})
    assert beyond.status_code == 416


# The property test: hostile and odd requests, from malformed bytes to SQL in filter values.
SQL = ["' OR 1=1 --", "x'; DROP TABLE videos; --", "\\' OR ''='", "val_1' OR split != '", "%", "_", "*"]
ODD = ["\u202e\u0645\U0001f600", "\ufeff", "e\u0301", "\u200b", "\x00", "\x1b[31m", "\ud800", "🎥" * 300]
ODD_TEXT = st.one_of(st.sampled_from(SQL + ODD), st.text(max_size=40))


def number_values() -> st.SearchStrategy:
    return st.one_of(st.integers(-(10**20), 10**20), st.floats(allow_nan=False, allow_infinity=False))


def valid_filters(known: dict[str, list]) -> st.SearchStrategy:
    """Well-formed filters on the hit columns with values the gallery holds: the ones whose rows are checked."""
    return st.sampled_from(HIT_COLUMNS).flatmap(
        lambda name: st.builds(
            lambda op, value: {"column": name, "op": op, "value": value},
            st.sampled_from(OPERATORS),
            st.one_of(st.sampled_from(known[name]), st.lists(st.sampled_from(known[name]), min_size=1, max_size=3)),
        )
    )


def hostile_filters(known: dict[str, list]) -> st.SearchStrategy:
    """Filters with odd columns, operators or values: SQL fragments, wrong types, odd unicode, bad times."""
    column = st.one_of(st.sampled_from((*HIT_COLUMNS, "ingested_at")), ODD_TEXT)
    op = st.one_of(st.sampled_from(OPERATORS), st.sampled_from(["==", "LIKE", "<>", "in ", "OR", ""]), ODD_TEXT)
    scalar = st.one_of(st.sampled_from([v for values in known.values() for v in values]), ODD_TEXT, number_values())
    odd = st.one_of(st.none(), st.booleans(), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))
    times = st.sampled_from(["2026-01-01", "0001-01-01T00:00+01:00", "9999-12-31T23:59-01:00", "2026-13-01"])
    value = st.one_of(scalar, st.lists(scalar, max_size=4), odd, times)
    return st.one_of(
        st.fixed_dictionaries({"column": column, "op": op, "value": value}),
        st.dictionaries(st.text(max_size=8), value, max_size=4),
    )


def body_strategy(known: dict[str, list]) -> st.SearchStrategy:
    """JSON search bodies: well-formed ones with real filters, and hostile ones (odd text, wrong types, extra
    fields, oversized text, hostile filters)."""
    good_text = st.sampled_from(["a red circle moves left", "a blue square", "shapes", "' OR 1=1 --", "🎥 e\u0301"])
    valid = st.fixed_dictionaries(
        {"text": good_text, "k": st.integers(1, 16), "filters": st.lists(valid_filters(known), min_size=1, max_size=2)},
        optional={"exact": st.booleans(), "hybrid": st.booleans()},
    )
    text = st.one_of(ODD_TEXT, st.sampled_from(["x" * (MAX_QUERY_CHARS + 1), "  "]), st.integers(), st.none())
    k = st.one_of(st.integers(-3, 2000), st.floats(), st.sampled_from(["5", True, None]))
    filters = st.one_of(
        st.lists(st.one_of(valid_filters(known), hostile_filters(known)), max_size=3),
        st.sampled_from(["split=val_1", {}, [1]]),
    )
    hostile = st.fixed_dictionaries(
        {"text": text},
        optional={
            "k": k,
            "filters": filters,
            "exact": st.one_of(st.booleans(), st.just("yes")),
            "hybrid": st.booleans(),
        },
    )
    extra = st.dictionaries(st.text(max_size=6), st.integers(), max_size=2)
    return st.one_of(valid, valid, hostile, st.builds(lambda b, e: {**e, **b}, valid, extra), st.lists(st.integers()))


def quoted(text: str) -> str:
    """`text` percent-encoded as one path segment or query value, lone surrogates too."""
    return quote(text.encode("utf-8", "surrogatepass"), safe="")


def holds(row: dict, item: dict) -> bool:
    """Whether a returned hit satisfies one (valid) filter, computed here independently of the server."""
    column, op, value = item["column"], item["op"], item["value"]
    actual = row[column]
    typed = (lambda v: float(v)) if column == "duration_s" else (lambda v: v)
    if op == "in":
        return actual in [typed(v) for v in (value if isinstance(value, list) else [value])]
    wanted = typed(value)
    return {
        "=": actual == wanted,
        "!=": actual != wanted,
        "<": actual < wanted,
        "<=": actual <= wanted,
        ">": actual > wanted,
        ">=": actual >= wanted,
    }[op]


@pytest.fixture(scope="module")
def known_values(open_server) -> dict[str, list]:
    """Real values of each hit column, from a search over the whole gallery."""
    hits = httpx.post(f"{open_server}/search", json={"text": "a shape", "k": 16}, timeout=60).json()["hits"]
    return {column: sorted({hit[column] for hit in hits}) for column in HIT_COLUMNS}


def test_hostile_requests_get_only_2xx_or_4xx_and_rows_that_pass_their_filters(open_server, known_values):
    url, seen = open_server, {"ok": 0, "filtered_hits": 0, "client_errors": 0}
    client = httpx.Client(base_url=url, timeout=60)

    @settings(max_examples=2000, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(body=body_strategy(known_values))
    def search_bodies(body: object) -> None:
        answer = client.post("/search", content=json.dumps(body), headers={"Content-Type": "application/json"})
        assert answer.status_code < 500, (body, answer.text)
        if answer.status_code >= 400:
            seen["client_errors"] += 1
            return
        seen["ok"] += 1
        for item in body.get("filters", []):
            for hit in answer.json()["hits"]:
                if item["column"] in HIT_COLUMNS:
                    seen["filtered_hits"] += 1
                    assert holds(hit, item), (item, hit)

    @settings(max_examples=600, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(
        route=st.sampled_from(["thumbnail", "video"]),
        segment=st.one_of(st.sampled_from(known_values["video_id"]), ODD_TEXT).map(quoted),
        traversal=st.sampled_from(["", "..%2F..%2Fetc%2Fpasswd", "%2e%2e%2f", "..", "a/../../b", "%2Fetc%2Fpasswd"]),
        t=st.one_of(number_values().map(str), st.sampled_from(["nan", "inf", "-0", "1e-320", "0x10", ""]), ODD_TEXT),
    )
    def paths(route: str, segment: str, traversal: str, t: str) -> None:
        answer = client.get(f"/{route}/{traversal or segment}?t={quoted(t)}")
        assert answer.status_code < 500 or answer.status_code == 503, (route, segment, t, answer.text)

    raw = [b"", b"{", b"null", b"[]", b'{"text": "\\ud800"}', b'{"text": NaN}', b"\xff\xfe", b"{" * 100_000]
    raw += [json.dumps({"text": "a", "k": 5, "filters": [{"column": "split", "op": "=", "value": "x"}] * 100}).encode()]
    raw += [b'{"text": "' + b"a" * 5_000_000 + b'"}']
    started = time.monotonic()
    for content in raw:
        for kind in ("application/json", "text/plain"):
            answer = client.post("/search", content=content, headers={"Content-Type": kind})
            assert 400 <= answer.status_code < 500, (content[:80], answer.text[:200])
    search_bodies()
    paths()
    assert seen["ok"] > 100 and seen["client_errors"] > 100 and seen["filtered_hits"] > 100, seen
    assert client.get("/health").json()["status"] == "ok"
    assert len(client.post("/search", json={"text": "a red circle", "k": 3}).json()["hits"]) == 3
    print(f"hostile requests: {seen}, {time.monotonic() - started:.1f} s")


def test_thumbnail_processes_are_capped_and_timed_out(tmp_path):
    """A named pipe nobody writes keeps a real ffmpeg waiting: the second request finds no slot (Busy), the first
    is killed at its timeout (504)."""
    stuck = tmp_path / "stuck.mp4"
    os.mkfifo(stuck)

    async def scenario() -> tuple[BaseException, BaseException, float]:
        thumbnails = Thumbnails(processes=1, timeout_s=1.5, wait_s=0.2)
        first = asyncio.create_task(thumbnails.frame("a", str(stuck), 0))
        await asyncio.sleep(0.3)
        started = time.monotonic()
        second = await asyncio.gather(thumbnails.frame("b", str(stuck), 0), return_exceptions=True)
        waited = time.monotonic() - started
        return (await asyncio.gather(first, return_exceptions=True))[0], second[0], waited

    timed_out, refused, waited = asyncio.run(scenario())
    assert isinstance(refused, Busy) and 0.15 < waited < 1.0
    assert isinstance(timed_out, HTTPException) and timed_out.status_code == 504


def test_query_pool_runs_up_to_its_workers_and_queue_then_refuses():
    release = threading.Event()

    async def scenario() -> list[object]:
        pool = QueryPool(workers=1, queue=1)
        running = [asyncio.create_task(pool.run(lambda: release.wait(10) and "done")) for _ in range(2)]
        await asyncio.sleep(0.1)
        refused = await asyncio.gather(pool.run(lambda: "never"), return_exceptions=True)
        release.set()
        results = await asyncio.gather(*running)
        after = await pool.run(lambda: "again")
        return [*refused, *results, after, pool.pending]

    refused, *results = asyncio.run(scenario())
    assert isinstance(refused, Busy) and results == ["done", "done", "again", 0]


def test_one_searcher_answers_concurrent_threads_as_it_answers_one(gallery):
    checkpoint, db = gallery
    from schemas.store import StoreConfig

    searcher = Searcher(SearchConfig(checkpoint, StoreConfig(db), refresh_s=0.0))
    texts = ["a red circle moves left", "a blue square", "a green triangle appears", "shapes"] * 4
    alone = [[(h.video_id, h.score) for h in searcher.search(text, k=5).hits] for text in texts]
    together: list = [None] * len(texts)

    def ask(index: int) -> None:
        together[index] = [(h.video_id, h.score) for h in searcher.search(texts[index], k=5).hits]

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(texts))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert [[v for v, _ in hits] for hits in together] == [[v for v, _ in hits] for hits in alone]
    for mine, theirs in zip(together, alone, strict=True):
        assert all(math.isclose(a[1], b[1], abs_tol=1e-5) for a, b in zip(mine, theirs, strict=True))


def test_busy_search_answers_503_with_retry_after(gallery, tmp_path):
    """One worker and no queue: of many concurrent queries some are turned away with Retry-After, none fail."""
    with glscl_serve(gallery, tmp_path / "serve.log", "--workers", "1", "--queue", "0") as url:
        body = {"text": "a red circle moves left, then a blue square appears", "k": 16, "exact": True}

        def ask(_: int) -> httpx.Response:
            return httpx.post(f"{url}/search", json=body, timeout=60)

        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(12) as pool:
            answers = list(pool.map(ask, range(36)))
    codes = [answer.status_code for answer in answers]
    assert set(codes) == {200, 503}, codes
    assert all(answer.headers["retry-after"] == "1" for answer in answers if answer.status_code == 503)


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is installed by `make setup`")
def _page_dom(url: str) -> str:
    """The page's DOM after headless Chromium ran it for 20 s of virtual time (autoplay allowed)."""
    return subprocess.run(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--autoplay-policy=no-user-gesture-required",
         "--virtual-time-budget=20000", "--dump-dom", url],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout  # fmt: skip


def test_page_with_a_token_plays_the_best_hit_from_its_span(guarded_server):
    url = f"{guarded_server}/?token={TOKEN}&q=a+red+circle+moves&k=3"
    # Virtual time runs ahead of a loaded machine's real fetches and decoding, so a load may end before playback
    # starts or before its first frame advances: look again (thumbnails are cached by then), a bounded number of
    # times.
    for _ in range(4):
        dom = _page_dom(url)
        video = re.search(r"<video[^>]*>", dom)
        seen = dict(re.findall(r'data-([\w-]+)="([^"]*)"', video.group(0))) if video is not None else {}
        if "started-at" in seen and float(seen.get("current-time", "-1")) > float(seen["started-at"]):
            break
    assert len(re.findall(r'<li data-video-id="', dom)) == 3, dom[-3000:]
    assert dom.count('data-loaded="1"') == 3, dom[-3000:]
    assert video is not None and "data-error" not in video.group(0), dom[-3000:]
    attributes = dict(re.findall(r'data-([\w-]+)="([^"]*)"', video.group(0)))
    start, end = float(attributes["span-start"]), float(attributes["span-end"])
    started, now = float(attributes["started-at"]), float(attributes["current-time"])
    assert start - 0.01 <= started <= end + 0.01, attributes  # the span is float32 seconds
    assert now > started, attributes


def test_the_load_generator_counts_every_answer(open_server):
    """`glscl bench serve`'s asyncio client over keep-alive connections: every query sent is answered and timed."""
    from benchmarks.serve_load import run_level

    level = run_level(open_server, 1, 4, 24, 60, 5)
    assert (level.sent, level.ok, level.busy, level.errors) == (24, 24, 0, 0)
    assert len(level.latencies_ms) == 24 and level.throughput > 0 and level.percentile(95) >= level.percentile(50) > 0


def test_the_load_generator_adds_up_the_rounds_of_a_level():
    """A level run in slices (the layouts taking turns) reports the sum of its slices and their pooled latencies."""
    from benchmarks.serve_load import Level, combined

    parts = [Level(1, 8, 10, 9, 1, 0, 2.0, [5.0] * 9, 1.5, 2), Level(1, 8, 6, 4, 0, 2, 1.0, [7.0] * 4, 0.5, 2)]
    level = combined(parts)
    assert (level.sent, level.ok, level.busy, level.errors, level.seconds) == (16, 13, 1, 2, 3.0)
    assert (level.server_cpu_s, level.processes, level.clients) == (2.0, 2, 8)
    assert level.throughput == 13 / 3.0 and sorted(level.latencies_ms) == [5.0] * 9 + [7.0] * 4


@pytest.mark.parametrize("processes", ["1", "2"])
def test_a_server_whose_processes_cannot_start_says_why(gallery, tmp_path, processes):
    """An index whose projection is gone (what the command line's own check before start cannot see): one process
    or several, the command ends with exit code 2 and the searcher's own reason on its last line, instead of
    serving nothing or waiting."""
    checkpoint, db = gallery
    broken = tmp_path / "db"
    shutil.copytree(db, broken)
    (projection,) = broken.glob("video_index_*_projection.lance")
    shutil.rmtree(projection)
    command = [sys.executable, "-m", "pipelines.cli", "serve", "--checkpoint", checkpoint, "--db", str(broken)]
    command += ["--port", "0", "--processes", processes]
    done = subprocess.run(command, capture_output=True, text=True, timeout=180)
    last = done.stderr.strip().splitlines()[-1]
    assert done.returncode == 2 and "has no projection: run `glscl index` again" in last, done.stderr[-3000:]


def test_several_server_processes_share_the_port(gallery, tmp_path):
    """--processes 2: two processes, each with its own searcher, answer on one port alike; two keep-alive clients
    are served by different processes, each by the same one throughout; a process killed outright (as the kernel's
    out-of-memory killer does) is replaced, and later connections go to the survivor and the new process in turn;
    SIGINT stops both."""
    log = tmp_path / "serve.log"
    body = {"text": "a red circle moves left", "k": 5}
    with glscl_serve(gallery, log, "--processes", "2", "--workers", "1") as url:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda _: httpx.post(f"{url}/search", json=body, timeout=60), range(24)))
        pids = {httpx.get(f"{url}/health").json()["pid"] for _ in range(24)}  # a new connection each
        with httpx.Client(base_url=url) as first, httpx.Client(base_url=url) as second:
            kept = [[client.get("/health").json()["pid"] for _ in range(4)] for client in (first, second, first)]
        started = re.search(r"Started 2 server processes \[(\d+), (\d+)\]", log.read_text())
        assert started, log.read_text()[-3000:]
        killed, survivor = map(int, started.groups())
        os.kill(killed, signal.SIGKILL)
        replaced, deadline = None, time.monotonic() + 60
        pattern = rf"server process {killed} exited with code -9; process (\d+) takes its place"
        while replaced is None and time.monotonic() < deadline:
            replaced = re.search(pattern, log.read_text()) or time.sleep(0.2)
        after = {httpx.get(f"{url}/health", timeout=60).json()["pid"] for _ in range(6)}
    assert {answer.status_code for answer in answers} == {200}
    assert len({tuple(hit["video_id"] for hit in answer.json()["hits"]) for answer in answers}) == 1
    assert pids == {killed, survivor}, "connections are dealt to both"
    assert len(set(kept[0] + kept[2])) == len(set(kept[1])) == 1 and kept[0][0] != kept[1][0], kept
    assert replaced and after == {survivor, int(replaced.group(1))}, log.read_text()[-3000:]
