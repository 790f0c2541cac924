"""A synthetic ActivityNet-Captions-style benchmark made with ffmpeg: coloured shapes whose captions say what moves.
The demo and the tests train on it; this module generates it, and `order_test` (beside it) checks whether a trained
model reads event order and motion direction.

Each video shows one or two events on a dark background (event 1 over the first half, event 2 over the second;
a lone event spans the whole video). An event is one coloured square or circle crossing the frame left, right,
up or down, captioned "a red square moves left."; a two-event video has two sentences, in order.

No sampling leak: the object does not glide, it holds still at `stops_per_event` evenly spaced positions, one
per equal span of the event ("moves right" visits them left to right, "moves left" the same positions right to
left). A video is thus S = stops x events equal spans whose borders fall on frame borders (the config enforces
it). Every usual uniform sampler of K frames (segment centres or starts, floored or rounded, as in
`workers.ingest.sampling`; `np.linspace(0, N - 1, K)`, rounded or truncated) puts exactly K / S samples into every
span when S divides K (checked for N <= 240, K <= 64; rounded centres need K < N). So the sampled frames are
the same multiset for opposite directions and for swapped events: mean pooling is provably blind to direction
and order, and only the order of the frames tells them apart. Defaults (2 stops, 40 frames) are exact for
K = 4, 8, 12, 16, ...

Videos are rendered by ffmpeg (`color` sources, a `geq` alpha mask for circles, `overlay` with time-dependent
x/y and `enable='between(t,a,b)'`; times sit half a frame off the frame borders). Each lavfi graph is one
ffmpeg-python input; a few videos share one ffmpeg process (process start-up dominates), and a thread pool runs
`workers` processes at a time. Same seed: same captions and byte-identical videos (bitexact, one x264 thread).
"""

from __future__ import annotations

import itertools
import json
import math
import re
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import ffmpeg
import numpy as np

PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (255, 0, 0),
    "green": (0, 255, 0),
    "blue": (0, 96, 255),
    "yellow": (255, 255, 0),
    "purple": (176, 0, 255),
    "white": (255, 255, 255),
    "cyan": (0, 255, 255),
    "orange": (255, 128, 0),
}
BACKGROUND: tuple[int, int, int] = (16, 16, 16)
SHAPES: tuple[str, ...] = ("square", "circle")
OPPOSITE: dict[str, str] = {"left": "right", "right": "left", "up": "down", "down": "up"}
DIRECTIONS: tuple[str, ...] = tuple(OPPOSITE)
SENTENCE = re.compile(r"^a (\w+) (\w+) moves (left|right|up|down)\.$")

ProgressCallback = Callable[[int, int], None]


@dataclass(frozen=True)
class Event:
    """One coloured shape moving in one direction."""

    colour: str
    shape: str
    direction: str

    @property
    def sentence(self) -> str:
        """The caption sentence, e.g. "a red square moves left."."""
        return f"a {self.colour} {self.shape} moves {self.direction}."

    @classmethod
    def from_sentence(cls, sentence: str) -> Event:
        """Parse a sentence written by `sentence`; raise ValueError for anything else."""
        match = SENTENCE.match(sentence.strip())
        if match is None:
            raise ValueError(f"not a synthetic caption sentence: {sentence!r}")
        return cls(*match.groups())

    def flipped(self) -> Event:
        """The same object moving the opposite way."""
        return Event(self.colour, self.shape, OPPOSITE[self.direction])


