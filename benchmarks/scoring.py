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
import json
import shlex
import sys
from pathlib import Path
from typing import Any

import numpy as np

from glscl.scoring_cost.timing import run_scoring_bench
from glscl.scoring_cost.workloads import DTYPES, HEADS, ScoringBenchConfig

HEAD_LABELS = {
    "glscl": "GLSCL global+local (Gram)",
    "glscl_global": "GLSCL global (Gram)",
    "glscl_local": "GLSCL local",
    "xpool": "X-Pool-style head",
    "meanpool": "mean pooling",
}


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
