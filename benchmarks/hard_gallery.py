"""Hard synthetic galleries for the two-stage search benchmark: where the candidate stage's segment proxy is weakest.

`benchmarks/search_bench.py` builds *friendly* galleries: two events per video aligned to the halves of F = 16
frames (so to the 4 equal segments of the ANN vectors), scored by a randomly initialised head. Here, as in
ActivityNet, each video lasts 8 s to 10 min (log-uniform) and is sampled at 1 fps into at most F = 64 frames
(uniformly over longer videos; a video shorter than 64 s has fewer valid frames and a frame mask), and holds 1 to
8 events at random boundaries (each 2 s to the whole video, log-uniform, starting anywhere: events overlap). A
frame shows every event whose span covers its time (an event no frame falls in is given its nearest frame), each
with its own salience (0.3 to 1, drawn per frame and event), over a per-video background, plus noise, at CLIP-like
norm 10. Frames of one event therefore differ, and the text-conditioned pooling of the global score concentrates on
a few of them, as a trained head's does. Events are noisy copies of shared topics, as in the friendly galleries.

A query is one event's sentence or the whole paragraph (events in order of their start), as CLIP-like sentence
and word features; the scores come from a GLSCL head *trained* first on a separate split of the same distribution
(`train_head`, in memory through `glscl.training.Trainer`), whose checkpoint then encodes the gallery and scores
it, exactly as the friendly benchmark does with its random head (`search_bench.build`, `search_bench.sweep`).

Usage: python -m benchmarks.hard_gallery --root DIR [--sizes 5000 100000] [--head tiny] [search_bench options]
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from benchmarks.mean_pool import mean_pool
from benchmarks.search_bench import (
    FRAME_NORM,
    TEXT_NORM,
    SearchBenchConfig,
    StoredSource,
    _noisy,
    _unit,
    config_from_args,
    load_or_build,
    plot_references,
    run_search_bench,
    side_by_side_markdown,
)
from benchmarks.search_bench import build_parser as search_parser
from glscl.checkpoint import load_checkpoint, save_checkpoint
from glscl.config import HEAD_PRESETS, GLSCLConfig, TrainConfig
from glscl.data import PairData
from glscl.model import GLSCL, TextEncoding, VideoEncoding
from glscl.similarity import pooling_weights
from glscl.training import Trainer, TrainModule
from workers.plots import new_figure, save_figure

TRAIN_SPLIT, VAL_SPLIT, GALLERY_SPLIT = 1, 2, 3
KINDS = ("sentence", "paragraph")


@dataclass(frozen=True)
class HardConfig:
    """The hard gallery's video, event and text shapes, and how its head is trained."""

    frames: int = 64
    words: int = 32
    max_events: int = 8
    min_duration_s: float = 8.0
    max_duration_s: float = 600.0
    min_event_s: float = 2.0
    fps: float = 1.0
    words_per_event: int = 4
    head: str = "tiny"
    train_videos: int = 2000
    val_videos: int = 500
    epochs: int = 4
    batch_size: int = 64
    encode_batch: int = 250


class Layout(NamedTuple):
    """Videos before their frames: duration [n] s, valid frames [n], event spans [n, E] s, which of the E event
    slots are used [n, E], and unit event vectors [n, E, D]."""

    duration: np.ndarray
    valid: np.ndarray
    start: np.ndarray
    end: np.ndarray
    present: np.ndarray
    events: np.ndarray


class Texts(NamedTuple):
    """CLIP-like text features: sentence [n, D], words [n, L, D] and word mask [n, L]."""

    sentence: np.ndarray
    tokens: np.ndarray
    mask: np.ndarray


