"""Chapter 7's experiments: the runs that feed every TensorBoard dashboard, and the measurements that read
those dashboards back as numbers.

- Models and runs: ``small_cnn`` (a two-convolution classifier of the 8x8 digits), ``digit_images``,
  ``confusion_figure`` (a matplotlib confusion matrix for ``add_figure``), ``class_scores`` (softmax scores
  for ``add_pr_curve``).
- Reading dashboards as numbers: ``outlier_range`` (the y-range of "Ignore outliers in chart scaling"),
  ``threshold_for_precision`` (a threshold read off a PR curve), ``plot_histograms_offset`` (the Histograms
  dashboard's offset mode).
- The Projector: ``char_metadata`` (what each character is) and ``class_separation`` (how much closer
  vectors of one class are to each other than to the others).
- Logs as data: ``runs_table``, every run under some folders as one row of final metrics.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from utils.tb.reading import (
    accumulator,
    list_runs,
    read_histograms,
    read_hparams,
    read_scalars,
)

VOWELS = set("aeiouAEIOU")


# ------------------------------------------------------------------------------------ models and runs


def small_cnn(seed: int = 0):
    """A small CNN for the 8x8 digits: (N, 1, 8, 8) -> (N, 10) logits; 2 convolutions of 3x3 (8 and 16
    channels, each followed by ReLU and 2x2 max-pooling), then one linear layer. 1,898 parameters."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # (N, 8, 4, 4)
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # (N, 16, 2, 2)
        nn.Flatten(), nn.Linear(16 * 2 * 2, 10),
    )


def digit_images(x):
    """Flat digits (N, 64) scaled to [0, 1] -> images (N, 1, 8, 8), the layout of a CNN and of
    ``add_images`` (NCHW)."""
    return x.reshape(-1, 1, 8, 8)


def class_scores(model, x):
    """Softmax probabilities (N, C) of a classifier for inputs x, without a graph: the scores a PR curve
    needs (one column per class)."""
    import torch

    model.eval()
    with torch.no_grad():
        scores = torch.softmax(model(x), dim=-1)
    model.train()
    return scores


