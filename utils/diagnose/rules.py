"""The rules of ``utils.diagnose``: every threshold in one table (``RULES``), and one check per rule on
(steps, values) series or histogram statistics."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from utils.diagnose import early_divergence


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


NOISE_SE = 3  # a rise counts when larger than this many standard errors of the run's own noise
EARLY_JUMP = 1.5  # a jump in the first updates: the later points' median at least this x the first point
NEVER_LEARNED = 0.05  # after a blow-up in the first updates: a loss that ended less than this below where it was
SPIKE_FOLLOW = 4  # points after a gradient-norm jump, one of which must stay up for it to count
SPIKE_RETURN = 1.5  # a recovered spike: the loss ends within this x its lowest point before the spike
LOSS_HURT = 0.1  # a gradient-norm jump that hurt: the loss rose by more than this x its first value

RULES: dict[str, Rule] = {rule.name: rule for rule in (
    Rule("non_finite", "error", math.nan, 0, None,
         "a scalar (any tag) is NaN or inf; reported at its first such step",
         "find what overflowed at that step: lower the learning rate, clip gradients, guard log(0) and "
         "division by zero, check the inputs for NaN"),
    Rule("divergence", "error", 3.0, 3, None,
         "the training loss became non-finite or rose above threshold x its start (the largest of its first "
         "`window` points, so that a fast first drop is no rise; only for a positive start), or blew up in its "
         "first updates in a way that start hides (early_divergence): it never came back below its first "
         "value after its first `window` points, their median at least EARLY_JUMP x it; or it jumped above "
         "threshold x its first value within them and ended (the median of its last quarter) less than "
         "NEVER_LEARNED below that value (the net it left sits at the untrained loss); or its first point (a "
         "mean over the first updates, as Hugging Face's Trainer logs the loss) is above threshold x the "
         "median of the later ones and the loss ended less than NEVER_LEARNED below the median of its points "
         "from `window` to the middle (it never learned after)",
         "lower the learning rate (or add warmup), clip the gradient norm, check the loss for a bad input"),
    Rule("loss_spike", "warning", 3.0, 40, None,
         "the training loss rose above threshold x its start (as for divergence), came back below that within "
         "`window` steps and stayed there to the end, at least `window` steps, ending within SPIKE_RETURN x "
         "its lowest point before the spike: the run recovered, worth a look. Also: a loss that rose above "
         "EARLY_JUMP x its first value before it ever fell below it, then learned a little and stalled (a "
         "plateau): the rise is the run's finding, not the plateau (a rate too high from the start)",
         "a bad batch or a too-high rate for a moment: clip the gradient norm, lengthen the warmup, look at "
         "the batch of that step"),
    Rule("scaler_skipped_steps", "note", math.nan, 0, None,
         "the gradient norm was not finite at some steps, each with the loss scale falling right there (a "
         "gradient scaler skips such an update and halves its scale, by design) and the loss finite: not "
         "counted as non_finite",
         "nothing, unless it happens at most steps: then the scale is too high for the model's gradients"),
    Rule("plateau", "warning", 0.01, 10, 0.25,
         "the training loss changed by less than threshold (relative, up or down) between the `guard` "
         "fraction of the points before last (at least `window` points) and the last one; reported where it "
         "first came within threshold of its final level. A loss that rose more is no plateau (rising_loss)",
         "if the model has converged, stop earlier; otherwise raise a too-low learning rate, check for dead "
         "layers or shuffled labels, or give the model more capacity"),
    Rule("rising_loss", "warning", 0.05, 5, 0.25,
         "the mean of the training loss's last stretch (the `guard` fraction of its points, at least `window`) "
         "is more than threshold (relative) above the lowest mean of any stretch as long before it, and more "
         "than NOISE_SE standard errors of the difference of the two means (the run's own noise: a small "
         "batch's loss jumps from step to step), short of a divergence: the loss climbed back, gradually or "
         "at once (a new shard of bad data); reported at its lowest point in that best stretch",
         "lower the learning rate (or decay it), clip the gradient norm; check that the data did not change "
         "(a new shard, a shuffle bug) and that the scheduler is stepped as intended"),
    Rule("overfitting", "warning", 0.1, 3, 5,
         "the validation loss rose more than threshold (relative) above its minimum while the training loss "
         "kept falling below its value there (medians: of its points since the evaluation before the minimum, "
         "at least `window`, and of as many last points), and the run went on for "
         "more than `guard` evaluations after that minimum; reported at the minimum, where the gap opened. "
         "A run that ended at most `guard` evaluations after its best one stopped because validation stopped "
         "improving (early stopping with a patience up to `guard`, the book's 4 or 5): the rise is what early "
         "stopping detected and acted on, so it is no fault of the run; unless the run went through its whole "
         "learning-rate schedule (its last rate its lowest, at most half its peak): then it did not stop "
         "early, and sparse evaluations are no excuse (if its validation accuracy did not end higher than at "
         "the best loss); or its last evaluation is off the evaluation schedule, at its last step (early "
         "stopping stops at a scheduled one: the run went on to its step budget). Nor when the rise is within "
         "NOISE_SE times one evaluation's noise (from the second differences of the later half, which a "
         "steady rise leaves near 0: a noisy curve's minimum is a low draw, not a turning point)",
         "stop at the minimum (early stopping), add weight decay, dropout or augmentation, or more data"),
    Rule("no_validation_progress", "warning", 0.05, 3, 0.1,
         "over at least `window` evaluations the validation loss never fell more than threshold (relative) "
         "below its first value: the model learned nothing that carries over to unseen data (labels "
         "shuffled apart from their inputs, a learning rate far too low or too high, dead units); reported at "
         "the first evaluation. Its start is the higher of the first validation loss and the median of the "
         "training loss's first points (up to `window`) logged at or before it (the loss before training, when "
         "evaluation comes once per epoch, after a whole epoch of training). Not when the validation accuracy rose: its later half's mean and its last "
         "value more than `guard` (absolute, accuracy as a fraction) above its earlier half's mean and its "
         "first value (a fine-tuned model whose loss rises as it grows confident, while it gets more right)",
         "check that inputs and labels still line up after every shuffle and split, then the learning rate "
         "(a range test) and the activations (dead units)"),
    Rule("exploding_gradients", "warning", 10.0, 20, 5,
         "the gradient norm jumped above threshold x the median of its previous `window` points (fewer at "
         "the start: checked from its point number `guard` on, counting from 0, so that a median of at least "
         "`guard` points is the reference) and above the largest of its first `guard` points (the noise of a "
         "converging run jumps 10x a small median while staying below where the run started), and not alone: "
         "one of the SPIKE_FOLLOW points after it is above threshold x that median too, or the run ends or "
         "goes non-finite there (a small batch's gradient norm jumps once and falls back); and either it stayed "
         "up (the median of those SPIKE_FOLLOW points above threshold x that median) or, where the training "
         "loss is logged, the loss rose with it (its median over the `window` points from the jump more than "
         "LOSS_HURT x its first value above its median over the `window` before, or non-finite): a converged "
         "run's small batch with a hard example makes the norm jump 20x for a point or two while the loss "
         "stays where it was",
         "clip the gradient norm (TrainConfig.grad_clip), lower the learning rate, add warmup or "
         "normalisation"),
    Rule("vanishing_gradients", "warning", 1e-3, 3, 0.1,
         "the gradient norm fell below threshold x its start (median of the first `window` points) and stayed "
         "there, while the loss stayed above `guard` x its start (a converged run's small gradient is no "
         "fault); or, where per-layer gradient norms are logged (layer_grad_norms), the smallest matrix's was "
         "below threshold x the largest matrix's at every logged step of the run's last half (at least "
         "`window` steps): the gradient does not reach the first layers, whether or not the loss fell "
         "(AUTOTRAINER's ratio between layers; biases and norm layers' gains are left out)",
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
         "its first range and stayed there for at least `window` logged steps (not gradients, when the "
         "training loss converged: a fit's gradients shrink)",
         "saturated or dead units: lower the learning rate, change the activation or initialisation, add "
         "normalisation; check weight decay is not too strong"),
    Rule("dead_units", "warning", 0.9, 2, None,
         "more than threshold of a ReLU's units output 0 for every input of the batch (a dead_shares scalar) "
         "at each of its last `window` logged steps at least; where the run logs no dead shares, more than "
         "threshold of its outputs are exactly 0 (a zero_shares scalar; a healthy ReLU layer's share is about "
         "a half, more on sparse inputs); where it logs neither, or they named no dead units, an activations "
         "histogram whose values are all >= 0 (a ReLU's output) holds more than threshold of its values in "
         "its lowest bucket, the one with the zeros (AUTOTRAINER's dying-ReLU symptom, Zhang et al. 2021); "
         "reported where it began to stay there",
         "lower the learning rate, use LeakyReLU or GELU, check the initialisation and the input scale"),
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


def make_finding(rule_name: str, tag: str, step: int, value: float, explanation: str) -> Finding:
    rule = RULES[rule_name]
    return Finding(rule.name, rule.severity, tag, int(step), float(value), explanation, rule.remedy)


def finite_points(series: Series) -> Series:
    keep = np.isfinite(series[1])
    return series[0][keep], series[1][keep]


def stays_from(mask: np.ndarray) -> int | None:
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
    return [make_finding("non_finite", tag, series[0][i], series[1][i],
                     f"{tag} is {series[1][i]} at step {series[0][i]}, {len(bad)} non-finite point(s) in all")]


def scaler_skips(grad: Series, scale: Series) -> np.ndarray:
    """The steps where the gradient norm is not finite and the loss scale fell there: below its last value
    before the step at the step or the next logged one (whether it is logged before or after the update;
    at the first logged step, the next value below the step's own)."""
    scale_steps, scale_values = finite_points(scale)
    skipped = []
    for step in grad[0][~np.isfinite(grad[1])]:
        before, after = scale_values[scale_steps < step], scale_values[scale_steps >= step][:2]
        reference = before[-1] if len(before) else after[0] if len(after) == 2 else None  # first step
        if reference is not None and after.min() < reference:
            skipped.append(step)
    return np.asarray(skipped, dtype=grad[0].dtype)


def check_scaler_skips(tag: str, skipped: np.ndarray) -> list[Finding]:
    if not len(skipped):
        return []
    return [make_finding("scaler_skipped_steps", tag, skipped[0], math.nan,
                         f"{len(skipped)} update(s) skipped by the gradient scaler, the first at step "
                         f"{skipped[0]} (the gradient norm not finite, the loss scale lowered)")]


def check_divergence(tag: str, series: Series) -> list[Finding]:
    rule = RULES["divergence"]
    steps, values = series
    start = float(np.max(finite_points(series)[1][:rule.window])) if np.isfinite(values).any() else math.nan
    limit = rule.threshold * start if start > 0 else math.inf
    bad = np.flatnonzero(~np.isfinite(values) | (values > limit))
    if not len(bad):
        return _hidden_divergence(tag, series)
    i = bad[0]
    if np.isfinite(values[i]) and _recovered(steps, values, i, limit):
        spike = RULES["loss_spike"]
        return [make_finding("loss_spike", tag, steps[i], values[i],
                             f"the loss jumped to {values[i] / start:.1f}x its start at step {steps[i]} and "
                             f"came back below {rule.threshold:g}x within {spike.window} steps, for good")]
    how = "is not finite" if not np.isfinite(values[i]) else f"is {values[i] / start:.1f}x its start"
    return [make_finding("divergence", tag, steps[i], values[i],
                     f"the loss {how} (start {start:.4g}; limit {rule.threshold:g}x) at step {steps[i]}")]


def _recovered(steps: np.ndarray, values: np.ndarray, i: int, limit: float) -> bool:
    """After its first point above ``limit`` (at index i), the loss is finite and below it again within the
    loss_spike window, stays there for at least that window, to the end, and ends (its last 10 points) within
    SPIKE_RETURN x its lowest point before the spike: back where it was, not stuck higher (dead units)."""
    window = RULES["loss_spike"].window
    after = ~(np.isfinite(values[i:]) & (values[i:] <= limit))  # still up (or not finite)
    last_up = i + int(np.flatnonzero(after)[-1])
    back_where_it_was = i > 0 and np.mean(values[-10:]) <= SPIKE_RETURN * np.min(values[:i])
    calm = steps[last_up] - steps[i] < window and steps[-1] - steps[last_up] >= window
    return calm and back_where_it_was


def _hidden_divergence(tag: str, series: Series) -> list[Finding]:
    """A divergence in the first updates that the start (the largest of the first `window` points) hides:
    ``early_divergence``'s three shapes."""
    rule = RULES["divergence"]
    steps, values = finite_points(series)
    hit = (early_divergence.never_back_down(steps, values, rule.window, EARLY_JUMP)
           or early_divergence.jumped_and_never_learned(steps, values, rule.threshold, rule.window, NEVER_LEARNED)
           or early_divergence.blew_up_within_first_point(steps, values, rule.threshold, rule.window,
                                                          NEVER_LEARNED))
    if hit is None:
        return []
    i, explanation = hit
    return [make_finding("divergence", tag, steps[i], values[i], explanation)]


def _last_stretches(series: Series, rule: Rule) -> tuple[np.ndarray, np.ndarray, int, float, float] | None:
    """The finite points, the stretch length n, and the means of the n points before the last n and of the
    last n (the `guard` fraction of the run, at least `window` points); None when there are too few."""
    steps, values = finite_points(series)
    n = max(rule.window, int(rule.guard * len(values)))
    if len(values) < 2 * n:
        return None
    return steps, values, n, float(values[-2 * n:-n].mean()), float(values[-n:].mean())


def check_plateau(tag: str, series: Series) -> list[Finding]:
    rule = RULES["plateau"]
    stretches = _last_stretches(series, rule)
    if stretches is None:
        return check_rising(tag, series)
    steps, values, n, before, last = stretches
    gain = (before - last) / abs(before) if before else 0.0
    if abs(gain) >= rule.threshold:
        return check_rising(tag, series)
    i = int(np.flatnonzero(values <= last + rule.threshold * abs(last))[0])
    return [make_finding("plateau", tag, steps[i], values[i],
                     f"the loss came within {rule.threshold:.0%} of its final level {last:.4g} at step "
                     f"{steps[i]} and changed by {-gain:+.2%} over its last {n} points")]


def check_rising(tag: str, series: Series) -> list[Finding]:
    rule = RULES["rising_loss"]
    stretches = _last_stretches(series, rule)
    if stretches is None:
        return []
    steps, values, n, _, last = stretches
    means = np.convolve(values[:-n], np.ones(n) / n, mode="valid")  # every stretch of n before the last
    start = int(np.argmin(means))
    best, earlier, latest = float(means[start]), values[start:start + n], values[-n:]
    rise = (last - best) / abs(best) if best else 0.0
    noise = NOISE_SE * math.sqrt((earlier.var(ddof=1) + latest.var(ddof=1)) / n)
    if rise <= rule.threshold or last - best <= noise:
        return []
    i = start + int(np.argmin(earlier))
    return [make_finding("rising_loss", tag, steps[i], values[i],
                     f"the loss's last {n} points average {last:.4g}, {rise:.0%} above its best stretch of {n} "
                     f"(mean {best:.4g}, steps {steps[start]}-{steps[start + n - 1]}); it was lowest there, "
                     f"{values[i]:.4g}, at step {steps[i]}")]


def loss_converged(loss: Series | None) -> bool:
    """The training loss ended below vanishing_gradients' guard x its start (the mean of its first and of
    its last `window` points): small gradients are then the sign of a fit, not of a fault."""
    rule = RULES["vanishing_gradients"]
    values = finite_points(loss)[1] if loss is not None else np.array([])
    if len(values) < 2 * rule.window or values[:rule.window].mean() <= 0:
        return False
    return bool(values[-rule.window:].mean() < rule.guard * values[:rule.window].mean())


def check_exploding(tag: str, series: Series, loss: Series | None = None) -> list[Finding]:
    rule = RULES["exploding_gradients"]
    steps, values = finite_points(series)
    first = int(rule.guard)
    start = float(np.max(values[:first])) if len(values) else 0.0
    for i in range(min(first, len(values)), len(values)):
        median = float(np.median(values[max(0, i - rule.window):i]))
        level, following = rule.threshold * median, values[i + 1:i + 1 + SPIKE_FOLLOW]
        # above the run's own start too: a healthy run's gradient shrinks as it converges, and its noise
        # then jumps 10x a tiny median while staying far below where it began
        if median <= 0 or values[i] <= max(level, start) or not _persists(following, level, series):
            continue
        around = steps[max(0, i - rule.window)], steps[i], steps[min(len(steps) - 1, i + rule.window)]
        if _sustained(following, level) or _loss_rose(loss, *around):
            return [make_finding("exploding_gradients", tag, steps[i], values[i],
                             f"the gradient norm jumped to {values[i]:.4g} at step {steps[i]}, "
                             f"{values[i] / median:.0f}x the median {median:.4g} of the points before")]
    return []


def _sustained(following: np.ndarray, level: float) -> bool:
    """The norm stayed up: the median of the SPIKE_FOLLOW points after the jump is above ``level`` (or the
    run ended there)."""
    return len(following) == 0 or float(np.median(following)) > level


def _loss_rose(loss: Series | None, start: int, jump: int, end: int) -> bool:
    """The jump hurt the run: the training loss's median from the jump's step to ``end`` is more than
    LOSS_HURT x its first value above its median from ``start`` up to the jump, or it is not finite there,
    or not logged after it. A converged run's small batch with a hard example makes the gradient norm jump
    20x for a point or two while the loss stays where it was. True when the run logs no training loss
    (the jump is then all there is to go by)."""
    if loss is None:
        return True
    steps, values = loss
    before, after = values[(steps >= start) & (steps < jump)], values[(steps >= jump) & (steps <= end)]
    if not len(after) or not np.isfinite(after).all():
        return True
    before, first = before[np.isfinite(before)], finite_points(loss)[1][:1]
    if not len(before) or not len(first):
        return True
    return float(np.median(after) - np.median(before)) > LOSS_HURT * abs(float(first[0]))


def _persists(following: np.ndarray, level: float, series: Series) -> bool:
    """A jump that is more than one noisy point: the run ended there or went non-finite, or one of the
    SPIKE_FOLLOW points after it is also above ``level``."""
    return len(following) == 0 or not np.isfinite(series[1]).all() or bool((following > level).any())


def check_vanishing(tag: str, series: Series, loss: Series | None) -> list[Finding]:
    rule = RULES["vanishing_gradients"]
    steps, values = finite_points(series)
    if len(values) < 2 * rule.window:
        return []
    start = float(np.median(values[:rule.window]))
    first = stays_from(values < rule.threshold * start)
    if loss is not None:
        loss_values = finite_points(loss)[1]
        if len(loss_values) and np.median(loss_values[-rule.window:]) < rule.guard * np.median(
                loss_values[:rule.window]):
            return []  # the loss fell too: small gradients of a converged run
    if first is None:
        return []
    return [make_finding("vanishing_gradients", tag, steps[first], values[first],
                     f"the gradient norm fell to {values[first]:.3g} at step {steps[first]} "
                     f"({values[first] / start:.1e}x its start {start:.3g}) and stayed there")]


def step_table(series: dict[str, Series]):
    """Per-layer series as one table: a row per step, a column per tag (NaN where a tag has no point)."""
    import pandas as pd

    return pd.DataFrame({tag: pd.Series(values, index=steps) for tag, (steps, values) in series.items()})


def check_stalled_layers(ratios: dict[str, Series]) -> list[Finding]:
    rule = RULES["stalled_layer"]
    if len(ratios) < 2:
        return []
    table = step_table(ratios)
    findings = []
    for tag in table.columns:
        others = table.drop(columns=tag).median(axis=1)
        own = table[tag].dropna()
        first = stays_from((own < rule.threshold * others.loc[own.index]).to_numpy())
        if first is not None and len(own) - first >= rule.window:
            step, value = int(own.index[first]), float(own.iloc[first])
            findings.append(make_finding("stalled_layer", tag, step, value,
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
        findings.append(make_finding("lr_never_warmed_up", tag, steps[0], values[0],
                                 f"the learning rate started at {values[0]:.3g}, its peak {peak:.3g}, in a run "
                                 f"of {run_steps} steps"))
    if run_steps >= rule_decay.window and values[-1] >= rule_decay.threshold * peak:
        i = int(np.flatnonzero(values >= rule_decay.threshold * peak)[0])
        findings.append(make_finding("lr_never_decayed", tag, steps[i], values[i],
                                 f"the learning rate reached its peak {peak:.3g} at step {steps[i]} and ended at"
                                 f" {values[-1]:.3g}"))
    return findings


# --------------------------------------------------------------------------------------------- reading runs
