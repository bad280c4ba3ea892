"""Figures of a search: α per edge over epochs, selected cells' true accuracy over epochs."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

__all__ = ["plot_alpha_per_edge", "plot_selected_accuracy"]


def plot_alpha_per_edge(
    path: str | os.PathLike[str],
    alphas: Sequence[Sequence[Sequence[float]]],
    *,
    ops: Sequence[str],
    edges: Sequence[tuple[int, int]],
    title: str = "",
) -> Path:
    """One panel per edge: softmax(α) of every operation against the search epoch."""
    series = np.asarray(alphas, dtype=float)  # [epochs, E, O]
    epochs = np.arange(1, len(series) + 1)
    cols = min(3, len(edges))
    rows = math.ceil(len(edges) / cols)
    fig = Figure(figsize=(3.4 * cols, 2.6 * rows))
    for e, (i, j) in enumerate(edges):
        ax = fig.add_subplot(rows, cols, e + 1)
        for o, op in enumerate(ops):
            ax.plot(epochs, series[:, e, o], label=op)
        ax.set(title=f"edge {i}→{j}", xlabel="epoch", ylabel="softmax(α)", ylim=(0, 1))
        ax.grid(alpha=0.3)
        if e == 0:
            ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(target, dpi=110)
    return target


def plot_selected_accuracy(
    path: str | os.PathLike[str],
    curves: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    *,
    best: float,
    title: str = "",
) -> Path:
    """Ground-truth accuracy of each method's selected cell against the search epoch."""
    fig = Figure(figsize=(6.4, 4.2))
    ax = fig.add_subplot()
    for label, (xs, ys) in curves.items():
        ax.plot(np.asarray(xs), np.asarray(ys), marker="o" if len(xs) < 12 else None, label=label)
    ax.axhline(best, linestyle="--", color="gray", linewidth=1, label="best cell in table")
    ax.set(xlabel="search epoch", ylabel="ground-truth test accuracy", title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(target, dpi=110)
    return target
