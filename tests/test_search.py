"""Index and search on tables written by the real ingest and train flows: two-stage equals exact when the
candidates cover the gallery, filters apply before ranking, incremental indexing, hybrid text matches,
the ANN index path, and clear errors for bad queries."""

import contextlib
import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from datetime import timedelta

import numpy as np
import pytest
import torch
import uvicorn
from conftest import ingest_synthetic, reported_port

from glscl.backbone_config import BackboneConfig
from glscl.checkpoint import load_checkpoint, save_checkpoint
from glscl.config import TrainConfig
from pipelines.cli import main
from pipelines.configs import DEMO_MAX_WORDS, IndexConfig, TrainFlowConfig
from pipelines.index import index_flow
from pipelines.service.app import create_app
from pipelines.train import train_flow
from schemas.catalog import Catalog, sql_in
from schemas.gallery_shards import gallery_shard
from schemas.tables import FRAMES, SCHEMA_VERSION_KEY, TEXTS, segment_rows_spec
from workers.features import FeatureQuery, read_videos
from workers.index.ann_vectors import query_vectors
from workers.index.config import AnnConfig
from workers.index.projection import load_projection
from workers.index.segment_rows import current_segment_rows, ensure_segment_rows, rebuild_segment_rows
from workers.search.candidates.in_memory import InMemory
from workers.search.candidates.segment_columns import SegmentColumns
from workers.search.config import SearchConfig
from workers.search.filters import Filter, parse_filter
from workers.search.results import STAGES
from workers.search.searcher import Searcher, SearchError
from workers.search.sharded import ShardedSearchConfig, ShardedSearcher
from workers.search.spans import frame_match_weights, span
from workers.train.worker import BEST_DIR
from workers.upkeep import maintain_table

pytestmark = pytest.mark.usefixtures("ray_local", "prefect_server")

SMALL_ANN = AnnConfig(vector_dim=64, index_type="IVF_HNSW_SQ", min_rows=16, num_partitions=2)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("search")
    store = ingest_synthetic(root, n_train=16, n_val=8, seed=5)
    config = TrainFlowConfig(
        store=store,
        max_words=DEMO_MAX_WORDS,
        head_preset="tiny",
        train=TrainConfig(epochs=2, batch_size=8, seed=1),
        output_dir=str(root / "run"),
    )
    train_flow(config)
    return store, str(root / "run" / BEST_DIR), root


@pytest.fixture(scope="module")
def indexed(trained):
    store, checkpoint, _ = trained
    first = index_flow(IndexConfig(checkpoint, store, splits=("train",), shard_videos=5, ann=SMALL_ANN))
    assert first.added == 16 and first.health_after.rows == 16
    second = index_flow(IndexConfig(checkpoint, store, shard_videos=5, ann=SMALL_ANN))
    assert second.added == 8 and second.health_after.rows == 24
    assert all(count == 0 for count in second.health_after.unindexed.values()), second.health_after
    return store, checkpoint, second


def searcher(store, checkpoint, **settings) -> Searcher:
    return Searcher(SearchConfig(checkpoint, store, **settings))


def test_incremental_index_covers_new_videos_with_every_index(indexed):
    _, _, summary = indexed
    assert summary.projection["dim"] == 64 and 0 < summary.projection["captured_energy"] <= 1.0
    segment_indexes = {f"vector_{segment}_idx" for segment in range(SMALL_ANN.segments)}
    assert segment_indexes | {"text_idx"} <= set(summary.health_after.unindexed)
    assert any("optimised" in action for action in summary.actions)
    assert any(action.startswith("retrained IVF_HNSW_SQ vector indexes over 24 rows") for action in summary.actions)


def test_two_stage_equals_exact_when_candidates_cover_the_gallery(indexed):
    store, checkpoint, _ = indexed
    engine = searcher(
        store, checkpoint, candidates=24, nprobes=2, ef=24, index_cache_gb=0.25, prewarm=True, in_memory_below=0
    )
    stage = engine.stage_for(None)
    assert isinstance(stage, SegmentColumns) and stage.hnsw, "SMALL_ANN builds HNSW graphs, searched with an ef"
    assert engine.describe()["candidate_stage"] == "vector index" and stage.breadth(24, engine.probes) == 24
    for text in ("a red circle moves left", "a blue square appears then a green triangle"):
        two_stage = engine.search(text, k=10)
        exact = engine.search(text, k=10, exact=True)
        assert [h.video_id for h in two_stage.hits] == [h.video_id for h in exact.hits]
        assert [h.score for h in two_stage.hits] == pytest.approx([h.score for h in exact.hits], abs=1e-5)
        assert two_stage.mode == "two-stage" and exact.mode == "exact" and two_stage.candidates == 24
        assert_stage_timings(two_stage.timings_ms)
        assert_stage_timings(exact.timings_ms, ran=("text", "fetch", "rerank", "metadata"))
        assert exact.timings_ms["ann"] == 0.0