@dataclass
class SyntheticConfig:
    """What to generate: split sizes, seed, frame geometry and timing, objects, and parallelism."""

    out_dir: Path
    n_train: int = 300
    n_val: int = 100
    seed: int = 0
    size: int = 64
    duration: float = 4.0
    fps: int = 10
    colours: tuple[str, ...] = ("red", "green", "blue", "yellow", "purple", "white")
    shapes: tuple[str, ...] = SHAPES
    object_size: int = 16
    two_event_fraction: float = 0.9
    stops_per_event: int = 2
    workers: int = 2
    videos_per_process: int = 8
    crf: int = 12

    def __post_init__(self) -> None:
        self.out_dir = Path(self.out_dir)
        problems = self._problems()
        if problems:
            raise ValueError("SyntheticConfig: " + "; ".join(problems))

    def _problems(self) -> list[str]:
        """Every violated constraint, as messages."""
        frames = self.duration * self.fps
        checks = [
            (self.n_train >= 0 and self.n_val >= 0, "n_train and n_val must not be negative"),
            (self.seed >= 0, "seed must not be negative"),
            (self.size % 2 == 0 and self.object_size % 2 == 0, "size and object_size must be even (yuv420p)"),
            (0 < self.object_size < self.size, "object_size must be positive and smaller than size"),
            (self.stops_per_event >= 2, "stops_per_event must be at least 2"),
            (
                abs(frames - round(frames)) < 1e-9 and round(frames) % (2 * self.stops_per_event) == 0,
                f"duration x fps = {frames:g} frames must be a multiple of 2 x stops_per_event "
                f"= {2 * self.stops_per_event} so that every stop spans whole frames",
            ),
            (bool(self.colours) and set(self.colours) <= set(PALETTE), f"colours must come from {sorted(PALETTE)}"),
            (bool(self.shapes) and set(self.shapes) <= set(SHAPES), f"shapes must come from {SHAPES}"),
            (0.0 <= self.two_event_fraction <= 1.0, "two_event_fraction must be within [0, 1]"),
            (
                self.two_event_fraction == 0 or len(self.colours) * len(self.shapes) >= 2,
                "two-event videos need at least two distinct objects (colour x shape)",
            ),
            (self.workers >= 1 and self.videos_per_process >= 1, "workers and videos_per_process must be >= 1"),
        ]
        return [message for ok, message in checks if not ok]

    @property
    def n_frames(self) -> int:
        """Frames per video."""
        return round(self.duration * self.fps)


@dataclass(frozen=True)
class SyntheticDataset:
    """Where a generated dataset lies, its split sizes and how long generation took."""

    out_dir: Path
    video_dir: Path
    train_annotations: Path
    val_annotations: Path
    n_train: int
    n_val: int
    elapsed_s: float

    @property
    def n_videos(self) -> int:
        """Videos in both splits."""
        return self.n_train + self.n_val


@dataclass(frozen=True)
class _Video:
    split: str
    video_id: str
    events: tuple[Event, ...]


def object_position(config: SyntheticConfig, direction: str, frame: int, event_frames: int) -> tuple[int, int]:
    """Top-left (x, y) of an event's object at `frame`, counted from the event's start, in an event of
    `event_frames` frames: the object holds one of `stops_per_event` evenly spaced stops per equal span."""
    stops = config.stops_per_event
    travel = config.size - config.object_size
    stop = frame * stops // event_frames
    if direction in ("left", "up"):
        stop = stops - 1 - stop
    along = 2 * round(stop * travel / (2 * (stops - 1)))
    across = travel // 4 * 2
    return (along, across) if direction in ("left", "right") else (across, along)


