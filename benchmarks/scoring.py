"""Exhaustive text x video scoring time: GLSCL's global-local scorer against an X-Pool-style cross-attention head
and mean pooling, on random per-item encodings at ActivityNet-like sizes (F=64 frames, d=512, K=8 queries).

Everything runs in one process with the same threads, device and dtype. Per-item encodings (GLSCL's temporally
encoded frames, masks, Gram matrices, sentence and local concept vectors; mean pooling's pooled video vectors)
are built outside the timed region. X-Pool's per-video key/value/output projections run inside
`XPoolHead.score`, so they are included in its time; they are also timed on their own and reported.

When a full N x N run would exceed `max_seconds`, the first m texts are scored against all N videos and the time
is extrapolated linearly in texts (text-independent per-video work is measured separately and not scaled). The
slice starts at one text block of the head's tiling and doubles while it fits the budget: GLSCL's per-text cost
falls about 5x from 16 to 512 texts per block on a CPU, so smaller slices would overstate it.
Times are compared with the analytic FLOP count and the GEMM rate measured in the same run.

Usage: .venv/bin/python -m benchmarks.scoring [--sizes 1000 4917] [--max-seconds 10] [--dtype bf16]
       [--device cuda] [--json out.json] [--markdown out.md] [--plot out.png]
Nothing here is asserted on time; numbers go into benchmarks/RESULTS.md with the command that produced them.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from glscl.baselines import MeanPooling, XPoolHead
from glscl.config import DEFAULT_BLOCK, GLSCLConfig
from glscl.model import GLSCL, TextEncoding, VideoEncoding
from glscl.similarity import gram_matrices, local_scores

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
HEADS = ("glscl", "glscl_global", "glscl_local", "xpool", "meanpool")
HEAD_LABELS = {
    "glscl": "GLSCL global+local (Gram)",
    "glscl_global": "GLSCL global (Gram)",
    "glscl_local": "GLSCL local",
    "xpool": "X-Pool-style head",
    "meanpool": "mean pooling",
}
CHECK_BLOCKS = (5, 7)


@dataclass
class ScoringBenchConfig:
    """Sizes, shapes and timing policy of the scoring benchmark.

    `sizes` get the full table, `scaling_sizes` are extra gallery sizes for the scaling table and plot; every
    size means N texts x N videos. `max_seconds` bounds the text-proportional part of one timed call, except that
    a slice is never smaller than one text block (`glscl_block`, `xpool_text_block`; `min_texts` for the untiled
    local and mean-pooling heads).
    """

    sizes: tuple[int, ...] = (1000, 4917)
    scaling_sizes: tuple[int, ...] = (250, 500, 1000, 2000, 4917)
    frames: int = 64
    dim: int = 512
    queries: int = 8
    dtype: str = "fp32"
    device: str = "cpu"
    threads: int | None = None
    max_seconds: float = 10.0
    warmup: int = 1
    repeats: int = 3
    min_texts: int = 64
    glscl_block: int = DEFAULT_BLOCK[0]
    glscl_video_block: int = DEFAULT_BLOCK[1]
    xpool_text_block: int = 128
    xpool_video_block: int = 64
    gemm_size: int = 2048
    check_size: int = 24
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.sizes or min(self.sizes) < 1 or (self.scaling_sizes and min(self.scaling_sizes) < 1):
            raise ValueError(f"sizes must be non-empty and >= 1, got {self.sizes} and {self.scaling_sizes}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {self.dtype!r}")
        if self.max_seconds <= 0 or self.repeats < 1 or self.warmup < 0:
            raise ValueError("need max_seconds > 0, repeats >= 1 and warmup >= 0")
        if min(self.frames, self.dim, self.queries, self.min_texts, self.check_size, self.gemm_size) < 1:
            raise ValueError("frames, dim, queries, min_texts, check_size and gemm_size must be >= 1")

    def all_sizes(self) -> list[int]:
        """Every gallery size to measure, ascending."""
        return sorted(set(self.sizes) | set(self.scaling_sizes))


@dataclass(frozen=True)
class Workload:
    """One head's exhaustive scoring: `run(m)` scores the first m texts against every video.

    `min_texts` is the smallest text slice worth timing: one text block of the head's own tiling, so a slice runs
    the same kernel shapes as the full run. `per_video` is the head's per-video work; it runs inside `run` when
    `per_video_in_run` (then it is subtracted before extrapolating), otherwise it was done beforehand and is timed
    only for the record.
    """

    head: str
    run: Callable[[int], Tensor]
    pair_flops: float
    video_flops: float
    min_texts: int
    compute_dtype: torch.dtype
    per_video: Callable[[], object] | None = None
    per_video_in_run: bool = False


# ---------------------------------------------------------------------------------------------------- FLOP model


def glscl_global_flops(frames: int, dim: int) -> float:
    """Per pair: logits F*d MACs, softmax ~5F, numerator F MACs, |pooled|^2 = w^T G w with F^2 + F MACs."""
    return 2 * (frames * dim + frames * frames + 2 * frames) + 5 * frames


def glscl_local_flops(dim: int, queries: int) -> float:
    """Per pair: one dot product of the K*d concatenated concept vectors."""
    return 2 * queries * dim


def xpool_pair_flops(frames: int, dim: int) -> float:
    """Per pair of `XPoolHead.pool` with one head: logits F*d MACs, softmax ~5F, weights @ values F*d MACs,
    residual Linear d^2 MACs, two LayerNorms (~8d each), biases and residual (~3d), normalise (3d), cosine (2d)."""
    return 2 * (2 * frames * dim + dim * dim) + 5 * frames + 24 * dim


def xpool_video_flops(frames: int, dim: int) -> float:
    """Per video of `XPoolHead.encode_videos`: key, value and folded output projections (3 F d^2 MACs), input
    LayerNorm and biases (~10 F d)."""
    return 6 * frames * dim * dim + 10 * frames * dim


def meanpool_flops(dim: int) -> float:
    """Per pair: one d-dimensional dot product."""
    return 2 * dim


# ------------------------------------------------------------------------------------------------------ inputs


def random_encodings(num: int, config: ScoringBenchConfig, device: torch.device) -> tuple[TextEncoding, VideoEncoding]:
    """Random per-item GLSCL encodings for `num` texts and `num` videos, in the benchmark dtype.

    Videos keep between F/2 and F valid frames; padded frames are zeroed as `GLSCL.encode_video` does. Local
    concept vectors are unit-norm.
    """
    gen = torch.Generator().manual_seed(config.seed)
    frames, dim, queries = config.frames, config.dim, config.queries
    lengths = torch.randint(max(1, frames // 2), frames + 1, (num,), generator=gen)
    mask = torch.arange(frames) < lengths[:, None]
    video_frames = torch.randn(num, frames, dim, generator=gen).masked_fill(~mask[..., None], 0.0)
    sentence = torch.randn(num, dim, generator=gen)
    text_local = F.normalize(torch.randn(num, queries, dim, generator=gen), dim=-1)
    video_local = F.normalize(torch.randn(num, queries, dim, generator=gen), dim=-1)
    dtype = DTYPES[config.dtype]
    text = TextEncoding(sentence.to(device, dtype), text_local.to(device, dtype))
    video = VideoEncoding(video_frames.to(device, dtype), mask.to(device), video_local.to(device, dtype))
    return text, video


def first_videos(video: VideoEncoding, num: int) -> VideoEncoding:
    """The first `num` videos (views, no copy)."""
    return VideoEncoding(video.frames[:num], video.mask[:num], video.local[:num])


def first_texts(text: TextEncoding, num: int) -> TextEncoding:
    """The first `num` texts (views, no copy)."""
    return TextEncoding(text.sentence[:num], text.local[:num])


def scoring_model(config: ScoringBenchConfig, device: torch.device) -> GLSCL:
    """A GLSCL head whose `score` is the timed scorer; its encoders are never run, so they are kept minimal."""
    glscl_config = GLSCLConfig(
        embed_dim=config.dim,
        max_frames=config.frames,
        frame_position_size=max(config.frames, 77),
        num_queries=config.queries,
        temporal_layers=1,
        temporal_heads=1,
        temporal_ffn=config.dim,
        decoder_layers=1,
        decoder_heads=1,
        decoder_ffn=config.dim,
    )
    return GLSCL(glscl_config).to(device).eval()


# --------------------------------------------------------------------------------------------------- workloads


def build_workloads(
    text: TextEncoding, video: VideoEncoding, config: ScoringBenchConfig, model: GLSCL
) -> list[Workload]:
    """The five timed heads over one gallery; per-video state is precomputed here, outside any timing."""
    frames, dim = config.frames, config.dim
    gram = gram_matrices(video.frames)
    global_flops = glscl_global_flops(frames, dim)
    local_flops = glscl_local_flops(dim, config.queries)
    glscl_dtype = torch.promote_types(torch.float32, video.frames.dtype)
    block = config.glscl_block
    blocks = (config.glscl_block, config.glscl_video_block)

    def glscl(m: int) -> Tensor:
        return model.score(first_texts(text, m), video, blocks, gram)

    def glscl_global(m: int) -> Tensor:
        return model.global_interaction(text.sentence[:m], video.frames, video.mask, blocks, gram)

    def glscl_local(m: int) -> Tensor:
        return local_scores(text.local[:m], video.local)

    def gram_work() -> Tensor:
        return gram_matrices(video.frames)

    return [
        Workload("glscl", glscl, global_flops + local_flops, 0.0, block, glscl_dtype, gram_work),
        Workload("glscl_global", glscl_global, global_flops, 0.0, block, glscl_dtype, gram_work),
        Workload("glscl_local", glscl_local, local_flops, 0.0, config.min_texts, glscl_dtype),
        xpool_workload(text, video, config),
        meanpool_workload(text, video, config),
    ]


def xpool_workload(text: TextEncoding, video: VideoEncoding, config: ScoringBenchConfig) -> Workload:
    """`XPoolHead.score` (one head, eval mode) over the gallery; its per-video projections run inside the call."""
    dtype = video.frames.dtype
    head = XPoolHead(dim=config.dim, num_heads=1).to(video.frames.device, dtype).eval()
    text_block, video_block = config.xpool_text_block, config.xpool_video_block
    num_videos = video.frames.shape[0]

    def run(m: int) -> Tensor:
        return head.score(text.sentence[:m], video.frames, video.mask, text_block, video_block)

    def per_video() -> list[tuple[Tensor, Tensor, Tensor]]:
        starts = range(0, num_videos, video_block)
        return [head.encode_videos(video.frames[s : s + video_block], video.mask[s : s + video_block]) for s in starts]

    pair_flops = xpool_pair_flops(config.frames, config.dim)
    video_flops = xpool_video_flops(config.frames, config.dim)
    return Workload("xpool", run, pair_flops, video_flops, text_block, dtype, per_video, per_video_in_run=True)


def meanpool_workload(text: TextEncoding, video: VideoEncoding, config: ScoringBenchConfig) -> Workload:
    """Mean pooling: pooled video vectors precomputed (`MeanPooling.embed_videos`), scoring is one matmul."""
    pool = MeanPooling()
    pooled = pool.embed_videos(video.frames, video.mask)

    def run(m: int) -> Tensor:
        return F.normalize(text.sentence[:m], dim=-1) @ pooled.T

    def per_video() -> Tensor:
        return pool.embed_videos(video.frames, video.mask)

    return Workload("meanpool", run, meanpool_flops(config.dim), 0.0, config.min_texts, pooled.dtype, per_video)


# ------------------------------------------------------------------------------------------------------ timing


def synchronizer(device: torch.device) -> Callable[[], None]:
    """A function that waits for queued device work (a no-op on the CPU)."""
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def timed(fn: Callable[[], object], sync: Callable[[], None]) -> float:
    """Wall seconds of one call, device work included."""
    sync()
    start = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - start


def repeat(fn: Callable[[], object], warmup: int, repeats: int, sync: Callable[[], None]) -> list[float]:
    """Seconds of `repeats` calls after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
        sync()
    return [timed(fn, sync) for _ in range(repeats)]


