"""The rules that read per-layer histograms (weights, gradients, activations): a layer that stopped
changing, a histogram that collapsed to a point, units that output 0 for every input. Their thresholds are
rows of ``rules.RULES``."""

from __future__ import annotations

import math
import re

import numpy as np

from utils.diagnose.rules import RULES, Finding, Series, finite_points, make_finding, stays_from, step_table

# a bias, or a norm layer's gain (LayerNorm, BatchNorm, RMSNorm: ln_1.weight, bn1.weight, norm.weight), in
# any part of a tag (grad_norm/fc.bias, fc.bias/grad_norm): small gradients by nature (a bias before a
# BatchNorm gets none at all), not a layer the gradient fails to reach
_NOT_A_MATRIX = re.compile(r"(bias|(^|[._])(ln|bn|norm|layernorm|batchnorm|rmsnorm)[^.]*\.(weight|gamma|scale))$",
                           re.IGNORECASE)


def is_matrix_tag(tag: str) -> bool:
    return not any(_NOT_A_MATRIX.search(part) for part in tag.split("/"))


def histogram_stats(frame) -> np.ndarray:
    """One row per logged step: ``min, max, mean, std`` (the std from bucket centres), shape ``(steps, 4)``."""
    rows = []
    for h in frame.itertuples():
        centres = (np.asarray(h.edges[:-1]) + np.asarray(h.edges[1:])) / 2
        counts = np.asarray(h.counts, dtype=float)
        mean = h.sum / h.count if h.count else 0.0
        spread = math.sqrt(max(float((counts * (centres - mean) ** 2).sum() / max(counts.sum(), 1)), 0.0))
        rows.append((h.min, h.max, mean, spread))
    return np.asarray(rows, dtype=float).reshape(-1, 4)


def check_dead_layers(weights: dict[str, tuple[np.ndarray, np.ndarray]]) -> list[Finding]:
    rule = RULES["dead_layer"]
    frozen: dict[str, np.ndarray] = {}
    for tag, (_, stats) in weights.items():
        scale = np.maximum(stats[:-1, 1] - stats[:-1, 0], np.maximum(np.abs(stats[:-1, 2]), 1e-12))
        frozen[tag] = np.abs(np.diff(stats, axis=0)).max(axis=1) < rule.threshold * scale
    findings = []
    for tag, mask in frozen.items():
        first = stays_from(mask)
        moving = any(not other[-1] for name, other in frozen.items() if name != tag and len(other))
        if first is not None and len(mask) - first >= rule.window and moving:
            steps, stats = weights[tag]
            findings.append(make_finding("dead_layer", tag, steps[first], stats[first, 3],
                                     f"{tag} has not changed since step {steps[first]} "
                                     f"({len(mask) - first} logged intervals) while other layers still move"))
    return findings


def check_collapsed(tag: str, steps: np.ndarray, stats: np.ndarray) -> list[Finding]:
    rule = RULES["collapsed_histogram"]
    spread = stats[:, 1] - stats[:, 0]
    if not len(spread) or spread[0] <= 0:
        return []
    first = stays_from(spread <= rule.threshold * spread[0])
    if first is None or len(spread) - first < rule.window:
        return []
    return [make_finding("collapsed_histogram", tag, steps[first], spread[first],
                     f"{tag}'s range shrank from {spread[0]:.3g} to {spread[first]:.3g} at step {steps[first]}"
                     f" and stayed collapsed")]


def zero_bucket_share(frame) -> np.ndarray:
    """Per logged step, the share of a histogram's values in its lowest non-empty bucket, where a ReLU's
    zeros fall; NaN at a step with a negative value (no ReLU output) or no values."""
    shares = []
    for h in frame.itertuples():
        counts = np.asarray(h.counts, dtype=float)
        if h.min < 0 or counts.sum() == 0:
            shares.append(math.nan)
            continue
        shares.append(counts[np.flatnonzero(counts)[0]] / counts.sum())
    return np.asarray(shares, dtype=float)


def check_dead_units(tag: str, steps: np.ndarray, shares: np.ndarray, source: str = "histogram") -> list[Finding]:
    """``shares``: per logged step, the share of dead units (``source`` "dead_shares"), of exact zeros
    ("zero_shares"), or of a histogram's values in its lowest bucket ("histogram", ``zero_bucket_share``)."""
    rule = RULES["dead_units"]
    first = stays_from(shares > rule.threshold)  # NaN compares False
    if first is None or len(shares) - first < rule.window:
        return []
    where = {"dead_shares": "units output 0 for every input of the batch", "zero_shares": "outputs are exactly 0",
             "histogram": "values are in its lowest bucket (the zeros)"}[source]
    return [make_finding("dead_units", tag, steps[first], shares[first],
                     f"{shares[-1]:.0%} of {tag}'s {where} at step {steps[-1]}, above {rule.threshold:.0%} since "
                     f"step {steps[first]}")]


def check_layer_vanishing(norms: dict[str, Series]) -> list[Finding]:
    """vanishing_gradients from per-layer gradient norms (AUTOTRAINER's ratio between layers): at every
    logged step of the last half of the run (at least `window` steps), the smallest matrix's gradient norm is
    below threshold x the largest's. Steps where a norm is exactly 0 are left out: no gradient at all is
    what dead units pass back (dead_units names them), not a vanishing one."""
    rule = RULES["vanishing_gradients"]
    matrices = {tag: finite_points(series) for tag, series in norms.items() if is_matrix_tag(tag)}
    if len(matrices) < 2:
        return []
    table = step_table(matrices).dropna()
    table = table[table.min(axis=1) > 0]
    ratio = (table.min(axis=1) / table.max(axis=1)).to_numpy()
    first = stays_from(ratio < rule.threshold)
    if first is None or len(ratio) - first < max(rule.window, len(ratio) / 2):
        return []
    step = int(table.index[first])
    smallest, largest = table.loc[step].idxmin(), table.loc[step].idxmax()
    return [make_finding("vanishing_gradients", smallest, step, ratio[first],
                         f"{smallest}'s gradient norm is {ratio[first]:.1e}x {largest}'s at step {step}, and the "
                         f"smallest layer's stayed below {rule.threshold:g}x the largest's at all {len(ratio) - first}"
                         f" logged steps since: the gradient does not reach it")]
