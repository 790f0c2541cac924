"""Timing the scoring-cost workloads (`glscl.scoring_cost.workloads`) on this machine: each head over an N x N
gallery, sliced and extrapolated linearly in texts when a full run would exceed the time budget, beside the GEMM
rate measured in the same run and a check that the timed scorer matches GLSCL's definition."""

from __future__ import annotations

import dataclasses
import functools
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from glscl.model import GLSCL, TextEncoding, VideoEncoding
from glscl.scoring_cost.workloads import (
    DTYPES,
    ScoringBenchConfig,
    Workload,
    build_workloads,
    first_texts,
    first_videos,
    random_encodings,
    scoring_model,
)
from glscl.similarity import gram_matrices

CHECK_BLOCKS = (5, 7)


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