def confusion_figure(matrix: np.ndarray, title: str):
    """A confusion matrix (rows: true class, columns: predicted) as a matplotlib Figure with its counts
    written in the cells, for ``writer.add_figure``."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(3.6, 3.4))
    ax.imshow(matrix, cmap="Blues")
    for (row, col), count in np.ndenumerate(matrix):
        if count:
            colour = "white" if count > matrix.max() / 2 else "black"
            ax.text(col, row, int(count), ha="center", va="center", fontsize=7, color=colour)
    ax.set_xticks(range(len(matrix)))
    ax.set_yticks(range(len(matrix)))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- dashboards as numbers


def outlier_range(values: Sequence[float]) -> tuple[float, float]:
    """The y-range TensorBoard's line charts use with "Ignore outliers in chart scaling": the 5 % and 95 %
    quantiles of the finite values (its ``extentOfValues``, linear interpolation as in d3)."""
    finite = np.asarray(values, dtype=float)
    finite = finite[np.isfinite(finite)]
    return float(np.quantile(finite, 0.05)), float(np.quantile(finite, 0.95))


def threshold_for_precision(curve: pd.Series, min_precision: float) -> dict[str, float]:
    """Read a threshold off one PR curve (a row of ``read_pr_curves``): the lowest threshold whose
    precision is at least ``min_precision`` (so the highest recall among them), with its precision,
    recall and counts. Raises ``ValueError`` when no threshold is that precise."""
    precision, recall = np.asarray(curve.precision), np.asarray(curve.recall)
    predicted = np.asarray(curve.tp) + np.asarray(curve.fp)
    ok = np.flatnonzero((precision >= min_precision) & (predicted > 0))
    if ok.size == 0:
        raise ValueError(f"no threshold reaches precision {min_precision}: the best is "
                         f"{precision[predicted > 0].max():.3f}; ask for less, or train longer")
    i = int(ok[0])
    return {"threshold": float(curve.thresholds[i]), "precision": float(precision[i]),
            "recall": float(recall[i]), "tp": float(curve.tp[i]), "fp": float(curve.fp[i])}


def plot_histograms_offset(run: str | Path, tag: str, max_steps: int = 10, ax: Any = None):
    """TensorBoard's Histograms dashboard in *offset* mode: one outline per logged step, each drawn
    higher than the one before (time runs up the page), so that a drift of the distribution shows as a
    slant. Returns the Axes."""
    import matplotlib.pyplot as plt

    frame = read_histograms(run, tag)
    picks = np.unique(np.linspace(0, len(frame) - 1, min(max_steps, len(frame))).round().astype(int))
    if ax is None:
        ax = plt.subplots(figsize=(5, 3.4))[1]
    lift = max(float(max(frame.iloc[i].counts.max() for i in picks)), 1.0) * 0.35
    for rank, index in enumerate(picks):
        row = frame.iloc[index]
        centers = (row.edges[:-1] + row.edges[1:]) / 2
        base = rank * lift
        ax.fill_between(centers, base, base + row.counts, color=plt.get_cmap("Oranges")(
            0.3 + 0.7 * rank / max(1, len(picks) - 1)), alpha=0.8, linewidth=0.5, edgecolor="black")
        ax.text(centers[-1], base, f" {row.step}", fontsize=7, va="bottom")
    ax.set_yticks([])
    ax.set_title(f"{tag} (offset; step at the right)", fontsize=9)
    ax.set_xlabel("value")
    return ax


# ------------------------------------------------------------------------------------ the projector


def char_metadata(chars: Sequence[str]) -> list[list[str]]:
    """One row per character for the Projector's metadata: ``[shown, kind, case]``. ``kind`` is vowel,
    consonant, digit, punctuation or space (a newline is shown as ``\\n``); ``case`` is upper, lower or
    none."""
    rows = []
    for ch in chars:
        if ch.isspace():
            kind = "space"
        elif ch.isdigit():
            kind = "digit"
        elif ch.isalpha():
            kind = "vowel" if ch in VOWELS else "consonant"
        else:
            kind = "punctuation"
        case = "upper" if ch.isupper() else "lower" if ch.islower() else "none"
        rows.append([repr(ch)[1:-1] if ch.isspace() else ch, kind, case])
    return rows


def class_separation(vectors: np.ndarray, labels: Sequence[str]) -> float:
    """How much closer vectors of one class are to each other than to other classes: the mean cosine
    similarity of same-class pairs minus that of different-class pairs (each pair of distinct rows once).
    0 for one-hot codes, whose pairs are all orthogonal; positive when classes cluster."""
    v = np.asarray(vectors, dtype=float)
    v = v / np.linalg.norm(v, axis=1, keepdims=True)
    similarity = v @ v.T  # (N, N)
    labels = np.asarray(labels)
    same = labels[:, None] == labels[None, :]
    pairs = ~np.eye(len(v), dtype=bool)
    if not (same & pairs).any() or not (~same).any():
        raise ValueError("class_separation needs at least two classes and a class with two members")
    return float(similarity[same & pairs].mean() - similarity[~same].mean())


# ------------------------------------------------------------------------------------- logs as data


def _final_metrics(run: Path) -> dict[str, Any]:
    """Steps, wall time and the best validation loss of one run (``val/loss``, or Keras' ``epoch_loss``
    in a ``validation`` run)."""
    scalars = read_scalars(run)
    val_tag = "epoch_loss" if run.name == "validation" else "val/loss"  # Keras: a validation run
    val = scalars[scalars.tag == val_tag].value
    tags = accumulator(run).Tags()
    return {"tags": scalars.tag.nunique(), "steps": int(scalars.step.max()) + 1 if len(scalars) else 0,
            "wall_s": float(scalars.wall_time.max() - scalars.wall_time.min()) if len(scalars) else 0.0,
            "best_val_loss": float(val.min()) if len(val) else math.nan,
            "tensor_scalars": bool(len(scalars)) and not tags["scalars"]}


def runs_table(*roots: str | Path) -> pd.DataFrame:
    """Every run under each root (any folder that holds event files) as one row: ``run`` (its path below
    the root, the root's name first, whatever the root is called), ``chapter`` (the first folder below the
    root, or the root's own name for a run directly in it), ``hparams`` (a dict), ``best_val_loss``
    (NaN without validation), ``steps`` (last step + 1), ``wall_s`` (seconds from its first scalar to its
    last), ``tags`` and ``tensor_scalars`` (True for TF2 runs, whose scalars are stored as tensors)."""
    rows = []
    for root in map(Path, roots):
        for run in list_runs(root):
            parts = run.relative_to(root).parts
            name = "/".join([root.name, *parts])
            rows.append({"run": name, "chapter": parts[0] if len(parts) > 1 else root.name,
                         "hparams": read_hparams(run), **_final_metrics(run)})
    columns = ["run", "chapter", "hparams", "best_val_loss", "steps", "wall_s", "tags", "tensor_scalars"]
    return pd.DataFrame(rows, columns=columns)