def _event_spans(config: SyntheticConfig, n_events: int) -> list[tuple[int, int]]:
    """[start, end) frames of each event: the whole video, or its two halves."""
    frames = config.n_frames
    return [(0, frames)] if n_events == 1 else [(0, frames // 2), (frames // 2, frames)]


def frame_objects(config: SyntheticConfig, events: Sequence[Event]) -> list[tuple[Event, int, int]]:
    """For every frame of a video with these events: the visible event and its object's top-left (x, y)."""
    objects = []
    for event, (start, end) in zip(events, _event_spans(config, len(events)), strict=True):
        objects += [(event, *object_position(config, event.direction, f, end - start)) for f in range(end - start)]
    return objects


def order_test_candidates(sentences: Sequence[str]) -> list[list[str]]:
    """The order test's four captions for a two-event video: true, events swapped, first direction flipped,
    second direction flipped (true first)."""
    if len(sentences) != 2:
        raise ValueError(f"the order test needs a two-sentence caption, got {len(sentences)} sentences")
    first, second = (Event.from_sentence(s) for s in sentences)
    return [
        [first.sentence, second.sentence],
        [second.sentence, first.sentence],
        [first.flipped().sentence, second.sentence],
        [first.sentence, second.flipped().sentence],
    ]


def _caption_pools(config: SyntheticConfig) -> tuple[list[tuple[Event, ...]], list[tuple[Event, ...]]]:
    """All one-event captions, and all two-event captions whose objects differ."""
    singles = [Event(*c) for c in itertools.product(config.colours, config.shapes, DIRECTIONS)]
    pairs = [(a, b) for a, b in itertools.product(singles, repeat=2) if (a.colour, a.shape) != (b.colour, b.shape)]
    return [(event,) for event in singles], pairs


def _draw(pool: list[tuple[Event, ...]], count: int, rng: np.random.Generator) -> list[tuple[Event, ...]]:
    """`count` captions from `pool`, all distinct while the pool lasts, then repeating in a new random order."""
    order: list[int] = []
    while len(order) < count:
        order += rng.permutation(len(pool)).tolist()
    return [pool[i] for i in order[:count]]


def _plan(config: SyntheticConfig) -> list[_Video]:
    """Which captions each split's videos get, and their ids, deterministically from the seed."""
    rng = np.random.default_rng(config.seed)
    splits = {"train": config.n_train, "val": config.n_val}
    n_two = {split: round(n * config.two_event_fraction) for split, n in splits.items()}
    singles, pairs = _caption_pools(config)
    drawn_one = iter(_draw(singles, sum(splits.values()) - sum(n_two.values()), rng))
    drawn_two = iter(_draw(pairs, sum(n_two.values()), rng))
    videos: list[_Video] = []
    for split, n in splits.items():
        events = [next(drawn_one) for _ in range(n - n_two[split])] + [next(drawn_two) for _ in range(n_two[split])]
        for order in rng.permutation(n):
            videos.append(_Video(split, f"v_syn{config.seed}_{len(videos):05d}", events[order]))
    return videos


def _annotation(config: SyntheticConfig, video: _Video) -> dict[str, object]:
    """The ActivityNet Captions entry of one video."""
    spans = _event_spans(config, len(video.events))
    return {
        "duration": config.n_frames / config.fps,
        "timestamps": [[start / config.fps, end / config.fps] for start, end in spans],
        "sentences": [event.sentence for event in video.events],
    }


def _hex(colour: tuple[int, int, int]) -> str:
    return "0x{:02X}{:02X}{:02X}".format(*colour)


def _seconds(frame: float, config: SyntheticConfig) -> str:
    """The time half a frame before `frame` starts, so float error in `t` cannot move a border."""
    return f"{(frame - 0.5) / config.fps:.6f}"


def _shape_source(config: SyntheticConfig, event: Event) -> str:
    """A lavfi source of the event's object: a colour square, made round by an alpha mask when a circle."""
    side, rgb = config.object_size, PALETTE[event.colour]
    source = f"color=c={_hex(rgb)}:s={side}x{side}:r={config.fps}:d={config.n_frames / config.fps}"
    if event.shape == "square":
        return source
    centre, radius = (side - 1) / 2, side / 2
    red, green, blue = rgb
    mask = f"255*lte(hypot(X-{centre},Y-{centre}),{radius})"
    return f"{source},format=rgba,geq=r={red}:g={green}:b={blue}:a='{mask}'"


def _stop_expressions(config: SyntheticConfig, event: Event, start: int, end: int) -> tuple[str, str]:
    """ffmpeg x and y expressions of time: the stop positions of `object_position`, switched at span borders."""
    frames, stops = end - start, config.stops_per_event
    borders = [start + s * frames // stops for s in range(1, stops)]
    positions = [object_position(config, event.direction, s * frames // stops, frames) for s in range(stops)]
    expressions = []
    for axis in (0, 1):
        expression = str(positions[-1][axis])
        for border, position in zip(reversed(borders), reversed(positions[:-1]), strict=True):
            expression = f"if(lt(t,{_seconds(border, config)}),{position[axis]},{expression})"
        expressions.append(expression)
    return expressions[0], expressions[1]


def _lavfi_graph(config: SyntheticConfig, events: Sequence[Event]) -> str:
    """One video as a lavfi filter graph: the background, then one timed overlay per event."""
    size, seconds = config.size, config.n_frames / config.fps
    parts = [f"color=c={_hex(BACKGROUND)}:s={size}x{size}:r={config.fps}:d={seconds}[v0]"]
    spans = _event_spans(config, len(events))
    for index, (event, (start, end)) in enumerate(zip(events, spans, strict=True)):
        x, y = _stop_expressions(config, event, start, end)
        enable = f"between(t,{_seconds(start, config)},{_seconds(end, config)})"
        output = "" if index == len(events) - 1 else f"[v{index + 1}]"
        parts.append(f"{_shape_source(config, event)}[o{index}]")
        parts.append(f"[v{index}][o{index}]overlay=x='{x}':y='{y}':enable='{enable}'{output}")
    return ";".join(parts)


def _render(config: SyntheticConfig, videos: Sequence[_Video], video_dir: Path) -> int:
    """Encode a few videos (h264, yuv420p) with one ffmpeg process; return how many."""
    outputs = [
        ffmpeg.input(_lavfi_graph(config, video.events), f="lavfi").output(
            str(video_dir / f"{video.video_id}.mp4"),
            vcodec="libx264",
            pix_fmt="yuv420p",
            preset="veryfast",
            crf=config.crf,
            threads=1,
            frames=config.n_frames,
            fflags="+bitexact",
            map_metadata=-1,
            **{"flags:v": "+bitexact"},
        )
        for video in videos
    ]
    command = ffmpeg.merge_outputs(*outputs).overwrite_output().global_args("-nostdin", "-loglevel", "error")
    try:
        command.run(capture_stdout=True, capture_stderr=True)
    except ffmpeg.Error as error:
        names = ", ".join(video.video_id for video in videos)
        raise RuntimeError(f"ffmpeg failed on {names}: {error.stderr.decode(errors='replace')[-2000:]}") from None
    return len(videos)


def _stderr_progress(start: float) -> ProgressCallback:
    """A progress callback that prints a line to stderr at every further tenth done."""
    printed = -1

    def report(done: int, total: int) -> None:
        nonlocal printed
        tenth = done * 10 // max(total, 1)
        if tenth > printed:
            printed = tenth
            print(f"synthetic: {done}/{total} videos ({time.perf_counter() - start:.1f} s)", file=sys.stderr)

    return report


def _write_json(path: Path, annotations: dict[str, object]) -> None:
    path.write_text(json.dumps(annotations, indent=1) + "\n")


def generate_synthetic_dataset(config: SyntheticConfig, progress: ProgressCallback | None = None) -> SyntheticDataset:
    """Render the videos into `out_dir/videos/v_<id>.mp4` and write `out_dir/train.json` and
    `out_dir/val_1.json` (ActivityNet Captions format). `progress(done, total)` is called as batches finish
    (by default a line to stderr every tenth). Existing files of the same names are overwritten."""
    start = time.perf_counter()
    report = progress or _stderr_progress(start)
    video_dir = config.out_dir / "videos"
    video_dir.mkdir(parents=True, exist_ok=True)
    videos = _plan(config)
    per_process = max(1, min(config.videos_per_process, math.ceil(len(videos) / config.workers)))
    batches = [videos[i : i + per_process] for i in range(0, len(videos), per_process)]
    done = 0
    with ThreadPoolExecutor(max_workers=config.workers) as pool:
        for count in pool.map(lambda batch: _render(config, batch, video_dir), batches):
            done += count
            report(done, len(videos))
    paths = {"train": config.out_dir / "train.json", "val": config.out_dir / "val_1.json"}
    for split, path in paths.items():
        _write_json(path, {v.video_id: _annotation(config, v) for v in videos if v.split == split})
    return SyntheticDataset(
        out_dir=config.out_dir,
        video_dir=video_dir,
        train_annotations=paths["train"],
        val_annotations=paths["val"],
        n_train=config.n_train,
        n_val=config.n_val,
        elapsed_s=time.perf_counter() - start,
    )