def test_a_small_gallery_ranks_candidates_in_memory_by_their_best_segment(indexed):
    store, checkpoint, _ = indexed
    engine = searcher(store, checkpoint, candidates=5)
    stage = engine.stage_for(None)
    assert isinstance(stage, InMemory) and stage.vectors.shape == (24, SMALL_ANN.segments, 64)
    assert engine.describe()["candidate_stage"] == "in-memory scan"
    for text in ("a red circle moves left", "a blue square appears then a green triangle", "shapes"):
        encoding = engine.encode(text)
        assert engine.candidates(encoding, 5, None).row_ids.tolist() == best_segment_order(engine, encoding)[:5]
        assert engine.search(text, k=3).hits[0].video_id == engine.search(text, k=3, exact=True).hits[0].video_id


def best_segment_order(engine: Searcher, encoding) -> list[int]:
    """Row ids of every video by its best segment's inner product with the query, from LanceDB's exact scan of each
    segment column (bypassing any index)."""
    query = (query_vectors(encoding, engine.model_config.local_weight, engine.ann) @ engine.basis)[0]
    best: dict[int, float] = {}
    for column in engine.segment_columns:
        rows = engine.table.search(query.numpy(), vector_column_name=column).distance_type("dot").limit(1000)
        hits = rows.bypass_vector_index().with_row_id(True).select(["_rowid", "_distance"]).to_arrow()
        for row_id, distance in zip(hits["_rowid"].to_pylist(), hits["_distance"].to_pylist(), strict=True):
            best[row_id] = min(distance, best.get(row_id, distance))
    return sorted(best, key=best.get)


def copied_store(shared, tmp_path):
    """The indexed database copied, for a test that changes it."""
    return dataclasses.replace(shared, uri=str(shutil.copytree(shared.uri, tmp_path / "db")))


SEGMENT_ROWS_ANN = dataclasses.replace(SMALL_ANN, index_type="IVF_FLAT", segment_rows=True)


def test_segment_rows_rank_videos_by_their_best_segment_with_one_index(indexed, tmp_path):
    shared, checkpoint, summary = indexed
    store = copied_store(shared, tmp_path)
    update = index_flow(IndexConfig(checkpoint, store, ann=SEGMENT_ROWS_ANN))
    assert update.added == 0 and update.actions == [
        f"built one IVF_FLAT vector index over {24 * SMALL_ANN.segments} segment rows ({summary.table}_segments_g1)"
    ]
    assert index_flow(IndexConfig(checkpoint, store, ann=SEGMENT_ROWS_ANN)).actions == [], "up to date: left alone"
    engine = searcher(store, checkpoint, candidates=5, in_memory_below=0)
    assert engine.describe()["candidate_stage"] == "segment rows"
    assert engine.stage_for(None).breadth(5, engine.probes) is None, "an IVF_FLAT index: no graph"
    for text in ("a red circle moves left", "a blue square appears then a green triangle", "shapes"):
        encoding = engine.encode(text)
        assert engine.candidates(encoding, 5, None).row_ids.tolist() == best_segment_order(engine, encoding)[:5]
    covering = searcher(store, checkpoint, candidates=24, in_memory_below=0)
    result, exact = covering.search("shapes", k=10), covering.search("shapes", k=10, exact=True)
    assert [h.video_id for h in result.hits] == [h.video_id for h in exact.hits] and result.candidates == 24
    val = engine.search("shapes", k=10, filters=[Filter("split", "=", "val_1")])
    assert len(val.hits) == 8 and {h.split for h in val.hits} == {"val_1"}, "filtered queries use the columns"

    catalog = Catalog(store)  # another index run writing generation 2 meanwhile: searchers keep to g1, a rebuild
    catalog.db.create_table(f"{summary.table}_segments_g2", schema=segment_rows_spec(summary.table, 2, 64).schema())
    assert current_segment_rows(catalog, summary.table).name.endswith("_g1")
    action = rebuild_segment_rows(catalog, catalog.db.open_table(summary.table), SEGMENT_ROWS_ANN, print)
    assert action.endswith("_segments_g3)") and current_segment_rows(catalog, summary.table).name.endswith("_g3")
    kept = [name[-3:] for name in catalog.table_names() if "_segments_g" in name]
    assert kept == ["_g1", "_g2", "_g3"], "g1 was served until g3 and g2 is someone's work in progress"