class HardGenerator:
    """Deterministic hard videos and texts; topics are shared with the friendly generator's construction, and every
    split (train, validation, gallery) and chunk draws from its own seeded stream."""

    def __init__(self, bench: SearchBenchConfig, hard: HardConfig) -> None:
        self.bench, self.hard = bench, hard
        base = np.random.default_rng(bench.seed)
        self.topics = _unit(base.standard_normal((bench.topics, bench.dim), dtype=np.float32))

    def _rng(self, *words: int) -> np.random.Generator:
        return np.random.default_rng((self.bench.seed, *words))

    def layout(self, split: int, chunk: int, n: int) -> Layout:
        """Durations, valid frame counts and 1..max_events events at random (overlapping) spans for n videos."""
        hard, rng = self.hard, self._rng(split, chunk, 0)
        low, high = math.log(hard.min_duration_s), math.log(hard.max_duration_s)
        duration = np.exp(rng.uniform(low, high, n))
        valid = np.minimum(hard.frames, np.floor(duration * hard.fps)).astype(np.int64)
        present = np.arange(hard.max_events) < rng.integers(1, hard.max_events + 1, n)[:, None]
        shape = (n, hard.max_events)
        length = np.exp(rng.uniform(math.log(hard.min_event_s), np.log(duration)[:, None], shape))
        start = rng.uniform(0.0, 1.0, shape) * (duration[:, None] - length)
        topic = self.topics[rng.integers(0, self.bench.topics, shape)]
        return Layout(duration, valid, start, start + length, present, _noisy(topic, 0.8, rng))

    def coverage(self, layout: Layout) -> np.ndarray:
        """[n, F, E] whether each valid frame (at its sampling time) shows each event; an event that no frame's
        time falls in is shown by its nearest frame."""
        frames = self.hard.frames
        times = (np.arange(frames) + 0.5) * (layout.duration / layout.valid)[:, None]
        mask = np.arange(frames) < layout.valid[:, None]
        cover = (times[:, :, None] >= layout.start[:, None]) & (times[:, :, None] <= layout.end[:, None])
        cover &= mask[:, :, None] & layout.present[:, None]
        missing = layout.present & ~cover.any(1)
        rows, slots = np.nonzero(missing)
        middle = (layout.start + layout.end)[rows, slots] / 2
        nearest = np.minimum(np.floor(middle / layout.duration[rows] * layout.valid[rows]), layout.valid[rows] - 1)
        cover[rows, nearest.astype(np.int64), slots] = True
        return cover

    def frames(self, layout: Layout, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Raw CLIP-like frame features [n, F, D] (zero where padded) and the frame mask [n, F]."""
        n, dim = len(layout.duration), self.bench.dim
        salience = rng.uniform(0.3, 1.0, (n, self.hard.frames, self.hard.max_events)) * self.coverage(layout)
        content = np.einsum("nfe,ned->nfd", salience.astype(np.float32), layout.events)
        background = 0.5 * _unit(rng.standard_normal((n, 1, dim), dtype=np.float32))
        noise = 0.6 / math.sqrt(dim) * rng.standard_normal(content.shape, dtype=np.float32)
        mask = np.arange(self.hard.frames) < layout.valid[:, None]
        return FRAME_NORM * _unit(content + background + noise) * mask[..., None], mask

    def texts(self, layout: Layout, rows: np.ndarray, slots: np.ndarray, rng: np.random.Generator) -> Texts:
        """Texts about videos `rows`: the sentence of event `slots[i]`, or the paragraph where `slots[i]` is -1
        (its sentence near the sum of the events, `words_per_event` words per event in order of start)."""
        hard, dim = self.hard, self.bench.dim
        n, words = len(rows), hard.words
        sentence = np.empty((n, dim), np.float32)
        tokens = np.zeros((n, words, dim), np.float32)
        mask = np.zeros((n, words), bool)
        for i, (row, slot) in enumerate(zip(rows.tolist(), slots.tolist(), strict=True)):
            if slot >= 0:
                described = layout.events[row, [slot]]
                count = int(rng.integers(6, min(words, 14) + 1))
                per_word = np.repeat(described, count, axis=0)
            else:
                order = np.flatnonzero(layout.present[row])[np.argsort(layout.start[row, layout.present[row]])]
                described = layout.events[row, order]
                per_word = np.repeat(described, hard.words_per_event, axis=0)[:words]
                count = len(per_word)
            sentence[i] = TEXT_NORM * _noisy(described.sum(0), 0.5, rng)
            tokens[i, :count] = TEXT_NORM * _noisy(per_word, 1.0, rng)
            mask[i, :count] = True
        return Texts(sentence, tokens, mask)

    def pairs(self, split: int, n: int) -> tuple[PairData, Layout, np.ndarray]:
        """Raw training pairs of n videos: every event's sentence and the paragraph of each video; with the
        layout and each text's event slot (-1: paragraph)."""
        layout = self.layout(split, 0, n)
        frames, mask = self.frames(layout, self._rng(split, 0, 1))
        rows, slots = np.nonzero(layout.present)
        rows = np.concatenate([rows, np.arange(n)])
        slots = np.concatenate([slots, np.full(n, -1)])
        texts = self.texts(layout, rows, slots, self._rng(split, 0, 2))
        data = PairData(frames, mask, texts.tokens, rows, texts.sentence, texts.mask)
        return data, layout, slots


def head_config(bench: SearchBenchConfig, hard: HardConfig) -> GLSCLConfig:
    """The head preset at the gallery's widths (temporal transformer from random init: no CLIP tower here)."""
    preset = HEAD_PRESETS[hard.head]
    return GLSCLConfig(
        embed_dim=bench.dim, max_frames=hard.frames, max_words=hard.words, temporal_init="random", **preset
    )


@torch.inference_mode()
def encode_videos(model: GLSCL, frames: np.ndarray, mask: np.ndarray, batch: int) -> VideoEncoding:
    """`model`'s encodings of raw frames, in batches of similar valid length cut to their longest valid run (exact:
    padded frames are masked keys), rounded through float16 as the video index stores them."""
    order = np.argsort(mask.sum(1), kind="stable")
    slots = mask.shape[1]
    parts = []
    for low in range(0, len(order), batch):
        rows = order[low : low + batch]
        length = max(int(mask[rows].sum(1).max()), 1)
        video = model.encode_video(torch.from_numpy(frames[rows, :length]), torch.from_numpy(mask[rows, :length]))
        padded = torch.nn.functional.pad(video.frames, (0, 0, 0, slots - length))
        parts.append((padded.half().float(), video.local.half().float()))
    inverse = torch.from_numpy(np.argsort(order))
    encoded = torch.cat([p[0] for p in parts])[inverse]
    local = torch.cat([p[1] for p in parts])[inverse]
    return VideoEncoding(encoded, torch.from_numpy(mask), local)


@torch.inference_mode()
def peakiness(model: GLSCL, data: PairData, slots: np.ndarray, cover: np.ndarray) -> dict:
    """How the global pooling of `model` spreads over frames for the sentence texts of `data`: mean largest frame
    weight, mean weight on the described event's frames, and those frames' mean share of the valid frames."""
    sentence_rows = np.flatnonzero(slots >= 0)
    videos = data.text_to_video[sentence_rows].numpy()
    video = model.encode_video(data.videos[videos], data.video_mask[videos])
    text = data.sentence[sentence_rows]
    weights = pooling_weights(text, video.frames, video.mask, model.config.global_temperature).numpy()
    event_frames = cover[videos, :, slots[sentence_rows]]
    share = event_frames.sum(1) / data.video_mask[videos].sum(1).numpy()
    return {
        "texts": len(sentence_rows),
        "max_weight": float(weights.max(1).mean()),
        "event_weight": float((weights * event_frames).sum(1).mean()),
        "event_frame_share": float(share.mean()),
    }


def train_head(bench: SearchBenchConfig, hard: HardConfig, folder: Path) -> tuple[GLSCL, dict]:
    """Train the `hard.head` preset on a generated split (validated on another), save its checkpoint under `folder`
    and return it with the training facts; a later call loads the saved one."""
    facts_path = folder / "train.json"
    if facts_path.exists():
        model, _, _ = load_checkpoint(folder / "checkpoint")
        return model.eval(), json.loads(facts_path.read_text())
    generator = HardGenerator(bench, hard)
    train, _, _ = generator.pairs(TRAIN_SPLIT, hard.train_videos)
    val, val_layout, val_slots = generator.pairs(VAL_SPLIT, hard.val_videos)
    val_cover = generator.coverage(val_layout)
    config = head_config(bench, hard)
    torch.manual_seed(bench.seed)
    module = TrainModule(GLSCL(config))
    trainer = Trainer(module, config, TrainConfig(epochs=hard.epochs, batch_size=hard.batch_size, seed=bench.seed))
    before = {"retrieval": trainer.evaluate(val), "pooling": peakiness(module.head.eval(), val, val_slots, val_cover)}
    start = time.perf_counter()
    trainer.fit(train, on_log=lambda record: print(f"  train {record}", flush=True))
    seconds = time.perf_counter() - start
    model = module.head.eval()
    facts = {
        "head": hard.head,
        "config": config.to_dict(),
        "train_videos": hard.train_videos,
        "train_texts": train.num_texts,
        "val_videos": hard.val_videos,
        "val_texts": val.num_texts,
        "steps": trainer.step,
        "train_s": seconds,
        "untrained": before,
        "trained": {"retrieval": trainer.evaluate(val), "pooling": peakiness(model, val, val_slots, val_cover)},
    }
    save_checkpoint(folder / "checkpoint", model, config, {"hard_gallery": asdict(hard)})
    facts_path.write_text(json.dumps(facts, indent=2))
    return model, facts


class HardSource:
    """The hard gallery for `search_bench.build`: `HardGenerator` videos encoded and scored by a trained head, half
    the queries sentences about one event of their target, half paragraphs."""

    name = "hard"

    def __init__(self, bench: SearchBenchConfig, hard: HardConfig, model: GLSCL) -> None:
        self.generator = HardGenerator(bench, hard)
        self.bench, self.hard, self.model = bench, hard, model

    def head(self) -> GLSCL:
        """The trained head."""
        return self.model

    def _texts(self, size: int) -> tuple[Texts, np.ndarray, np.ndarray]:
        """Random targets, each with a sentence (random event) or its paragraph, as raw texts; with the targets and
        the texts' kinds."""
        bench, rng = self.bench, self.generator._rng(GALLERY_SPLIT, size, 2)
        targets = np.sort(rng.choice(size, bench.queries, replace=False))
        kinds = rng.permutation(np.resize(np.array(KINDS), bench.queries))
        parts = []
        for chunk in np.unique(targets // bench.chunk).tolist():
            low = chunk * bench.chunk
            layout = self.generator.layout(GALLERY_SPLIT, chunk, min(bench.chunk, size - low))
            picked = np.flatnonzero(targets // bench.chunk == chunk)
            rows = targets[picked] - low
            slots = np.array([rng.choice(np.flatnonzero(layout.present[r])) for r in rows.tolist()])
            slots = np.where(kinds[picked] == "sentence", slots, -1)
            parts.append(self.generator.texts(layout, rows, slots, rng))
        return Texts(*(np.concatenate(field) for field in zip(*parts, strict=True))), targets, kinds

    def queries(self, size: int) -> tuple[TextEncoding, np.ndarray, np.ndarray]:
        """The raw texts (`_texts`) encoded by the head."""
        texts, targets, kinds = self._texts(size)
        with torch.inference_mode():
            encoded = self.model.encode_text(*(torch.from_numpy(t) for t in texts))
        return TextEncoding(encoded.sentence.clone(), encoded.local.clone()), targets, kinds

    def raw_sentences(self, size: int) -> np.ndarray:
        """The raw sentence vectors of the texts `queries` encodes."""
        return self._texts(size)[0].sentence

    def _raw_frames(self, chunk: int, low: int, high: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """The chunk's raw frames and frame masks, drawn `encode_batch` videos at a time (bounded memory)."""
        layout = self.generator.layout(GALLERY_SPLIT, chunk, high - low)
        for index, first in enumerate(range(0, high - low, self.hard.encode_batch)):
            part = Layout(*(field[first : first + self.hard.encode_batch] for field in layout))
            yield self.generator.frames(part, self.generator._rng(GALLERY_SPLIT, chunk, 1, index))

    def videos(self, size: int, chunk: int, low: int, high: int) -> VideoEncoding:
        """The chunk's raw frames encoded by the head."""
        parts = [
            encode_videos(self.model, frames, mask, self.hard.encode_batch)
            for frames, mask in self._raw_frames(chunk, low, high)
        ]
        return VideoEncoding(*(torch.cat(field) for field in zip(*parts, strict=True)))

    def pooled(self, size: int, chunk: int, low: int, high: int) -> np.ndarray:
        """The chunk's raw frames mean-pooled (drawn again: a small share of the time encoding them takes)."""
        return np.concatenate([mean_pool(frames, mask) for frames, mask in self._raw_frames(chunk, low, high)])


def plot_reports(paths: list[str], output: Path) -> Path:
    """Recall@10 against p50 latency of every swept setting in the benchmark reports `paths`, one series per
    candidate stage (segment kind, count, width, concept weight, index type or in memory) and gallery size, beside the
    mean-pool baseline and exhaustive exact GLSCL of each gallery size and index type, as a PNG."""
    figure, axis = new_figure(size=(12, 5))
    series: dict[str, list[dict]] = {}
    references: dict[str, dict] = {}
    for path in paths:
        report = json.loads(Path(path).read_text())
        ann, width = report["config"]["ann"], report["config"]["vector_dim"]
        stage = f"{ann['segments']} {ann.get('segment_kind', 'time')} segments, {width}-d"
        if ann.get("concept_weight", 1.0) != 1.0:
            stage += f", concepts x{ann['concept_weight']:g}"
        for entry in report["sizes"]:
            for row in entry["sweep"]:
                found = {"in-memory scan": "in memory", "segment rows": f"{ann['index_type']} over segment rows"}.get(
                    row.get("candidate_stage", ""), ann["index_type"]
                )
                series.setdefault(f"{entry['videos']:,} videos, {stage}, {found}", []).append(row)
            references.setdefault(f"{entry['videos']:,} videos, {ann['index_type']}", entry)
    for label, rows in sorted(series.items()):
        rows = sorted(rows, key=lambda r: r["p50_ms"])
        axis.plot([r["p50_ms"] for r in rows], [r["recall@10"] for r in rows], "o", label=label)
    for label, entry in sorted(references.items()):
        plot_references(axis, entry, label)
    axis.axhline(0.95, color="grey", linestyle="--", linewidth=0.8)
    axis.axvline(50, color="grey", linestyle="--", linewidth=0.8)
    axis.set(xlabel="p50 latency per query (ms)", ylabel="recall@10 of the exact GLSCL top-10", xscale="log")
    axis.set_title(f"{report['gallery']} galleries, two-stage search per candidate stage vs mean-pool ANN")
    axis.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the points, not on them
    return save_figure(figure, output)


def build_parser() -> argparse.ArgumentParser:
    """The search benchmark's options (F = 64 and another report by default) plus how the head is trained."""
    parser = search_parser()
    parser.prog, parser.description = "glscl bench hard-search", __doc__.splitlines()[0]
    defaults = HardConfig()
    parser.add_argument("--head", choices=tuple(HEAD_PRESETS), default=defaults.head, help="head preset trained")
    parser.add_argument("--train-videos", type=int, default=defaults.train_videos, help="videos the head trains on")
    parser.add_argument("--epochs", type=int, default=defaults.epochs, help="training epochs")
    parser.add_argument("--plot", nargs="+", help="only plot these reports together, into --output's PNG")
    parser.add_argument(
        "--from-galleries",
        help="root of hard galleries built before: index their stored encodings again (e.g. another --segment-kind) "
        "instead of training, generating and encoding",
    )
    parser.set_defaults(frames=defaults.frames, output="benchmarks/hard_search_results.json")
    return parser


def main(argv: list[str] | None = None) -> None:
    """Command-line entry: train (or load) the head, then build, sweep and report the hard galleries."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.plot:
        plot_reports(args.plot, Path(args.output).with_suffix(".png"))
        return
    if not args.root or args.text_only:
        parser.error("--root is required, and --text-only belongs to benchmarks.search_bench")
    bench = replace(config_from_args(args), chunk=10_000, exact_mode_max=5_000)
    hard = HardConfig(frames=bench.frames, head=args.head, train_videos=args.train_videos, epochs=args.epochs)
    origin = Path(args.from_galleries or bench.root)
    model, facts = train_head(bench, hard, origin / f"head-{hard.head}")
    print(json.dumps({k: v for k, v in facts.items() if k != "config"}, indent=2), flush=True)
    source = StoredSource(str(origin), "hard") if args.from_galleries else HardSource(bench, hard, model)
    if args.build_only:
        for size in bench.sizes:
            load_or_build(bench, size, source)
        return
    report = run_search_bench(bench, source)
    report["head"] = facts
    Path(bench.output).write_text(json.dumps(report, indent=2, default=str))
    print(side_by_side_markdown(report))


if __name__ == "__main__":
    main()