def next_slice(sliced: int, num: int, seconds: float, budget: float) -> int:
    """Doubling step: twice `sliced` (at most `num`) texts when that is predicted to fit the budget at the
    per-text rate of the last call (`seconds` for `sliced` texts), else `sliced` itself (stop growing)."""
    bigger = min(num, 2 * sliced)
    return bigger if seconds / sliced * bigger <= budget else sliced


def extrapolate(seconds: float, fixed: float, sliced: int, num: int) -> float:
    """Full-gallery time from a slice of `sliced` texts: text-independent `fixed` plus the rest scaled to `num`."""
    if sliced == num:
        return seconds
    return fixed + max(seconds - fixed, 0.0) * num / sliced


def spread(values: list[float]) -> dict[str, float]:
    """Median, minimum and maximum."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def grow_slice(work: Workload, num: int, fixed: float, budget: float, sync: Callable[[], None]) -> int:
    """Texts to time: start at one text block (`work.min_texts`) and double while the text-proportional time is
    predicted to fit the budget; these calls double as warm-up. Per-text cost falls as slices grow (wider
    kernels), so the prediction errs towards smaller slices and longer extrapolation, never towards overruns."""
    sliced = min(num, work.min_texts)
    while sliced < num:
        seconds = max(timed(functools.partial(work.run, sliced), sync) - fixed, 1e-9)
        bigger = next_slice(sliced, num, seconds, budget)
        if bigger == sliced:
            break
        sliced = bigger
    return sliced


def measure(work: Workload, num: int, config: ScoringBenchConfig, sync: Callable[[], None]) -> dict[str, Any]:
    """Time one head over a num x num gallery (sliced and extrapolated when over budget)."""
    per_video = repeat(work.per_video, config.warmup, config.repeats, sync) if work.per_video else []
    fixed = statistics.median(per_video) if work.per_video_in_run else 0.0
    sliced = grow_slice(work, num, fixed, config.max_seconds, sync)
    times = repeat(lambda: work.run(sliced), config.warmup, config.repeats, sync)
    seconds = spread([extrapolate(t, fixed, sliced, num) for t in times])
    return {
        "head": work.head,
        "n": num,
        "seconds": seconds["median"],
        "seconds_min": seconds["min"],
        "seconds_max": seconds["max"],
        "slice_seconds": times,
        "extrapolated": sliced < num,
        "slice_texts": sliced,
        "per_video_seconds": statistics.median(per_video) if per_video else None,
        "per_video_in_timing": work.per_video_in_run,
        "flops": num * num * work.pair_flops + num * work.video_flops,
        "pair_flops": work.pair_flops,
        "compute_dtype": str(work.compute_dtype).removeprefix("torch."),
    }


def gemm_rates(config: ScoringBenchConfig, dtype: torch.dtype, device: torch.device, sync: Callable[[], None]) -> list:
    """Square-matmul rates in GFLOP/s in `dtype`, one per timed run (at least 5)."""
    size = config.gemm_size
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    times = repeat(lambda: a @ b, max(1, config.warmup), max(5, config.repeats), sync)
    return [2 * size**3 / t / 1e9 for t in times]


def gemm_summary(size: int, start: list[float], end: list[float]) -> dict[str, Any]:
    """The GEMM rate used for FLOP floors (median over the runs before and after the heads) and its spread."""
    rates = spread(start + end)
    return {
        "size": size,
        "gflops": rates["median"],
        "gflops_min": rates["min"],
        "gflops_max": rates["max"],
        "gflops_start": statistics.median(start),
        "gflops_end": statistics.median(end),
    }


# ------------------------------------------------------------------------------------------------- correctness


def direct_glscl_scores(text: TextEncoding, video: VideoEncoding, temperature: float, local_weight: float) -> Tensor:
    """GLSCL scores from the definition in float64: pooled frames materialised per pair, no Gram trick."""
    t, v = text.sentence.double(), video.frames.double()
    logits = torch.einsum("td,vfd->tvf", t, v) / temperature
    weights = logits.masked_fill(~video.mask, -torch.inf).softmax(-1)
    pooled = torch.einsum("tvf,vfd->tvd", weights, v)
    glob = (t[:, None] * pooled).sum(-1) / (t.norm(dim=-1)[:, None] * pooled.norm(dim=-1))
    local = torch.einsum("tkd,vkd->tv", text.local.double(), video.local.double()) / text.local.shape[1]
    return glob + local_weight * local


def check_scorer(model: GLSCL, text: TextEncoding, video: VideoEncoding, num: int) -> dict[str, Any]:
    """Assert the timed scorer (`GLSCL.score`, blocked, cached Gram) matches the direct formula on num x num."""
    text, video = first_texts(text, num), first_videos(video, num)
    blocked = model.score(text, video, CHECK_BLOCKS, gram_matrices(video.frames))
    direct = direct_glscl_scores(text, video, model.config.global_temperature, model.config.local_weight)
    torch.testing.assert_close(blocked.double(), direct, rtol=1e-4, atol=1e-4)
    return {"size": num, "blocks": list(CHECK_BLOCKS), "max_abs_diff": float((blocked.double() - direct).abs().max())}


# ---------------------------------------------------------------------------------------------------- the run


def machine_info(device: torch.device) -> dict[str, Any]:
    """Where the numbers come from: CPU, accelerator, torch build and threads."""
    info: dict[str, Any] = {
        "cpu": cpu_name(),
        "cpus": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": str(device),
    }
    if device.type == "cuda":
        info["device_name"] = torch.cuda.get_device_name(device)
    return info


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo, else whatever `platform` knows."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def add_ratios(rows: list[dict[str, Any]], gemm: dict[str, dict]) -> None:
    """Fill pairs/s, GFLOP/s, FLOP floor and ratios to GLSCL at the same size into each row."""
    glscl_seconds = {row["n"]: row["seconds"] for row in rows if row["head"] == "glscl"}
    for row in rows:
        rate = gemm[row["compute_dtype"]]["gflops"] * 1e9
        row["pairs_per_s"] = row["n"] ** 2 / row["seconds"]
        row["gflops"] = row["flops"] / row["seconds"] / 1e9
        row["floor_seconds"] = row["flops"] / rate
        row["floor_ratio"] = row["seconds"] / row["floor_seconds"]
        row["ratio_to_glscl"] = row["seconds"] / glscl_seconds[row["n"]]


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per size: X-Pool / GLSCL and GLSCL / mean pooling, in measured time and in analytic FLOPs."""
    by_key = {(row["head"], row["n"]): row for row in rows}
    summary = []
    for num in sorted({row["n"] for row in rows}):
        glscl, xpool, meanpool = (by_key[(head, num)] for head in ("glscl", "xpool", "meanpool"))
        summary.append(
            {
                "n": num,
                "xpool_over_glscl": xpool["seconds"] / glscl["seconds"],
                "xpool_over_glscl_flops": xpool["flops"] / glscl["flops"],
                "glscl_over_meanpool": glscl["seconds"] / meanpool["seconds"],
                "glscl_over_meanpool_flops": glscl["flops"] / meanpool["flops"],
            }
        )
    return summary