def test_segment_rows_follow_compaction_changed_videos_and_being_turned_off(indexed, tmp_path):
    shared, checkpoint, summary = indexed
    store = copied_store(shared, tmp_path)
    index_flow(IndexConfig(checkpoint, store, ann=SEGMENT_ROWS_ANN))
    engine = searcher(store, checkpoint, candidates=24, in_memory_below=0, refresh_s=0.0)
    table = Catalog(store).db.open_table(summary.table)
    gone = table.search().where("split = 'val_1'").select(["video_id"]).limit(3).to_arrow()["video_id"].to_pylist()
    table.delete(sql_in("video_id", gone))
    table.optimize()  # compaction renumbers the video rows the segment rows were built from
    result, exact = engine.search("shapes", k=21), engine.search("shapes", k=21, exact=True)
    assert result.candidates == 21 and not {h.video_id for h in result.hits} & set(gone)
    assert [h.video_id for h in result.hits] == [h.video_id for h in exact.hits]

    def generation_built(update) -> int:
        built = [re.search(r"_segments_g(\d+)\)", action) for action in update.actions]
        return next(int(match.group(1)) for match in built if match)

    said: list[str] = []
    [action] = ensure_segment_rows(Catalog(store), table, SEGMENT_ROWS_ANN, said.append).actions
    assert action.endswith("_segments_g2): 3 videos gone from the index"), "rebuilt without the deleted videos"
    assert said == [
        f"segment rows: 21/21 videos written to {summary.table}_segments_g2",
        "segment rows: building one IVF_FLAT index over 84 rows",
    ]
    assert engine.search("shapes", k=3).hits and engine.stage_for(None).table.name.endswith("_g2")
    update = index_flow(IndexConfig(checkpoint, store, ann=SEGMENT_ROWS_ANN))
    assert update.added == 3 and f"appended 3 videos to {summary.table}_segments_g2" in update.actions[-1]
    assert engine.search("shapes", k=24).candidates == 24 and engine.stage_for(None).table.name.endswith("_g2")
    companion = current_segment_rows(Catalog(store), summary.table)
    assert companion.index_stats("segment_vector_idx").num_indices == 2, "the new videos' rows in a delta index"
    assert companion.index_stats("segment_vector_idx").num_unindexed_rows == 0
    drifted = dataclasses.replace(SEGMENT_ROWS_ANN, retrain_share=0.05)
    update = index_flow(IndexConfig(checkpoint, store, ann=drifted))
    assert update.added == 0 and generation_built(update) == 3, "3 of 24 videos outside the trained base > 5%"
    assert "12.5% of rows outside the trained base" in update.actions[-1]
    assert engine.search("shapes", k=24).candidates == 24 and engine.stage_for(None).table.name.endswith("_g3")
    kept = [name for name in Catalog(store).table_names() if "_segments_g" in name]
    assert [name[-3:] for name in kept] == ["_g2", "_g3"], "the generation before the newest stays for readers"
    update = index_flow(IndexConfig(checkpoint, store, ann=dataclasses.replace(SEGMENT_ROWS_ANN, segment_rows=False)))
    assert "dropped 2 generations of segment rows" in update.actions
    assert engine.search("shapes", k=3).hits and engine.describe()["candidate_stage"] == "vector index"


def test_the_query_text_is_encoded_with_its_own_thread_count(indexed):
    store, checkpoint, _ = indexed
    engine = searcher(store, checkpoint, torch_threads=1, text_threads=2)
    seen: list[int] = []
    engine.query_encoder.backbone.model.ln_final.register_forward_pre_hook(
        lambda *_: seen.append(torch.get_num_threads())
    )
    engine.search("a red circle moves left", k=3)
    assert seen == [2] and torch.get_num_threads() == 1


def assert_stage_timings(timings: dict[str, float], ran: tuple[str, ...] = STAGES) -> None:
    """Every stage is reported, in order; the ones that ran took time, and they add up to at most the total."""
    assert list(timings) == [*STAGES, "total"]
    assert all(timings[stage] > 0 for stage in ran) and all(value >= 0 for value in timings.values())
    assert sum(timings[stage] for stage in STAGES) <= timings["total"]


