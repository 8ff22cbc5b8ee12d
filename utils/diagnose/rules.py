"""The rules of ``utils.diagnose``: every threshold in one table (``RULES``), and one check per rule on
(steps, values) series or histogram statistics."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Rule:
    """One diagnosis: its name, severity ("error" fails the exit status, "warning", "note"), its numbers
    (``threshold``, ``window``, ``guard``: what each means is in ``meaning``), and the remedy."""

    name: str
    severity: str
    threshold: float
    window: int
    guard: float | None
    meaning: str
    remedy: str


RULES: dict[str, Rule] = {rule.name: rule for rule in (
    Rule("non_finite", "error", math.nan, 0, None,
         "a scalar (any tag) is NaN or inf; reported at its first such step",
         "find what overflowed at that step: lower the learning rate, clip gradients, guard log(0) and "
         "division by zero, check the inputs for NaN"),
    Rule("divergence", "error", 3.0, 3, None,
         "the training loss became non-finite or rose above threshold x its start (the largest of its first "
         "`window` points, so that a fast first drop is no rise; only for a positive start), or never came "
         "back below its first value after its first `window` points (a jump in the first updates)",
         "lower the learning rate (or add warmup), clip the gradient norm, check the loss for a bad input"),
    Rule("plateau", "warning", 0.01, 10, 0.25,
         "the training loss improved by less than threshold (relative) between the `guard` fraction of the "
         "points before last (at least `window` points) and the last one; reported where it first came "
         "within threshold of its final level",
         "if the model has converged, stop earlier; otherwise raise a too-low learning rate, check for dead "
         "layers or shuffled labels, or give the model more capacity"),
    Rule("overfitting", "warning", 0.1, 3, 5,
         "the validation loss rose more than threshold (relative) above its minimum while the training loss "
         "(mean of its last `window` points) kept falling below its value there, and the run went on for "
         "more than `guard` evaluations after that minimum; reported at the minimum, where the gap opened. "
         "A run that ended at most `guard` evaluations after its best one stopped because validation stopped "
         "improving (early stopping with a patience up to `guard`, the book's 4 or 5): the rise is what early "
         "stopping detected and acted on, so it is no fault of the run",
         "stop at the minimum (early stopping), add weight decay, dropout or augmentation, or more data"),
    Rule("no_validation_progress", "warning", 0.05, 3, None,
         "over at least `window` evaluations the validation loss never fell more than threshold (relative) "
         "below its first value: the model learned nothing that carries over to unseen data (labels "
         "shuffled apart from their inputs, a learning rate far too low or too high, dead units); reported at "
         "the first evaluation",
         "check that inputs and labels still line up after every shuffle and split, then the learning rate "
         "(a range test) and the activations (dead units)"),
    Rule("exploding_gradients", "warning", 10.0, 20, 5,
         "the gradient norm jumped above threshold x the median of its previous `window` points (fewer at "
         "the start: checked from its point number `guard` on, counting from 0, so that a median of at least "
         "`guard` points is the reference) and above the largest of its first `guard` points (the noise of a "
         "converging run jumps 10x a small median while staying below where the run started)",
         "clip the gradient norm (TrainConfig.grad_clip), lower the learning rate, add warmup or "
         "normalisation"),
    Rule("vanishing_gradients", "warning", 1e-3, 3, 0.1,
         "the gradient norm fell below threshold x its start (median of the first `window` points) and stayed "
         "there, while the loss stayed above `guard` x its start (a converged run's small gradient is no "
         "fault)",
         "use ReLU-like activations, a better initialisation, normalisation or residual connections "
         "(clipping does not help)"),
    Rule("stalled_layer", "warning", 0.01, 3, None,
         "a layer's update_ratio stayed below threshold x the median of the other layers' ratios at the same "
         "steps, for at least `window` logged points up to the end",
         "the layer gets (almost) no gradient: see vanishing_gradients; check that it is in the optimizer "
         "and not frozen by mistake"),
    Rule("dead_layer", "warning", 1e-5, 2, None,
         "a weights histogram stopped changing (min, max, mean and spread moved by less than threshold x its "
         "range) over at least `window` logged intervals up to the end, while another layer's still moved",
         "if the layer is not frozen on purpose, it gets no gradient: check requires_grad, the optimizer's "
         "parameter groups, dead ReLUs (use LeakyReLU/GELU) and vanishing gradients"),
    Rule("collapsed_histogram", "warning", 1e-3, 2, None,
         "a weights, grads or activations histogram collapsed to a point: its range fell below threshold x "
         "its first range and stayed there for at least `window` logged steps",
         "saturated or dead units: lower the learning rate, change the activation or initialisation, add "
         "normalisation; check weight decay is not too strong"),
    # Runs under 1,000 updates often keep a constant rate by design (chapter 7's CNN, lab 7: 300 updates of
    # Adam); what these two notes are for is a long run whose scheduler was never stepped or never set.
    Rule("lr_never_warmed_up", "note", 0.99, 1000, None,
         "a run of at least `window` steps started at threshold x its peak learning rate or more (no warmup)",
         "a linear warmup (TrainConfig.warmup_steps, a few percent of the steps) often stabilises early "
         "training, in particular with Adam and transformers"),
    Rule("lr_never_decayed", "note", 0.99, 1000, None,
         "in a run of at least `window` steps the learning rate was still at threshold x its peak or more at "
         "the end (constant, or no decay after warmup); reported where it reached the peak",
         "decay the learning rate (cosine or linear, TrainConfig.min_lr) to reach a lower final loss"),
)}


@dataclass
class Finding:
    rule: str
    severity: str
    tag: str
    step: int
    value: float
    explanation: str
    remedy: str


Series = tuple[np.ndarray, np.ndarray]  # (steps, values), sorted by step, one value per step


def _finding(rule_name: str, tag: str, step: int, value: float, explanation: str) -> Finding:
    rule = RULES[rule_name]
    return Finding(rule.name, rule.severity, tag, int(step), float(value), explanation, rule.remedy)


def finite_points(series: Series) -> Series:
    keep = np.isfinite(series[1])
    return series[0][keep], series[1][keep]


def _stays_from(mask: np.ndarray) -> int | None:
    """The first index from which ``mask`` is True up to its end; None when its last entry is False."""
    if len(mask) == 0 or not mask[-1]:
        return None
    false = np.flatnonzero(~mask)
    return int(false[-1]) + 1 if len(false) else 0


# --------------------------------------------------------------------------------------------- scalar rules


def check_non_finite(tag: str, series: Series) -> list[Finding]:
    bad = np.flatnonzero(~np.isfinite(series[1]))
    if not len(bad):
        return []
    i = bad[0]
    return [_finding("non_finite", tag, series[0][i], series[1][i],
                     f"{tag} is {series[1][i]} at step {series[0][i]}, {len(bad)} non-finite point(s) in all")]


def check_divergence(tag: str, series: Series) -> list[Finding]:
    rule = RULES["divergence"]
    steps, values = series
    start = float(np.max(finite_points(series)[1][:rule.window])) if np.isfinite(values).any() else math.nan
    limit = rule.threshold * start if start > 0 else math.inf
    bad = np.flatnonzero(~np.isfinite(values) | (values > limit))
    if not len(bad):
        return _never_back_down(tag, series, rule.window)
    i = bad[0]
    how = "is not finite" if not np.isfinite(values[i]) else f"is {values[i] / start:.1f}x its start"
    return [_finding("divergence", tag, steps[i], values[i],
                     f"the loss {how} (start {start:.4g}; limit {rule.threshold:g}x) at step {steps[i]}")]


def _never_back_down(tag: str, series: Series, window: int) -> list[Finding]:
    """A loss that jumped in its first updates and never came back below its first value: a divergence
    that the start (the largest of the first `window` points) hides, as a far too high rate makes it."""
    steps, values = finite_points(series)
    later = values[window:]
    if len(later) < window or values[0] <= 0 or not np.all(later > values[0]):
        return []
    i = window + int(np.argmax(later))
    return [_finding("divergence", tag, steps[i], values[i],
                     f"the loss never came back below its first value {values[0]:.4g}: after step "
                     f"{steps[window - 1]} every point is above it, up to {values[i]:.4g} at step {steps[i]}")]


def check_plateau(tag: str, series: Series) -> list[Finding]:
    rule = RULES["plateau"]
    steps, values = finite_points(series)
    n = max(rule.window, int(rule.guard * len(values)))
    if len(values) < 2 * n:
        return []
    before, last = float(values[-2 * n:-n].mean()), float(values[-n:].mean())
    gain = (before - last) / abs(before) if before else 0.0
    if gain >= rule.threshold:
        return []
    i = int(np.flatnonzero(values <= last + rule.threshold * abs(last))[0])
    return [_finding("plateau", tag, steps[i], values[i],
                     f"the loss came within {rule.threshold:.0%} of its final level {last:.4g} at step "
                     f"{steps[i]} and improved by {gain:.2%} over its last {n} points")]


def check_overfitting(tag: str, val: Series, train: Series) -> list[Finding]:
    rule = RULES["overfitting"]
    steps, values = finite_points(val)
    train_steps, train_values = finite_points(train)
    if len(values) < 2 or not len(train_values):  # no minimum with a later evaluation
        return []
    i = int(np.argmin(values))
    best, end = float(values[i]), float(values[-1])
    rise = (end - best) / abs(best) if best else math.inf
    at_best = train_values[train_steps <= steps[i]][-rule.window:]
    train_end = float(train_values[-rule.window:].mean())
    stopped_early = len(values) - 1 - i <= rule.guard  # evaluations after the best one
    if rise <= rule.threshold or not len(at_best) or train_end >= at_best.mean() or stopped_early:
        return []
    return [_finding("overfitting", tag, steps[i], best,
                     f"validation loss was lowest ({best:.4g}) at step {steps[i]} and ended {rise:.0%} above it"
                     f" while training loss fell from {at_best.mean():.4g} to {train_end:.4g}")]


def check_validation_progress(tag: str, val: Series) -> list[Finding]:
    rule = RULES["no_validation_progress"]
    steps, values = finite_points(val)
    if len(values) < rule.window or values[0] <= 0:
        return []
    gain = (values[0] - values.min()) / values[0]
    if gain > rule.threshold:
        return []
    return [_finding("no_validation_progress", tag, steps[0], values[0],
                     f"validation loss started at {values[0]:.4g} (step {steps[0]}) and its best, "
                     f"{values.min():.4g}, is only {gain:.1%} below it over {len(values)} evaluations")]


def check_exploding(tag: str, series: Series) -> list[Finding]:
    rule = RULES["exploding_gradients"]
    steps, values = finite_points(series)
    first = int(rule.guard)
    start = float(np.max(values[:first])) if len(values) else 0.0
    for i in range(min(first, len(values)), len(values)):
        median = float(np.median(values[max(0, i - rule.window):i]))
        # above the run's own start too: a healthy run's gradient shrinks as it converges, and its noise
        # then jumps 10x a tiny median while staying far below where it began
        if median > 0 and values[i] > max(rule.threshold * median, start):
            return [_finding("exploding_gradients", tag, steps[i], values[i],
                             f"the gradient norm jumped to {values[i]:.4g} at step {steps[i]}, "
                             f"{values[i] / median:.0f}x the median {median:.4g} of the points before")]
    return []


def check_vanishing(tag: str, series: Series, loss: Series | None) -> list[Finding]:
    rule = RULES["vanishing_gradients"]
    steps, values = finite_points(series)
    if len(values) < 2 * rule.window:
        return []
    start = float(np.median(values[:rule.window]))
    first = _stays_from(values < rule.threshold * start)
    if loss is not None:
        loss_values = finite_points(loss)[1]
        if len(loss_values) and np.median(loss_values[-rule.window:]) < rule.guard * np.median(
                loss_values[:rule.window]):
            return []  # the loss fell too: small gradients of a converged run
    if first is None:
        return []
    return [_finding("vanishing_gradients", tag, steps[first], values[first],
                     f"the gradient norm fell to {values[first]:.3g} at step {steps[first]} "
                     f"({values[first] / start:.1e}x its start {start:.3g}) and stayed there")]


def check_stalled_layers(ratios: dict[str, Series]) -> list[Finding]:
    rule = RULES["stalled_layer"]
    if len(ratios) < 2:
        return []
    import pandas as pd

    table = pd.DataFrame({tag: pd.Series(values, index=steps) for tag, (steps, values) in ratios.items()})
    findings = []
    for tag in table.columns:
        others = table.drop(columns=tag).median(axis=1)
        own = table[tag].dropna()
        first = _stays_from((own < rule.threshold * others.loc[own.index]).to_numpy())
        if first is not None and len(own) - first >= rule.window:
            step, value = int(own.index[first]), float(own.iloc[first])
            findings.append(_finding("stalled_layer", tag, step, value,
                                     f"{tag} is {value:.2g} from step {step} on, while the other layers' "
                                     f"median is {others.loc[step]:.2g}"))
    return findings


def check_learning_rate(tag: str, series: Series) -> list[Finding]:
    rule_warm, rule_decay = RULES["lr_never_warmed_up"], RULES["lr_never_decayed"]
    steps, values = finite_points(series)
    if not len(values):
        return []
    run_steps, peak, findings = steps[-1] + 1, float(values.max()), []
    if run_steps >= rule_warm.window and values[0] >= rule_warm.threshold * peak:
        findings.append(_finding("lr_never_warmed_up", tag, steps[0], values[0],
                                 f"the learning rate started at {values[0]:.3g}, its peak {peak:.3g}, in a run "
                                 f"of {run_steps} steps"))
    if run_steps >= rule_decay.window and values[-1] >= rule_decay.threshold * peak:
        i = int(np.flatnonzero(values >= rule_decay.threshold * peak)[0])
        findings.append(_finding("lr_never_decayed", tag, steps[i], values[i],
                                 f"the learning rate reached its peak {peak:.3g} at step {steps[i]} and ended at"
                                 f" {values[-1]:.3g}"))
    return findings


# --------------------------------------------------------------------------------------------- histogram rules


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
        first = _stays_from(mask)
        moving = any(not other[-1] for name, other in frozen.items() if name != tag and len(other))
        if first is not None and len(mask) - first >= rule.window and moving:
            steps, stats = weights[tag]
            findings.append(_finding("dead_layer", tag, steps[first], stats[first, 3],
                                     f"{tag} has not changed since step {steps[first]} "
                                     f"({len(mask) - first} logged intervals) while other layers still move"))
    return findings


def check_collapsed(tag: str, steps: np.ndarray, stats: np.ndarray) -> list[Finding]:
    rule = RULES["collapsed_histogram"]
    spread = stats[:, 1] - stats[:, 0]
    if not len(spread) or spread[0] <= 0:
        return []
    first = _stays_from(spread <= rule.threshold * spread[0])
    if first is None or len(spread) - first < rule.window:
        return []
    return [_finding("collapsed_histogram", tag, steps[first], spread[first],
                     f"{tag}'s range shrank from {spread[0]:.3g} to {spread[first]:.3g} at step {steps[first]}"
                     f" and stayed collapsed")]


# --------------------------------------------------------------------------------------------- reading runs