def run_scoring_bench(config: ScoringBenchConfig, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Measure every head at every size; returns a JSON-able dict (see `to_markdown` for the layout).

    The GEMM rate is measured before and after the heads, since other load on the machine may change; `log`
    gets one progress line per measurement.
    """
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    device = torch.device(config.device)
    sync = synchronizer(device)
    load_start = os.getloadavg()
    with torch.inference_mode():
        text, video = random_encodings(max(config.all_sizes()), config, device)
        model = scoring_model(config, device)
        correctness = check_scorer(model, text, video, min(config.check_size, text.sentence.shape[0]))
        gemm_start = {dtype: gemm_rates(config, dtype, device, sync) for dtype in gemm_dtypes(config)}
        rows = []
        for num in config.all_sizes():
            for work in build_workloads(first_texts(text, num), first_videos(video, num), config, model):
                rows.append(measure(work, num, config, sync))
                if log:
                    log(f"N={num} {work.head}: {rows[-1]['seconds']:.3g} s (slice of {rows[-1]['slice_texts']} texts)")
        gemm = {
            str(dtype).removeprefix("torch."): gemm_summary(
                config.gemm_size, start, gemm_rates(config, dtype, device, sync)
            )
            for dtype, start in gemm_start.items()
        }
    add_ratios(rows, gemm)
    return {
        "config": dataclasses.asdict(config),
        "machine": machine_info(device) | {"load_average_start": load_start, "load_average_end": os.getloadavg()},
        "gemm": gemm,
        "correctness": correctness,
        "results": rows,
        "summary": summarise(rows),
    }


def gemm_dtypes(config: ScoringBenchConfig) -> list[torch.dtype]:
    """GEMM rates to measure: float32 (GLSCL's scorers always accumulate in it) and the benchmark dtype."""
    return list(dict.fromkeys([torch.float32, DTYPES[config.dtype]]))


# ------------------------------------------------------------------------------------------------------ output


def to_markdown(result: dict[str, Any]) -> str:
    """Header notes, the full table for `config.sizes`, the ratio summary and the scaling table."""
    return "\n".join(
        [*header_lines(result), "", *main_table(result), "", *summary_table(result), "", *scaling_table(result), ""]
    )


def header_lines(result: dict[str, Any]) -> list[str]:
    """Machine, shapes, dtype, GEMM rate, load and the correctness check, one bullet each."""
    config, machine, check = result["config"], result["machine"], result["correctness"]
    device = machine.get("device_name", machine["cpu"])
    gemm = "; ".join(
        f"{name} {g['size']}^2: {g['gflops']:.1f} GFLOP/s (min {g['gflops_min']:.1f}, max {g['gflops_max']:.1f}; "
        f"median before the heads {g['gflops_start']:.1f}, after {g['gflops_end']:.1f})"
        for name, g in result["gemm"].items()
    )
    loads = [" / ".join(f"{x:.2f}" for x in machine[key]) for key in ("load_average_start", "load_average_end")]
    command = [f"- command: `{result['command']}`"] if "command" in result else []
    return [
        "## Exhaustive text x video scoring",
        "",
        *command,
        f"- machine: {machine['device']} ({device}), {machine['threads']} threads, torch {machine['torch']}",
        f"- shapes: F={config['frames']}, d={config['dim']}, K={config['queries']}; inputs {config['dtype']}",
        f"- timing: {config['warmup']} warm-up, median of {config['repeats']} (min-max shown); "
        f"budget {config['max_seconds']} s per call, over it the first m texts are timed and scaled to N",
        f"- GEMM (torch matmul, median): {gemm}",
        f"- load average (1/5/15 min): start {loads[0]}, end {loads[1]}",
        f"- check: `GLSCL.score` (blocks {check['blocks']}, cached Gram) vs direct float64 formula at "
        f"{check['size']}x{check['size']}: max |diff| {check['max_abs_diff']:.1e}",
        "- per-video s: X-Pool's K/V projections run inside `XPoolHead.score` (included in its time); GLSCL's Gram "
        "matrices and mean pooling's pooled vectors are precomputed (not included)",
    ]


def main_table(result: dict[str, Any]) -> list[str]:
    """One row per (size in `config.sizes`, head)."""
    lines = [
        "| N | head | seconds | min-max | pairs/s | x GLSCL | GFLOP/s | FLOP floor s | measured/floor | per-video s "
        "| timing |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    sizes = set(result["config"]["sizes"])
    for row in result["results"]:
        if row["n"] in sizes:
            lines.append(table_row(row))
    return lines


def table_row(row: dict[str, Any]) -> str:
    """A Markdown row of the main table."""
    timing = f"extrapolated from {row['slice_texts']} texts" if row["extrapolated"] else "full"
    per_video = "-"
    if row["per_video_seconds"] is not None:
        per_video = f"{row['per_video_seconds']:.3g} ({'in' if row['per_video_in_timing'] else 'not in'})"
    cells = [
        str(row["n"]),
        HEAD_LABELS[row["head"]],
        f"{row['seconds']:.3g}",
        f"{row['seconds_min']:.3g}-{row['seconds_max']:.3g}",
        f"{row['pairs_per_s']:.3g}",
        f"{row['ratio_to_glscl']:.3g}",
        f"{row['gflops']:.3g}",
        f"{row['floor_seconds']:.3g}",
        f"{row['floor_ratio']:.3g}",
        per_video,
        timing,
    ]
    return "| " + " | ".join(cells) + " |"


def summary_table(result: dict[str, Any]) -> list[str]:
    """Measured and analytic ratios per size."""
    lines = [
        "| N | X-Pool / GLSCL time | X-Pool / GLSCL FLOPs | GLSCL / mean pooling time | GLSCL / mean pooling FLOPs |",
        "|---:|---:|---:|---:|---:|",
    ]
    for s in result["summary"]:
        cells = [
            s["xpool_over_glscl"],
            s["xpool_over_glscl_flops"],
            s["glscl_over_meanpool"],
            s["glscl_over_meanpool_flops"],
        ]
        lines.append(f"| {s['n']} | " + " | ".join(f"{c:.3g}" for c in cells) + " |")
    return lines


def scaling_table(result: dict[str, Any]) -> list[str]:
    """Seconds per head at every measured size (* = extrapolated) and the fitted log-log slope."""
    sizes = sorted({row["n"] for row in result["results"]})
    by_key = {(row["head"], row["n"]): row for row in result["results"]}
    lines = [
        "| head | " + " | ".join(f"N={n}" for n in sizes) + " | log-log slope |",
        "|---|" + "---:|" * (len(sizes) + 1),
    ]
    for head in HEADS:
        rows = [by_key[(head, n)] for n in sizes]
        cells = [f"{r['seconds']:.3g}{'*' if r['extrapolated'] else ''}" for r in rows]
        slope = loglog_slope(sizes, [r["seconds"] for r in rows])
        lines.append(f"| {HEAD_LABELS[head]} | " + " | ".join(cells) + f" | {slope} |")
    return [*lines, "", "\\* extrapolated from a slice of texts"]


def loglog_slope(sizes: list[int], seconds: list[float]) -> str:
    """Least-squares exponent of seconds ~ N^slope, formatted; '-' with fewer than two sizes."""
    if len(sizes) < 2:
        return "-"
    return f"{np.polyfit(np.log(sizes), np.log(seconds), 1)[0]:.2f}"


def save_plot(result: dict[str, Any], path: Path) -> None:
    """Seconds vs N, log-log, one line per head; hollow markers are extrapolated points."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, 5))
    FigureCanvasAgg(figure)
    axes = figure.subplots()
    for head in HEADS:
        rows = sorted((row for row in result["results"] if row["head"] == head), key=lambda row: row["n"])
        (line,) = axes.plot([r["n"] for r in rows], [r["seconds"] for r in rows], "-", label=HEAD_LABELS[head])
        for r in rows:
            face = "none" if r["extrapolated"] else line.get_color()
            axes.plot(r["n"], r["seconds"], "o", color=line.get_color(), markerfacecolor=face)
    axes.set(xscale="log", yscale="log", xlabel="N (texts = videos)", ylabel="seconds, exhaustive N x N")
    machine, config = result["machine"], result["config"]
    axes.set_title(f"{machine.get('device_name', machine['cpu'])}, {machine['threads']} threads, {config['dtype']}")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(title="hollow = extrapolated")
    figure.tight_layout()
    figure.savefig(path, dpi=120)


# --------------------------------------------------------------------------------------------------------- CLI


# What each integer option sets; its default is ScoringBenchConfig's.
_INTEGER_OPTIONS = {
    "frames": "frames per video (F)",
    "dim": "embedding width (D)",
    "queries": "GLSCL learnable queries (K)",
    "warmup": "untimed calls before timing",
    "repeats": "timed calls per measurement (the median is reported)",
    "min_texts": "smallest text slice of the untiled local and mean-pooling heads",
    "glscl_block": "texts per block of the exact GLSCL global score",
    "glscl_video_block": "videos per block of the exact GLSCL global score",
    "xpool_text_block": "texts per block of the X-Pool-style head",
    "xpool_video_block": "videos per block of the X-Pool-style head",
    "gemm_size": "matrix size of the GEMM that measures the machine's FLOP rate",
    "check_size": "gallery size of the correctness check against a float64 reference",
    "seed": "seed of the random features",
}


def build_parser() -> argparse.ArgumentParser:
    """The benchmark's options; defaults come from `ScoringBenchConfig`."""
    defaults = ScoringBenchConfig()
    parser = argparse.ArgumentParser(prog="glscl bench scoring", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes",
        type=int,
        nargs="+",
        default=defaults.sizes,
        help=f"gallery sizes of the full table, N texts x N videos each (default {defaults.sizes})",
    )
    parser.add_argument(
        "--scaling-sizes",
        type=int,
        nargs="*",
        default=defaults.scaling_sizes,
        help=f"extra sizes of the scaling table and plot (default {defaults.scaling_sizes})",
    )
    for name, what in _INTEGER_OPTIONS.items():
        value = getattr(defaults, name)
        parser.add_argument(f"--{name.replace('_', '-')}", type=int, default=value, help=f"{what} (default {value})")
    parser.add_argument(
        "--max-seconds",
        type=float,
        default=defaults.max_seconds,
        help=f"bound on one timed call's text-proportional part (default {defaults.max_seconds})",
    )
    parser.add_argument(
        "--dtype",
        choices=sorted(DTYPES),
        default=defaults.dtype,
        help=f"number format of the features (default {defaults.dtype})",
    )
    parser.add_argument("--device", default=defaults.device, help=f"cpu, cuda or cuda:N (default {defaults.device})")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--json", type=Path, help="write the result dict here")
    parser.add_argument("--markdown", type=Path, help="write the Markdown report here")
    parser.add_argument("--plot", type=Path, help="write a log-log PNG of seconds vs N here")
    return parser


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark from the command line, print the Markdown report and write the requested files."""
    args = build_parser().parse_args(argv)
    output_flags = {"json", "markdown", "plot"}
    options = {k: v for k, v in vars(args).items() if k not in output_flags}
    config = ScoringBenchConfig(**options | {"sizes": tuple(args.sizes), "scaling_sizes": tuple(args.scaling_sizes)})
    result = run_scoring_bench(config, log=lambda line: print(line, file=sys.stderr, flush=True))
    result["command"] = shlex.join(["python", "-m", "benchmarks.scoring", *(sys.argv[1:] if argv is None else argv)])
    report = to_markdown(result)
    print(report)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    if args.markdown:
        args.markdown.write_text(report)
    if args.plot:
        save_plot(result, args.plot)
    return result


if __name__ == "__main__":
    main()