def test_filters_apply_before_ranking(indexed):
    store, checkpoint, _ = indexed
    engine = searcher(store, checkpoint, candidates=4, nprobes=1)
    result = engine.search("a shape moves", k=8, filters=[Filter("split", "=", "val_1")])
    assert len(result.hits) == 8 and {h.split for h in result.hits} == {"val_1"}
    one = result.hits[3].video_id
    only = engine.search("a shape moves", k=5, filters=[Filter("video_id", "in", [one])])
    assert [h.video_id for h in only.hits] == [one]
    none = engine.search("a shape moves", k=5, filters=[parse_filter("duration_s > 1e9")])
    assert none.hits == []


def test_hits_carry_metadata_and_a_time_span_around_the_best_matching_frame(indexed):
    # The span comes from the query's CLIP sentence against the hit's stored CLIP frames (before the temporal
    # transformer mixes them): it holds the frame that matches best and lasts at least one sampling interval.
    store, checkpoint, _ = indexed
    engine = searcher(store, checkpoint)
    hits = engine.search("a red circle moves left", k=5).hits
    sentence = engine.encode("a red circle moves left").sentence[0].numpy()
    model = load_checkpoint(checkpoint)[2]["extra"]
    query = FeatureQuery("", model["backbone_model_id"], 0, sampling_hash=model["sampling_hash"])
    stored = read_videos(Catalog(store), query, model["sampling_hash"], [h.video_id for h in hits])
    weights = frame_match_weights(sentence, stored.feats, stored.mask)
    for hit, weight, mask, times in zip(hits, weights, stored.mask, stored.timestamps, strict=True):
        assert hit.source_path.endswith(".mp4") and hit.duration_s > 0 and hit.text
        start, end = hit.span_s
        best = times[np.argmax(np.where(mask, weight, -np.inf))]
        interval = float(np.diff(times[mask]).min())
        assert 0 <= start <= best <= end <= hit.duration_s and end - start >= interval - 1e-6, (hit.span_s, best)
        assert hit.span_s == pytest.approx(span(weight, times, mask, hit.duration_s))
    # `glscl index` gave `frames` the id lookup these reads take.
    assert "video_id" in {c for index in Catalog(store).open_existing(FRAMES).list_indices() for c in index.columns}


def test_a_span_keeps_the_frames_near_the_best_and_lasts_one_interval_at_least():
    times = np.arange(8, dtype=np.float32) * 0.5 + 0.25
    mask = np.ones(8, dtype=bool)
    sentence = np.array([1.0, 0.0], dtype=np.float32)
    # Frames 2-4 show the described moment (cosine 0.9 with the text), the others something else (0.3).
    frames = np.array([[0.3, 0.95]] * 8, dtype=np.float32)
    frames[2:5] = [0.9, 0.44]
    weights = frame_match_weights(sentence, frames[None], mask[None])[0]
    assert span(weights, times, mask, 4.0) == (1.0, 2.5)
    # One frame alone: half an interval each side; at the video's edges, clipped to the video.
    frames[2:5] = [0.3, 0.95]
    frames[7] = [0.9, 0.44]
    assert span(frame_match_weights(sentence, frames[None], mask[None])[0], times, mask, 4.0) == (3.5, 4.0)


def test_hybrid_mode_fuses_full_text_matches(indexed):
    store, checkpoint, _ = indexed
    engine = searcher(store, checkpoint, candidates=2, nprobes=1)
    target = engine.search("anything", k=1, exact=True).hits[0]
    words = target.text.split(". ", 1)[-1]
    result = engine.search(words, k=3, hybrid=True)
    assert result.mode == "hybrid" and all(h.fused is not None for h in result.hits)
    assert_stage_timings(result.timings_ms)
    assert target.video_id in [h.video_id for h in result.hits]


def test_hybrid_mode_brings_in_a_text_match_that_vector_search_ranks_outside_the_top_k(indexed):
    store, checkpoint, _ = indexed
    engine = searcher(store, checkpoint, candidates=3, nprobes=1)
    hits = engine.search("anything", k=24, exact=True).hits
    # A video's number, from its file name (its title in the searchable text), is a word no other video's text holds.
    numbers = {hit.video_id: re.fullmatch(r"v_syn\d+_(\d+)", hit.text.split(". ", 1)[0]).group(1) for hit in hits}
    missed = [
        (vid, number)
        for vid, number in numbers.items()
        if vid not in {h.video_id for h in engine.search(number, k=3).hits}
    ]
    assert missed, "some video should rank outside the vector top 3 for its own number"
    for vid, number in missed[:3]:
        result = engine.search(number, k=3, hybrid=True)
        assert vid in [h.video_id for h in result.hits], (number, result.hits)


