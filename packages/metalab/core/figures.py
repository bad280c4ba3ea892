"""Figure helpers on matplotlib's Agg canvas (no display, no global pyplot state)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from numpy.typing import ArrayLike

from metalab.core.stats import LogLogFit, fit_loglog

__all__ = ["plot_curves", "plot_heatmap", "plot_loglog_fit"]

Curve = tuple[ArrayLike, ArrayLike]
_COLOURS = tuple(f"C{i}" for i in range(10) if i != 7)  # C7 is the grey of the hlines
_LINESTYLES = ("-", "--", ":", "-.")


def _line_style(index: int) -> tuple[str, str]:
    """``(colour, dash)`` of the ``index``-th curve: distinct for up to 36 curves.

    matplotlib's default cycle repeats after 10 colours, which made curve 11 look like
    curve 1; the dash changes with every pass through the colours instead.
    """
    passes, colour = divmod(index, len(_COLOURS))
    return _COLOURS[colour], _LINESTYLES[passes % len(_LINESTYLES)]


def _save(fig: Figure, path: str | os.PathLike[str]) -> Path:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(target, dpi=120)
    return target


def plot_curves(
    path: str | os.PathLike[str],
    curves: Mapping[str, Curve],
    *,
    xlabel: str,
    ylabel: str,
    title: str | None = None,
    logx: bool = False,
    logy: bool = False,
    hlines: Mapping[str, float] | None = None,
) -> Path:
    """One line per named curve ``(x, y)``, with optional labelled horizontal references."""
    fig = Figure(figsize=(6.4, 4.2))
    ax = fig.add_subplot()
    for index, (label, (xs, ys)) in enumerate(curves.items()):
        color, dash = _line_style(index)
        ax.plot(np.asarray(xs), np.asarray(ys), label=label, color=color, linestyle=dash)
    for label, level in (hlines or {}).items():
        ax.axhline(level, linestyle="--", color="gray", linewidth=1)
        ax.annotate(label, (0.01, level), xycoords=("axes fraction", "data"), fontsize=8)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title or "")
    if logx:
        ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    if curves:
        ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_loglog_fit(
    path: str | os.PathLike[str],
    x: ArrayLike,
    y: ArrayLike,
    *,
    xlabel: str,
    ylabel: str,
    fit: LogLogFit | None = None,
    reference_slope: float | None = None,
    title: str | None = None,
) -> LogLogFit:
    """Scatter ``y`` vs ``x`` on log-log axes with the fitted line; return the fit.

    ``reference_slope`` draws the predicted power law through the first point, so the
    measured slope can be compared with a theorem's at a glance.
    """
    xs, ys = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    fit = fit or fit_loglog(xs, ys)
    fig = Figure(figsize=(6.4, 4.2))
    ax = fig.add_subplot()
    ax.loglog(xs, ys, "o", label="measured")
    grid = np.geomspace(xs.min(), xs.max(), 50)
    ax.loglog(
        grid,
        fit.predict(grid),
        "-",
        label=f"fit slope {fit.slope:.3f} [{fit.ci_low:.3f}, {fit.ci_high:.3f}]",
    )
    if reference_slope is not None:
        ax.loglog(
            grid,
            ys[0] * (grid / xs[0]) ** reference_slope,
            "--",
            label=f"predicted slope {reference_slope:.3f}",
        )
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title or "")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")
    _save(fig, path)
    return fit


def plot_heatmap(
    path: str | os.PathLike[str],
    values: ArrayLike,
    *,
    x: ArrayLike,
    y: ArrayLike,
    xlabel: str,
    ylabel: str,
    title: str | None = None,
    log_scale: bool = False,
    trajectories: Mapping[str, Sequence[Sequence[float]] | np.ndarray] | None = None,
) -> Path:
    """Heat map of ``values[i, j]`` at ``(x[j], y[i])`` with optional 2-D trajectories on top."""
    z = np.asarray(values, dtype=float)
    if log_scale:
        z = np.log10(np.clip(z, np.finfo(float).tiny, None))
    fig = Figure(figsize=(5.6, 4.8))
    ax = fig.add_subplot()
    mesh = ax.pcolormesh(np.asarray(x), np.asarray(y), z, shading="auto", cmap="viridis")
    fig.colorbar(mesh, ax=ax, label="log10 value" if log_scale else "value")
    for label, points in (trajectories or {}).items():
        path_xy = np.asarray(points, dtype=float)
        ax.plot(path_xy[:, 0], path_xy[:, 1], ".-", markersize=3, label=label)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title or "")
    if trajectories:
        ax.legend(fontsize=8)
    return _save(fig, path)
