"""PNG reports: one place that picks the file-only matplotlib backend and writes and closes figures, so flows and
benchmarks draw their plots the same way and never leak figures in long-running processes. It sits below
pipelines/ so that benchmarks can draw without importing the flows (which import benchmarks)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.figure import Figure


def new_figure(columns: int = 1, size: tuple[float, float] = (6, 4)):
    """A figure and its axes (one per column), for a plot that `save_figure` will write."""
    return plt.subplots(1, columns, figsize=size)


def save_figure(figure: Figure, path: Path) -> Path:
    """Lay out, write as a 100-dpi PNG and close the figure; returns the path."""
    for axis in figure.axes:
        axis.grid(alpha=0.3)
        if axis.get_legend_handles_labels()[0]:
            axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