def test_each_hit_scores_what_the_checkpoint_gives_that_videos_stored_frames(indexed):
    """Recomputed here from the `frames` and `texts` rows and the checkpoint, without the index: an index that kept
    one video's encoding under another's id would score its hits with the wrong video's frames."""
    store, checkpoint, _ = indexed
    model, _, _ = load_checkpoint(checkpoint)
    catalog = Catalog(store)
    frames = catalog.scan(FRAMES, ["video_id", "features", "frame_mask"]).to_pylist()
    [text] = catalog.scan(TEXTS, ["vector", "tokens", "token_mask"], limit=1).to_pylist()
    with torch.inference_mode():
        query = model.encode_text(*(torch.tensor([text[c]]) for c in ("vector", "tokens", "token_mask")))
        videos = model.encode_video(*(torch.tensor([f[c] for f in frames]) for c in ("features", "frame_mask")))
        scores = model.score(query, videos)[0].tolist()
    expected = dict(zip([f["video_id"] for f in frames], scores, strict=True))
    tolerance = 1e-4  # the index packs encodings as float16 (3.6e-5 off at most here)
    assert max(scores) - min(scores) > 20 * tolerance, "scores far enough apart to tell videos apart"
    engine = searcher(store, checkpoint, candidates=24)
    for exact in (False, True):
        hits = engine.search_encoded(query, k=24, exact=exact).hits
        assert len(hits) == len(expected) == 24
        for hit in hits:
            assert hit.score == pytest.approx(expected[hit.video_id], abs=tolerance), (exact, hit.video_id)


@pytest.mark.parametrize(
    ("query", "k", "filters", "message"),
    [
        ("  ", 5, [], "empty"),
        ("a circle", 0, [], "k must be between"),
        ("a circle", 5000, [], "k must be between"),
        ("a circle", 5, [Filter("colour", "=", "red")], "unknown filter column 'colour'"),
        ("a circle", 5, [Filter("split", "~", "x")], "unknown filter operator"),
        ("a circle", 5, [Filter("duration_s", ">", "long")], "needs a number"),
    ],
)
def test_bad_queries_get_clear_errors(indexed, query, k, filters, message):
    store, checkpoint, _ = indexed
    with pytest.raises(SearchError, match=message):
        searcher(store, checkpoint).search(query, k=k, filters=filters)


def test_another_vector_width_or_segment_count_for_an_existing_index_is_refused(indexed):
    store, checkpoint, _ = indexed
    with pytest.raises(
        ValueError, match="holds 4 segment vectors of 64 dims per video but --vector-dim 32 --segments 4"
    ):
        index_flow(IndexConfig(checkpoint, store, ann=dataclasses.replace(SMALL_ANN, vector_dim=32)))
    with pytest.raises(ValueError, match="--segments 2 asks for 2 of 64: re-run with --vector-dim 64 --segments 4"):
        index_flow(IndexConfig(checkpoint, store, ann=dataclasses.replace(SMALL_ANN, segments=2)))


def test_checkpoint_without_index_and_wrong_backbone_are_refused(indexed, tmp_path):
    store, checkpoint, _ = indexed
    model, config, meta = load_checkpoint(checkpoint)
    with torch.no_grad():
        model.local_interaction.queries.add_(0.5)
    other = save_checkpoint(tmp_path / "other", model, config, meta["extra"])
    with pytest.raises(SearchError, match="no video index for checkpoint"):
        searcher(store, str(other))
    with pytest.raises(SearchError, match="does not match the checkpoint"):
        searcher(indexed[0], indexed[1], backbone=BackboneConfig(seed=7))


def test_an_index_written_by_an_older_schema_is_refused_with_what_to_do(indexed, tmp_path):
    store, checkpoint, summary = indexed
    older = dataclasses.replace(store, uri=str(tmp_path / "older"))
    table = Catalog(store).db.open_table(summary.table)
    metadata = {**table.schema.metadata, SCHEMA_VERSION_KEY: b"2"}
    Catalog(older).db.create_table(summary.table, table.to_arrow().replace_schema_metadata(metadata))
    with pytest.raises(SearchError, match=f"has schema version 2; this glscl reads version 3: drop {summary.table}"):
        searcher(older, checkpoint)


