"""Plotting runs as TensorBoard draws them: ``smooth`` (its scalar smoothing), ``plot_scalars`` (the Scalars
dashboard) and ``plot_histograms`` (the Histograms dashboard, overlay mode), as matplotlib Figures."""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from utils.tb.reading import read_histograms, read_scalars


def smooth(values: Sequence[float], weight: float = 0.6) -> np.ndarray:
    """TensorBoard's scalar smoothing: a debiased exponential moving average.

    ``s_t = m_t / (1 - weight**n_t)`` with ``m_t = weight * m_{t-1} + (1 - weight) * x_t``, ``m_0 = 0`` and
    ``n_t`` the number of finite values so far. Non-finite values pass through unsmoothed, and a constant
    series is returned as it is (both as TensorBoard does). ``weight`` in [0, 1): 0 = no smoothing.
    """
    if not 0 <= weight < 1:
        raise ValueError(f"smoothing weight must be in [0, 1), got {weight}")
    x = np.asarray(values, dtype=float)
    if x.size == 0 or np.all(x == x[0]):
        return x.copy()
    out = np.empty_like(x)
    last, count = 0.0, 0
    for i, value in enumerate(x):
        if not math.isfinite(value):
            out[i] = value
            continue
        last = last * weight + (1 - weight) * value
        count += 1
        out[i] = last / (1 - weight**count)
    return out


def _as_runs(runs: str | Path | Mapping[str, str | Path]) -> dict[str, Path]:
    if isinstance(runs, Mapping):
        return {label: Path(path) for label, path in runs.items()}
    return {Path(runs).name: Path(runs)}


def _draw_tag(ax, tag: str, frames: Mapping[str, pd.DataFrame], smoothing: float, logy: bool) -> None:
    """One panel: each run's series of ``tag``, raw values drawn faintly under the smoothed line."""
    import matplotlib.pyplot as plt

    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for (label, frame), color in zip(frames.items(), itertools.cycle(colors)):
        series = frame[frame.tag == tag]
        if series.empty:
            continue
        ax.plot(series.step, series.value, color=color, alpha=0.25, linewidth=1)
        ax.plot(series.step, smooth(series.value.to_numpy(), smoothing), color=color, linewidth=1.6,
                label=label)
    ax.set_title(tag, fontsize=10)
    ax.set_xlabel("step")
    if logy:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    if len(frames) > 1:
        ax.legend(fontsize=8)


def plot_scalars(runs: str | Path | Mapping[str, str | Path], tags: Sequence[str] | None = None,
                 smoothing: float = 0.6, ncols: int = 3, logy: Sequence[str] = (), title: str | None = None):
    """One panel per tag, one line per run, as TensorBoard's Scalars dashboard draws them: the smoothed
    series as a solid line over the raw values drawn faintly. ``runs`` is a run directory or
    ``{label: run directory}``; ``tags=None`` plots every scalar tag of the first run; ``logy`` names the
    tags drawn on a log scale. Returns the Figure."""
    import matplotlib.pyplot as plt

    paths = _as_runs(runs)
    frames = {label: read_scalars(path) for label, path in paths.items()}
    tags = list(tags) if tags is not None else sorted(next(iter(frames.values())).tag.unique())
    if not tags:
        raise ValueError(f"no scalar tags to plot in {list(paths.values())}")
    ncols = min(ncols, len(tags))
    nrows = math.ceil(len(tags) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.0 * nrows), squeeze=False)
    for ax, tag in zip(axes.flat, tags, strict=False):
        _draw_tag(ax, tag, frames, smoothing, tag in logy)
    for ax in axes.flat[len(tags):]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_histograms(run: str | Path, tag: str, max_steps: int = 8):
    """TensorBoard's histogram view (overlay mode): one outline per logged step, later steps darker.
    At most ``max_steps`` steps, evenly spaced, are drawn. Returns the Figure."""
    import matplotlib.pyplot as plt

    frame = read_histograms(run, tag)
    picks = np.unique(np.linspace(0, len(frame) - 1, min(max_steps, len(frame))).round().astype(int))
    fig, ax = plt.subplots(figsize=(6, 3.2))
    cmap = plt.get_cmap("Oranges")
    for rank, index in enumerate(picks):
        row = frame.iloc[index]
        centers = (row.edges[:-1] + row.edges[1:]) / 2
        ax.plot(centers, row.counts, color=cmap(0.3 + 0.7 * rank / max(1, len(picks) - 1)),
                label=f"step {row.step}")
    ax.set_title(tag, fontsize=10)
    ax.set_xlabel("value")
    ax.set_ylabel("count")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig
