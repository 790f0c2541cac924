"""PNG reports: one place that picks the file-only matplotlib backend and writes and closes figures, so flows and
benchmarks draw their plots the same way and never leak figures in long-running processes. It sits below
pipelines/ so that benchmarks can draw without importing the flows (which import benchmarks)."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from glscl.metrics import RankAccumulator


def new_figure(columns: int = 1, size: tuple[float, float] = (6, 4)):
    """A figure and its axes (one per column), for a plot that `save_figure` will write."""
    return plt.subplots(1, columns, figsize=size)


def save_figure(figure: Figure, path: Path) -> Path:
    """Lay out, write as a 100-dpi PNG and close the figure (with a legend where the axes have labelled series and
    none placed yet); returns the path."""
    for axis in figure.axes:
        axis.grid(alpha=0.3)
        if axis.get_legend_handles_labels()[0] and axis.get_legend() is None:
            axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def plot_recall(accumulator: RankAccumulator, path: Path) -> Path:
    """Recall@K curves (both directions) of an evaluation, as a PNG."""
    figure, axis = new_figure()
    for name, ranks in (("text-to-video", accumulator.t2v_ranks()), ("video-to-text", accumulator.v2t_ranks())):
        ranks = np.sort(ranks.numpy())
        ks = np.unique(np.concatenate([np.geomspace(1, ranks.max(), 50).round(), [1, 5, 10, 50]]))
        axis.plot(ks, [100.0 * np.mean(ranks <= k) for k in ks], label=name)
    axis.set(xscale="log", xlabel="K", ylabel="recall@K (%)", title="exact GLSCL retrieval")
    return save_figure(figure, path)


def plot_training_curves(history: list[dict], path: Path) -> Path:
    """Loss terms per logged step and held-out R@1 per evaluation, as a PNG."""
    steps = [r for r in history if r.get("event") == "step"]
    evals = [r for r in history if r.get("event") == "eval"]
    figure, (loss_axis, recall_axis) = new_figure(2, (10, 4))
    for term in ("total", "contrastive", "icl", "idl"):
        if steps and term in steps[0]:
            loss_axis.plot([r["step"] for r in steps], [r[term] for r in steps], label=term)
    loss_axis.set(xlabel="step", ylabel="loss", title="training loss")
    for direction in ("t2v", "v2t"):
        recall_axis.plot([r["step"] for r in evals], [r[direction]["R@1"] for r in evals], marker="o", label=direction)
    recall_axis.set(xlabel="step", ylabel="R@1 (%)", title="held-out R@1")
    return save_figure(figure, path)