def test_cli_index_and_query(indexed, capsys):
    store, checkpoint, _ = indexed
    assert main(["index", "--checkpoint", checkpoint, "--db", store.uri, "--vector-dim", "64", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["added"] == 0 and report["health_after"]["rows"] == 24
    code = main(["query", "a red circle", "-k", "3", "--checkpoint", checkpoint, "--db", store.uri, "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert len(result["hits"]) == 3 and result["hits"][0]["rank"] == 1
    assert_stage_timings(result["timings_ms"])
    assert main(["query", "a red circle", "-k", "2", "--checkpoint", checkpoint, "--db", store.uri]) == 0
    markdown = capsys.readouterr().out
    assert re.search(r"text [\d.]+ · ann [\d.]+ · fetch [\d.]+ · rerank [\d.]+ · metadata [\d.]+ ms", markdown)
    code = main(["query", "a red circle", "--checkpoint", checkpoint, "--db", store.uri, "--where", "colour=red"])
    assert code == 2 and "unknown filter column" in capsys.readouterr().err


def test_glscl_serve_command_prewarms_and_answers_until_stopped(indexed, tmp_path):
    store, checkpoint, _ = indexed
    log = tmp_path / "serve.log"
    command = [sys.executable, "-m", "pipelines.cli", "serve", "--checkpoint", checkpoint, "--db", store.uri]
    command += ["--port", "0", "--index-cache-gb", "0.5"]
    with log.open("w") as stderr:
        process = subprocess.Popen(command, stderr=stderr)
        try:
            port = reported_port(process, log, r"Uvicorn running on http://127\.0\.0\.1:(\d+)")
            status, body = post(f"http://127.0.0.1:{port}/search", {"text": "a red circle moves left", "k": 2})
            assert status == 200 and len(body["hits"]) == 2 and body["mode"] == "two-stage"
        finally:
            process.send_signal(signal.SIGINT)
            process.wait(timeout=30)
    assert process.returncode == 0, log.read_text()[-2000:]


@pytest.fixture(scope="module")
def server(indexed):
    store, checkpoint, _ = indexed
    with serving(create_app(Searcher(SearchConfig(checkpoint, store)))) as url:
        yield url


@contextlib.contextmanager
def serving(app):
    """The app behind uvicorn on a free loopback port, in a thread, for the block; yields its URL."""
    instance = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=instance.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not instance.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert instance.started
    [listening] = instance.servers[0].sockets  # port 0: the port the operating system picked as uvicorn bound it
    try:
        yield f"http://127.0.0.1:{listening.getsockname()[1]}"
    finally:
        instance.should_exit = True
        thread.join(timeout=10)


def post(url: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_http_api_round_trip_and_errors(server):
    status, body = post(
        f"{server}/search",
        {"text": "a red circle", "k": 4, "filters": [{"column": "split", "op": "in", "value": ["train", "val_1"]}]},
    )
    assert status == 200 and len(body["hits"]) == 4 and body["mode"] == "two-stage"
    assert_stage_timings(body["timings_ms"])
    assert post(f"{server}/search", {"text": "", "k": 4})[0] == 422
    assert post(f"{server}/search", {"text": "   ", "k": 4})[0] == 400
    assert post(f"{server}/search", {"text": "a circle", "k": 0})[0] == 422
    status, body = post(f"{server}/search", {"text": "x", "filters": [{"column": "nope", "op": "=", "value": "1"}]})
    assert status == 400 and "unknown filter column" in body["detail"]
    with urllib.request.urlopen(f"{server}/openapi.json", timeout=30) as response:
        schema = json.loads(response.read())
    assert "/search" in schema["paths"] and "SearchRequest" in schema["components"]["schemas"]
    video = post(f"{server}/search", {"text": "a red circle", "k": 1})[1]["hits"][0]["video_id"]
    with urllib.request.urlopen(f"{server}/thumbnail/{video}?t=0.5", timeout=30) as response:
        assert response.headers["content-type"] == "image/jpeg" and response.read(3) == b"\xff\xd8\xff"


@pytest.mark.skipif(bool(os.environ.get("GLSCL_TEST_NO_BROWSER")), reason="GLSCL_TEST_NO_BROWSER is set")
def test_web_page_in_headless_chromium(server):
    assert shutil.which("chromium"), "install Debian's chromium (`make setup` does) or set GLSCL_TEST_NO_BROWSER=1"
    url = f"{server}/?q=a+red+circle+moves&k=3&where=split%3Dval_1"
    dom = subprocess.run(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=20000", "--dump-dom", url],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    items = re.findall(r'<li data-video-id="([^"]+)"', dom)
    assert len(items) == 3, dom[-2000:]
    assert dom.count('data-loaded="1"') == 3
    assert "3 videos" in dom and "val_1" in dom


def test_maintaining_a_video_index_retrains_its_vector_index_as_it_was_built(indexed):
    store, checkpoint, summary = indexed
    catalog = Catalog(store)
    table = catalog.db.open_table(summary.table)
    before = {i.name: i.index_uuid for i in table.list_indices()}
    upkeep = maintain_table(catalog, summary.table, timedelta(hours=1))
    after = {i.name: i.index_uuid for i in catalog.db.open_table(summary.table).list_indices()}
    segment_indexes = [f"vector_{segment}_idx" for segment in range(SMALL_ANN.segments)]
    assert after.keys() == before.keys() and all(after[name] != before[name] for name in segment_indexes)
    assert load_projection(catalog, summary.table).ann == dataclasses.asdict(SMALL_ANN), "what upkeep rebuilds with"
    assert upkeep.after.rows == 24 and not any(upkeep.after.unindexed_rows.values())
    engine = searcher(store, checkpoint, candidates=24)
    assert engine.search("a red circle moves left", k=3).hits


def test_a_running_searcher_sees_videos_indexed_after_it_started(indexed, tmp_path):
    shared, checkpoint, summary = indexed
    store = copied_store(shared, tmp_path)  # rows deleted below
    table = Catalog(store).db.open_table(summary.table)
    gone = table.search().select(["video_id"]).limit(2).to_arrow()["video_id"].to_pylist()
    table.delete(sql_in("video_id", gone))
    engine = searcher(store, checkpoint, candidates=24, refresh_s=0.0)
    only = [Filter("video_id", "in", gone)]
    assert engine.search("a shape moves", k=5, filters=only).hits == []
    assert index_flow(IndexConfig(checkpoint, store, ann=SMALL_ANN)).added == 2
    assert {hit.video_id for hit in engine.search("a shape moves", k=5, filters=only).hits} == set(gone)


def test_an_appended_batch_is_indexed_in_delta_indexes_and_found_without_a_retrain(indexed, tmp_path):
    shared, checkpoint, summary = indexed
    store = copied_store(shared, tmp_path)
    table = Catalog(store).db.open_table(summary.table)
    trained = {name: table.index_stats(name).num_indices for name in ("vector_0_idx", "text_idx")}
    gone = table.search().select(["video_id"]).limit(4).to_arrow()["video_id"].to_pylist()
    table.delete(sql_in("video_id", gone))
    update = index_flow(IndexConfig(checkpoint, store, ann=SMALL_ANN))
    assert update.added == 4 and not any("retrained" in action for action in update.actions), update.actions
    assert update.actions[0].startswith("indexed 4 new rows incrementally (vector indexes: delta indexes, 4 of 24")
    table = Catalog(store).db.open_table(summary.table)
    for segment in range(SMALL_ANN.segments):
        stats = table.index_stats(f"vector_{segment}_idx")
        assert (stats.num_indices, stats.num_unindexed_rows) == (trained["vector_0_idx"] + 1, 0), "one delta each"
    text = table.index_stats("text_idx")
    assert (text.num_indices, text.num_unindexed_rows) == (trained["text_idx"], 0), "full-text: folded in"
    engine = searcher(store, checkpoint, candidates=4, in_memory_below=0)
    found = engine.search("a shape moves", k=4, filters=[Filter("video_id", "in", gone)])
    assert {hit.video_id for hit in found.hits} == set(gone)

    again = [
        video for video in table.search().select(["video_id"]).to_arrow()["video_id"].to_pylist() if video not in gone
    ]
    table.delete(sql_in("video_id", again[:2]))
    update = index_flow(
        IndexConfig(checkpoint, store, ann=dataclasses.replace(SMALL_ANN, max_deltas=1, retrain_share=0.5))
    )
    merged = "1 deltas and 0 merged deltas; merged the 1 deltas since the last merge with the new rows into one)"
    assert update.added == 2 and update.actions[0].endswith(merged), update.actions
    stats = Catalog(store).db.open_table(summary.table).index_stats("vector_0_idx")
    assert (stats.num_indices, stats.num_unindexed_rows) == (trained["vector_0_idx"] + 1, 0), "still one delta"


def test_queries_during_an_index_run_never_miss_a_video_searchable_before(indexed, tmp_path):
    """A new generation of segment rows is built (8 new videos of 24: past the retrain share) while two threads
    query a searcher that follows the tables."""
    shared, checkpoint, summary = indexed
    store = copied_store(shared, tmp_path)
    index_flow(IndexConfig(checkpoint, store, ann=SEGMENT_ROWS_ANN))
    catalog = Catalog(store)
    table = catalog.db.open_table(summary.table)
    gone = table.search().select(["video_id"]).limit(8).to_arrow()["video_id"].to_pylist()
    for rows in (table, current_segment_rows(catalog, summary.table)):
        rows.delete(sql_in("video_id", gone))
    engine = searcher(store, checkpoint, candidates=24, in_memory_below=0, refresh_s=0.0)
    before = {hit.video_id for hit in engine.search("shapes", k=24).hits}
    assert len(before) == 16 and engine.describe()["candidate_stage"] == "segment rows"
    done, missed, answered, failures = threading.Event(), [], [], []

    def ask() -> None:
        while not done.is_set():
            try:
                seen = {hit.video_id for hit in engine.search("shapes", k=24).hits}
            except Exception as error:  # every failure is reported by the assertion below
                failures.append(repr(error))
                continue
            answered.append(len(seen))
            if before - seen:
                missed.append(sorted(before - seen))

    askers = [threading.Thread(target=ask) for _ in range(2)]
    for asker in askers:
        asker.start()
    try:
        update = index_flow(IndexConfig(checkpoint, store, ann=SEGMENT_ROWS_ANN))
    finally:
        done.set()
        for asker in askers:
            asker.join()
    assert update.added == 8 and any("segments_g2" in action for action in update.actions), update.actions
    assert not failures and not missed and len(answered) > 5, (failures[:3], missed[:3], len(answered))
    assert max(answered) == 24 and engine.search("shapes", k=24).candidates == 24


def test_a_gallery_split_into_shards_answers_as_the_single_searcher(indexed, tmp_path):
    """Two gallery shards (tables by video-id hash, one projection basis), each searched by its own Ray actor, give
    the unsharded index's answer: candidates merge by proxy score, the exact re-rank runs on the merged ones."""
    shared, checkpoint, summary = indexed
    store = copied_store(shared, tmp_path)
    sharded = index_flow(IndexConfig(checkpoint, store, ann=SMALL_ANN, gallery_shards=2))
    assert sharded.added == 24 and [shard.health_after.rows for shard in sharded.shards] == [
        sum(gallery_shard(video, 2) == shard for video in videos_of(store, summary.table)) for shard in range(2)
    ]
    assert {shard.table for shard in sharded.shards} == {f"{summary.table}_shard0of2", f"{summary.table}_shard1of2"}
    settings = {"candidates": 6}
    single = searcher(store, checkpoint, **settings)
    engine = ShardedSearcher(
        ShardedSearchConfig(SearchConfig(checkpoint, store, **settings), shards=2, cpus_per_shard=0.5)
    )
    try:
        assert engine.describe()["videos"] == 24
        assert engine.describe()["gallery_shards"] == 2
        tables = {shard["index"] for shard in engine.shards}
        for text in ("a red circle moves left", "a blue square appears then a green triangle", "shapes"):
            expected, got = single.search(text, k=10), engine.search(text, k=10)
            assert [hit.video_id for hit in got.hits] == [hit.video_id for hit in expected.hits], text
            assert [hit.score for hit in got.hits] == pytest.approx([hit.score for hit in expected.hits], abs=1e-5)
            assert [hit.span_s for hit in got.hits] == [hit.span_s for hit in expected.hits]
            assert got.mode == "sharded" and got.candidates == expected.candidates == 10 and got.timings_ms["text"] > 0
            assert {gallery_shard(hit.video_id, 2) for hit in got.hits} == {0, 1}, "both shards contribute"
        only = [Filter("video_id", "in", sorted(videos_of(store, summary.table))[:3])]
        assert [h.video_id for h in engine.search("shapes", k=5, filters=only).hits] == [
            h.video_id for h in single.search("shapes", k=5, filters=only).hits
        ]
        with serving(create_app(engine)) as url:
            status, body = post(f"{url}/search", {"text": "shapes", "k": 4})
            assert status == 200 and [hit["video_id"] for hit in body["hits"]] == _top(single.search("shapes", k=4))
            assert post(f"{url}/search", {"text": "shapes", "exact": True})[0] == 400
            with urllib.request.urlopen(f"{url}/health", timeout=30) as response:
                assert json.loads(response.read())["videos"] == 24
            with urllib.request.urlopen(f"{url}/thumbnail/{body['hits'][0]['video_id']}?t=0.5", timeout=30) as response:
                assert response.read(3) == b"\xff\xd8\xff", "the video's file is found through its shard"
    finally:
        engine.close()
    assert tables == {shard.table for shard in sharded.shards}


def videos_of(store, table_name: str) -> list[str]:
    return Catalog(store).db.open_table(table_name).search().select(["video_id"]).to_arrow()["video_id"].to_pylist()


def _top(result) -> list[str]:
    return [hit.video_id for hit in result.hits]
