"""The rules that read the validation loss: overfitting, and a model that learned nothing that carries
over. Their thresholds are rows of ``rules.RULES``."""

from __future__ import annotations

import math

import numpy as np

from utils.diagnose.rules import NOISE_SE, RULES, Finding, Series, finite_points, make_finding


def check_overfitting(tag: str, val: Series, train: Series, completed: bool = False,
                      accuracy: Series | None = None) -> list[Finding]:
    """``completed``: the run went through its whole learning-rate schedule, so it did not stop early
    (however few evaluations came after its best: validation every 500 steps), unless its validation
    ``accuracy`` ended higher than at the best loss (a fine-tuned model growing confident)."""
    rule = RULES["overfitting"]
    steps, values = finite_points(val)
    train_steps, train_values = finite_points(train)
    if len(values) < 2 or not len(train_values):  # no minimum with a later evaluation
        return []
    i = int(np.argmin(values))
    best, end = float(values[i]), float(values[-1])
    rise = (end - best) / abs(best) if best else math.inf
    at_best = _training_before(train_steps, train_values, steps, i, rule.window)
    train_end = float(np.median(train_values[-max(rule.window, len(at_best)):]))
    sparse_excuse = not completed or _accuracy_gained_since(accuracy, steps[i])
    stopped_early = sparse_excuse and len(values) - 1 - i <= rule.guard and not ran_to_its_budget(steps)
    if rise <= rule.threshold or not len(at_best) or train_end >= np.median(at_best) or stopped_early:
        return []
    if end - best <= NOISE_SE * _point_noise(values[len(values) // 2:]):
        return []
    return [make_finding("overfitting", tag, steps[i], best,
                     f"validation loss was lowest ({best:.4g}) at step {steps[i]} and ended {rise:.0%} above it"
                     f" while training loss fell from {np.median(at_best):.4g} to {train_end:.4g}")]


def _training_before(train_steps: np.ndarray, train_values: np.ndarray, steps: np.ndarray, i: int,
                     window: int) -> np.ndarray:
    """The training loss's points since the evaluation before evaluation ``i``, up to it (at least its last
    ``window`` points up to it): their median is where training stood at the best validation loss, so that one
    bad batch at that step does not move it."""
    since = steps[i - 1] if i > 0 else -np.inf
    stretch = train_values[(train_steps > since) & (train_steps <= steps[i])]
    return stretch if len(stretch) >= window else train_values[train_steps <= steps[i]][-window:]


def _accuracy_gained_since(accuracy: Series | None, step: int) -> bool:
    """The validation accuracy's last value is above its value at ``step`` (or the last before it)."""
    steps, values = finite_points(accuracy) if accuracy is not None else (np.array([]), np.array([]))
    before = values[steps <= step]
    return bool(len(before)) and values[-1] > before[-1]


def ran_to_its_budget(steps: np.ndarray) -> bool:
    """The last evaluation is off the evaluation schedule: evaluations at a regular interval (at least two
    such intervals), then one sooner, at the run's last step (the book's loop, like most hand-written loops,
    evaluates at ``max_steps - 1`` too). Early stopping stops at a scheduled evaluation, the one that used up
    its patience; a final evaluation off the schedule is that of a run that went on to its step budget, so
    few evaluations after the best one are no sign that it stopped early."""
    intervals = np.diff(steps)
    regular = intervals[:-1]
    return len(regular) >= 2 and bool(np.all(regular == regular[0])) and 0 < intervals[-1] < regular[0]


def schedule_completed(lr: Series | None) -> bool:
    """The learning rate decayed to the end: its last value is its lowest and at most half its peak."""
    values = finite_points(lr)[1] if lr is not None else np.array([])
    return bool(len(values)) and values[-1] <= values.min() and values[-1] <= 0.5 * values.max()


def _point_noise(values: np.ndarray) -> float:
    """One point's noise, from the second differences (robust: 1.4826 x their median absolute value, over
    sqrt 6, a second difference of independent points having 6 times one point's variance): a steady trend,
    rising or falling, has second differences near 0, a noisy curve large ones. First differences would
    count a steady rise as noise, and with sparse evaluations (a few points, each a big step up) hide the
    very overfitting they rise by. 0 for < 3 points."""
    if len(values) < 3:
        return 0.0
    return float(1.4826 * np.median(np.abs(np.diff(values, n=2))) / math.sqrt(6))


def _accuracy_rose(accuracy: Series | None, gain: float) -> bool:
    """The accuracy's later half's mean and its last value are more than ``gain`` above its earlier half's
    mean and its first value (as fractions: a percentage is divided by 100)."""
    values = finite_points(accuracy)[1] if accuracy is not None else np.array([])
    if len(values) < 2:
        return False
    values = values / 100 if values.max() > 1.5 else values
    half = len(values) // 2
    return values[half:].mean() - values[:half].mean() > gain and values[-1] - values[0] > gain


def _untrained_level(values: np.ndarray, steps: np.ndarray, train: Series | None, window: int) -> float:
    """The loss before training: the first validation loss, or the median of the training loss's first
    points (up to `window`) logged at or before the first evaluation, when that is higher (an evaluation once
    per epoch comes after a whole epoch of training)."""
    if train is None:
        return float(values[0])
    train_steps, train_values = finite_points(train)
    before = train_values[train_steps <= steps[0]][:window]
    return max(float(values[0]), float(np.median(before))) if len(before) else float(values[0])


def check_validation_progress(tag: str, val: Series, accuracy: Series | None = None,
                              train: Series | None = None) -> list[Finding]:
    rule = RULES["no_validation_progress"]
    steps, values = finite_points(val)
    if len(values) < rule.window or values[0] <= 0:
        return []
    start = _untrained_level(values, steps, train, rule.window)
    gain = (start - values.min()) / start
    if gain > rule.threshold or (rule.guard is not None and _accuracy_rose(accuracy, rule.guard)):
        return []
    return [make_finding("no_validation_progress", tag, steps[0], values[0],
                     f"validation loss started at {values[0]:.4g} (step {steps[0]}) and its best, "
                     f"{values.min():.4g}, is only {gain:.1%} below {start:.4g} over {len(values)} evaluations")]
