"""Ingest stage throughput on this machine: our decode against raw `ffmpeg -f null` on the same file, and frame
encoding for the tiny offline backbone and ViT-B-32 (random weights: the same arithmetic as the real ones).

Usage: .venv/bin/python benchmarks/ingest_bench.py [--seconds 20] [--repeats 3] [--json out.json]
Prints a Markdown table; nothing here is asserted, the numbers go into benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from glscl.backbone import Backbone
from glscl.backbone_config import BackboneConfig
from workers.ingest.decode import decode_frames
from workers.ingest.probe import probe_video
from workers.ingest.sampling import SamplingConfig


def make_clip(path: Path, seconds: int, size: str = "1280x720", fps: int = 30, bitrate: str = "2M") -> Path:
    """A moving test pattern encoded as h264 at a typical web bitrate."""
    subprocess.run(
        [
            "ffmpeg",
            "-y",
            "-loglevel",
            "error",
            "-f",
            "lavfi",
            "-i",
            f"testsrc2=size={size}:rate={fps}:d={seconds}",
            "-c:v",
            "libx264",
            "-b:v",
            bitrate,
            "-pix_fmt",
            "yuv420p",
            str(path),
        ],
        check=True,
    )
    return path


def timed(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    """Median and spread (max - min) of wall seconds over `repeats` runs after one warm-up."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), max(times) - min(times)


def gemm_gflops(threads: int) -> float:
    """The machine's fp32 GEMM rate through torch, the ceiling for encoder arithmetic."""
    torch.set_num_threads(threads)
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    seconds, _ = timed(lambda: a @ b, 5)
    return 2 * 2048**3 / seconds / 1e9


def bench(seconds: int, repeats: int) -> dict:
    """Run every measurement and return the numbers."""
    results: dict = {"threads": torch.get_num_threads(), "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory() as folder:
        clip = make_clip(Path(folder) / "clip.mp4", seconds)
        info = probe_video(clip)
        results["clip"] = {
            "seconds": info.duration,
            "fps": info.fps,
            "frames": info.frame_count,
            "size": f"{info.width}x{info.height}",
            "codec": info.codec,
        }
        null, null_spread = timed(
            lambda: subprocess.run(["ffmpeg", "-loglevel", "error", "-i", str(clip), "-f", "null", "-"], check=True),
            repeats,
        )
        results["ffmpeg_null"] = {"seconds": null, "spread": null_spread, "source_fps": info.frame_count / null}
        for name, sampling in {
            "uniform-12": SamplingConfig("uniform", 12),
            "fps1-64": SamplingConfig("fps", 64),
        }.items():
            decoded = decode_frames(clip, sampling, 224)
            median, spread = timed(lambda s=sampling: decode_frames(clip, s, 224), repeats)
            results[f"decode_{name}"] = {
                "seconds": median,
                "spread": spread,
                "videos_per_s": 1 / median,
                "frames_out_per_s": int(decoded.mask.sum()) / median,
                "source_fps": info.frame_count / median,
                "vs_ffmpeg_null": null / median,
            }
    for config in (BackboneConfig(), BackboneConfig("ViT-B-32", None)):
        backbone = Backbone(config)
        frames = np.random.default_rng(0).integers(0, 255, (32, backbone.image_size, backbone.image_size, 3), np.uint8)
        median, spread = timed(lambda b=backbone, f=frames: b.encode_frames(f), repeats)
        results[f"encode_{config.model_name}"] = {
            "seconds_per_32": median,
            "spread": spread,
            "frames_per_s": 32 / median,
        }
    results["gemm_gflops"] = gemm_gflops(torch.get_num_threads())
    return results


def to_markdown(results: dict) -> str:
    """The numbers as a Markdown table."""
    clip = results["clip"]
    lines = [
        f"Clip: {clip['size']} {clip['codec']} {clip['fps']:.0f} fps, {clip['seconds']:.1f} s, "
        f"{clip['frames']} frames; "
        f"{results['cpus']} CPUs, torch threads {results['threads']}, GEMM {results['gemm_gflops']:.0f} GFLOP/s fp32",
        "",
        "| stage | median s | spread s | videos/s | frames/s | vs `ffmpeg -f null` |",
        "|---|---|---|---|---|---|",
    ]
    null = results["ffmpeg_null"]
    lines.append(
        f"| ffmpeg -f null (decode only) | {null['seconds']:.3f} | {null['spread']:.3f} | "
        f"{1 / null['seconds']:.2f} | {null['source_fps']:.0f} source | 1.00 |"
    )
    for name in ("uniform-12", "fps1-64"):
        row = results[f"decode_{name}"]
        lines.append(
            f"| decode {name} @224 | {row['seconds']:.3f} | {row['spread']:.3f} | {row['videos_per_s']:.2f} | "
            f"{row['frames_out_per_s']:.1f} out ({row['source_fps']:.0f} source) | {row['vs_ffmpeg_null']:.2f} |"
        )
    for name in ("glscl-tiny", "ViT-B-32"):
        row = results[f"encode_{name}"]
        lines.append(
            f"| encode {name} (batch 32) | {row['seconds_per_32']:.3f} | {row['spread']:.3f} | | "
            f"{row['frames_per_s']:.1f} | |"
        )
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    """The benchmark's options."""
    parser = argparse.ArgumentParser(prog="glscl bench ingest", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=20, help="length of the test clip in seconds (default 20)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per stage; the median is kept (default 3)")
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers as JSON")
    return parser


def main(argv: list[str] | None = None) -> None:
    """Command-line entry: run, print Markdown, optionally save JSON."""
    args = build_parser().parse_args(argv)
    results = bench(args.seconds, args.repeats)
    print(to_markdown(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
