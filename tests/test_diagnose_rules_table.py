"""``utils.diagnose``'s rules at their edges, called directly on (steps, values) series: a run of exactly a
rule's window fires (or not) as its ``meaning`` says, one point shorter does not; a value just past the
threshold fires, one just short does not. And every check reads its numbers from ``RULES``: the same series
gets the other verdict once the table's number for it is changed (a check keeping a literal of its own
would not notice).

Every number below is read from ``RULES``, so the tests follow the table; what they pin is the *meaning* of
each number (">= window points", "above threshold x ...", "at most", "more than").
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from utils.diagnose import layer_rules, rules, validation_rules
from utils.diagnose.rules import RULES

R = RULES


def s(values, start: int = 0) -> rules.Series:
    values = np.asarray(values, dtype=float)
    return np.arange(start, start + len(values)), values


def names(findings) -> list[tuple[str, int]]:
    return [(f.rule, f.step) for f in findings]


@pytest.fixture()
def table(monkeypatch):
    """``table(name, **numbers)``: the rule ``name`` with some numbers changed, for this test only."""
    def change(name: str, **numbers) -> None:
        monkeypatch.setitem(RULES, name, dataclasses.replace(RULES[name], **numbers))

    return change


# --------------------------------------------------------------------------------------------- divergence


def test_divergence_start_is_the_largest_of_the_first_window_points():
    w, k = R["divergence"].window, R["divergence"].threshold
    # a rise inside the first `window` points is part of the start, not a divergence...
    inside = [1.0] * (w - 1) + [2 * k, 2 * k, 2 * k]
    assert rules.check_divergence("loss", s(inside)) == []
    # ...one point later it is
    after = [1.0] * w + [2 * k]
    assert names(rules.check_divergence("loss", s(after))) == [("divergence", w)]


def test_divergence_fires_above_the_threshold_only():
    w, k = R["divergence"].window, R["divergence"].threshold
    assert rules.check_divergence("loss", s([1.0] * w + [k])) == []  # exactly threshold x start: not above
    assert names(rules.check_divergence("loss", s([1.0] * w + [k * 1.001]))) == [("divergence", w)]


def test_divergence_reads_its_numbers_from_the_table(table):
    k = R["divergence"].threshold
    series = s([1.0] * 3 + [k * 1.5])
    assert rules.check_divergence("loss", series) != []
    table("divergence", threshold=2 * k)
    assert rules.check_divergence("loss", series) == []
    table("divergence", threshold=k, window=4)  # the spike now belongs to the start
    assert rules.check_divergence("loss", series) == []


# --------------------------------------------------------------------------------------------- plateau


def test_plateau_needs_two_windows_of_points():
    w = R["plateau"].window
    assert int(R["plateau"].guard * 2 * w) <= w  # so that n = window for these lengths
    assert names(rules.check_plateau("loss", s([1.0] * (2 * w)))) == [("plateau", 0)]
    assert rules.check_plateau("loss", s([1.0] * (2 * w - 1))) == []


def test_plateau_fires_below_the_threshold_only():
    w, k = R["plateau"].window, R["plateau"].threshold
    assert rules.check_plateau("loss", s([1.0] * w + [1.0 - 0.9 * k] * w)) != []  # gain 0.9 threshold
    assert rules.check_plateau("loss", s([1.0] * w + [1.0 - 1.1 * k] * w)) == []  # gain 1.1 threshold


def test_plateau_reads_its_numbers_from_the_table(table):
    w, k = R["plateau"].window, R["plateau"].threshold
    slow = s([1.0] * w + [1.0 - 2 * k] * w)
    assert rules.check_plateau("loss", slow) == []
    table("plateau", threshold=4 * k)
    assert rules.check_plateau("loss", slow) != []
    # guard: the compared stretches are the guard fraction of the run, when that is longer than the window
    table("plateau", threshold=k)
    long = s([2.0] * (4 * w) + [1.0] * (2 * w))  # 6w points: the guard's stretches (1.5w) reach the fall
    assert rules.check_plateau("loss", long) == []
    table("plateau", guard=0.0)
    assert rules.check_plateau("loss", long) != []


# --------------------------------------------------------------------------------------------- overfitting


def _overfit(after_best: int, rise: float = 0.5):
    """Validation falls to 1.0 at evaluation 3, then rises by ``rise`` over ``after_best`` evaluations; the
    training loss (one point per step, evaluations every step) keeps falling."""
    val = [2.0, 1.6, 1.3, 1.0] + [1.0 + rise * (j + 1) / after_best for j in range(after_best)]
    train = [2.0 - 0.1 * i for i in range(len(val))]
    return s(val), s(train)


def test_overfitting_needs_more_than_guard_evaluations_after_the_minimum():
    guard = int(R["overfitting"].guard)
    assert validation_rules.check_overfitting("val", *_overfit(guard)) == []  # stopped early: at most `guard` after it
    assert names(validation_rules.check_overfitting("val", *_overfit(guard + 1))) == [("overfitting", 3)]


def test_overfitting_fires_for_a_rise_above_the_threshold_only():
    guard, k = int(R["overfitting"].guard), R["overfitting"].threshold
    assert validation_rules.check_overfitting("val", *_overfit(guard + 1, rise=0.9 * k)) == []
    assert validation_rules.check_overfitting("val", *_overfit(guard + 1, rise=1.1 * k)) != []


def test_overfitting_compares_medians_of_the_training_loss():
    """Where training stood at the best evaluation: the median of its points since the evaluation before
    (at least `window`); where it ended: the median of as many last points. One bad batch at the best step
    moves neither; a training loss whose last points' median is at or above that level did not keep falling."""
    w, guard = R["overfitting"].window, int(R["overfitting"].guard)
    steps = np.arange(0, 40)
    val_steps = np.arange(0, 40, 4)  # evaluations every 4 steps, the best at step 12
    val = [2.0, 1.6, 1.3, 1.0] + [1.0 + 0.5 * (j + 1) / 6 for j in range(6)]
    falling = 2.0 - 0.04 * steps
    assert validation_rules.check_overfitting("val", (val_steps, np.array(val)), (steps, falling)) != []
    spike = falling.copy()
    spike[12] = 50.0  # one bad batch at the best step: the median since the evaluation before ignores it
    assert validation_rules.check_overfitting("val", (val_steps, np.array(val)), (steps, spike)) != []
    at_best = np.median(falling[9:13])  # steps 9-12: since step 8, the evaluation before the best
    climbed = falling.copy()
    climbed[-max(w, 4):] = [at_best * 1.01, at_best * 1.02, at_best * 0.5, at_best * 1.03]  # median above it
    assert np.median(climbed[-max(w, 4):]) > at_best and np.mean(climbed[-w:]) < at_best
    assert validation_rules.check_overfitting("val", (val_steps, np.array(val)), (steps, climbed)) == []
    assert guard < 6  # the run went on for more than `guard` evaluations after the best


def test_overfitting_reads_its_numbers_from_the_table(table):
    guard, k = int(R["overfitting"].guard), R["overfitting"].threshold
    assert validation_rules.check_overfitting("val", *_overfit(guard)) == []
    table("overfitting", guard=guard - 1)
    assert validation_rules.check_overfitting("val", *_overfit(guard)) != []
    table("overfitting", guard=guard, threshold=k)
    series = _overfit(guard + 1, rise=2 * k)
    assert validation_rules.check_overfitting("val", *series) != []
    table("overfitting", threshold=3 * k)
    assert validation_rules.check_overfitting("val", *series) == []


# --------------------------------------------------------------------------------------------- validation progress


def test_no_validation_progress_needs_window_evaluations():
    w = R["no_validation_progress"].window
    assert names(validation_rules.check_validation_progress("val", s([2.0] * w))) == [("no_validation_progress", 0)]
    assert validation_rules.check_validation_progress("val", s([2.0] * (w - 1))) == []


def test_no_validation_progress_fires_for_a_gain_up_to_the_threshold():
    w, k = R["no_validation_progress"].window, R["no_validation_progress"].threshold
    assert validation_rules.check_validation_progress("val", s([1.0] * (w - 1) + [1.0 - 0.9 * k])) != []
    assert validation_rules.check_validation_progress("val", s([1.0] * (w - 1) + [1.0 - 1.1 * k])) == []


def test_no_validation_progress_reads_its_numbers_from_the_table(table):
    w, k = R["no_validation_progress"].window, R["no_validation_progress"].threshold
    series = s([1.0] * (w - 1) + [1.0 - 2 * k])
    assert validation_rules.check_validation_progress("val", series) == []
    table("no_validation_progress", threshold=3 * k)
    assert validation_rules.check_validation_progress("val", series) != []
    table("no_validation_progress", threshold=k, window=w + 1)
    assert validation_rules.check_validation_progress("val", s([1.0] * w)) == []


# --------------------------------------------------------------------------------------------- exploding gradients


def test_exploding_is_checked_from_point_guard_on():
    guard, k = int(R["exploding_gradients"].guard), R["exploding_gradients"].threshold
    at_guard = [1.0] * guard + [2 * k]
    assert names(rules.check_exploding("g", s(at_guard))) == [("exploding_gradients", guard)]
    before_guard = [1.0] * (guard - 1) + [2 * k, 1.0, 1.0]
    assert rules.check_exploding("g", s(before_guard)) == []


def test_exploding_compares_with_the_median_of_the_previous_window_points():
    w, k = R["exploding_gradients"].window, R["exploding_gradients"].threshold
    assert w % 2 == 0
    # the `window` points before the spike have median 2; one point more (a large one) would make it 3
    history = [2.0 * k] + [1.0] * (w // 2) + [3.0] * (w // 2)  # a start below the spike
    spike = 2.5 * k  # above k x 2, below k x 3
    assert names(rules.check_exploding("g", s(history + [spike]))) == [("exploding_gradients", w + 1)]
    assert np.median(history) * k > spike  # the check can tell a window one point longer


def test_exploding_stays_silent_below_the_runs_own_start():
    """A converging run's noise: 10x its recent median, yet below the gradient norm it started with."""
    guard, k = int(R["exploding_gradients"].guard), R["exploding_gradients"].threshold
    assert rules.check_exploding("g", s([5 * k] + [1.0] * (guard + 20) + [2 * k])) == []
    assert rules.check_exploding("g", s([5 * k] + [1.0] * (guard + 20) + [6 * k])) != []


def test_a_brief_jump_counts_only_when_the_loss_rose_with_it():
    """A converged small-batch run: the norm sits at 0.08, one hard batch makes it jump to 2.0 for two points
    (above the start, 1.0), then it falls back. With the loss flat there, no finding; with the loss up by more
    than LOSS_HURT x its first value, or not finite after it, a finding; a norm that stays up is one whatever
    the loss."""
    w = R["exploding_gradients"].window
    norm = [1.0] * 5 + [0.08] * (2 * w) + [2.0, 1.9, 0.1, 0.09, 0.08] + [0.08] * (2 * w)
    jump = 5 + 2 * w
    steps = np.arange(len(norm))
    flat = np.r_[2.3, np.full(len(norm) - 1, 0.01)]
    assert rules.check_exploding("g", s(norm), (steps, flat)) == []
    hurt = flat.copy()
    hurt[jump:] = 0.01 + 1.1 * rules.LOSS_HURT * 2.3
    assert names(rules.check_exploding("g", s(norm), (steps, hurt))) == [("exploding_gradients", jump)]
    barely = flat.copy()
    barely[jump:] = 0.01 + 0.9 * rules.LOSS_HURT * 2.3
    assert rules.check_exploding("g", s(norm), (steps, barely)) == []
    nan = flat.copy()
    nan[jump + 3] = np.nan
    assert rules.check_exploding("g", s(norm), (steps, nan)) != []
    stays = norm[:jump] + [2.0] * 6 + norm[jump + 6:]
    assert names(rules.check_exploding("g", s(stays), (steps, flat))) == [("exploding_gradients", jump)]


def test_exploding_fires_above_the_threshold_only():
    guard, k = int(R["exploding_gradients"].guard), R["exploding_gradients"].threshold
    assert rules.check_exploding("g", s([1.0] * guard + [k])) == []
    assert rules.check_exploding("g", s([1.0] * guard + [k * 1.001])) != []


def test_exploding_reads_its_numbers_from_the_table(table):
    guard, k = int(R["exploding_gradients"].guard), R["exploding_gradients"].threshold
    series = s([1.0] * guard + [2 * k])
    assert rules.check_exploding("g", series) != []
    table("exploding_gradients", threshold=3 * k)
    assert rules.check_exploding("g", series) == []
    table("exploding_gradients", threshold=k, guard=guard + 1)  # the spike is now before the first check
    assert rules.check_exploding("g", series) == []


# --------------------------------------------------------------------------------------------- vanishing gradients


def test_vanishing_needs_two_windows_of_points():
    w, k = R["vanishing_gradients"].window, R["vanishing_gradients"].threshold
    small = k / 100
    assert names(rules.check_vanishing("g", s([1.0] * w + [small] * w), None)) == [("vanishing_gradients", w)]
    assert rules.check_vanishing("g", s([1.0] * w + [small] * (w - 1)), None) == []


def test_vanishing_fires_below_the_threshold_only():
    w, k = R["vanishing_gradients"].window, R["vanishing_gradients"].threshold
    assert rules.check_vanishing("g", s([1.0] * w + [0.9 * k] * w), None) != []
    assert rules.check_vanishing("g", s([1.0] * w + [1.1 * k] * w), None) == []


def test_vanishing_is_no_finding_when_the_loss_fell_below_guard_times_its_start():
    w, k, guard = R["vanishing_gradients"].window, R["vanishing_gradients"].threshold, R["vanishing_gradients"].guard
    grads = s([1.0] * w + [k / 100] * w)
    assert rules.check_vanishing("g", grads, s([1.0] * w + [0.9 * guard] * w)) == []  # converged
    assert rules.check_vanishing("g", grads, s([1.0] * w + [1.1 * guard] * w)) != []  # stuck


def test_vanishing_reads_its_numbers_from_the_table(table):
    w, k, guard = R["vanishing_gradients"].window, R["vanishing_gradients"].threshold, R["vanishing_gradients"].guard
    grads = s([1.0] * w + [k / 2] * w)
    assert rules.check_vanishing("g", grads, None) != []
    table("vanishing_gradients", threshold=k / 4)
    assert rules.check_vanishing("g", grads, None) == []
    table("vanishing_gradients", threshold=k, guard=guard / 10)
    assert rules.check_vanishing("g", grads, s([1.0] * w + [0.5 * guard] * w)) != []


# --------------------------------------------------------------------------------------------- layers


def _ratios(stalled_points: int, factor: float = 1e-3) -> dict:
    steps = np.arange(0, 100, 10)  # 10 logged points
    healthy = np.full(10, 1e-3)
    low = healthy.copy()
    if stalled_points:
        low[-stalled_points:] = factor * 1e-3
    return {"a": (steps, low), "b": (steps, healthy), "c": (steps, healthy * 2)}


def test_stalled_layer_needs_window_points_up_to_the_end():
    w = R["stalled_layer"].window
    assert names(rules.check_stalled_layers(_ratios(w))) == [("stalled_layer", 10 * (10 - w))]
    assert rules.check_stalled_layers(_ratios(w - 1)) == []


def test_stalled_layer_fires_below_the_threshold_only_and_reads_it_from_the_table(table):
    w, k = R["stalled_layer"].window, R["stalled_layer"].threshold
    median_of_others = 1.5e-3
    assert rules.check_stalled_layers(_ratios(w, 0.9 * k * median_of_others / 1e-3)) != []
    assert rules.check_stalled_layers(_ratios(w, 1.1 * k * median_of_others / 1e-3)) == []
    table("stalled_layer", threshold=2 * k)
    assert rules.check_stalled_layers(_ratios(w, 1.1 * k * median_of_others / 1e-3)) != []
    table("stalled_layer", threshold=k, window=w + 1)
    assert rules.check_stalled_layers(_ratios(w, 1e-3)) == []


def _weights(frozen_intervals: int, change: float = 0.0) -> dict:
    """Per-step ``min, max, mean, std`` rows of two layers: "a" moves until its last ``frozen_intervals``
    intervals, in which it moves by ``change`` x its range; "b" moves throughout."""
    steps = np.arange(0, 80, 10)  # 8 logged steps, 7 intervals
    moving = np.array([[-1.0 - 0.1 * i, 1.0 + 0.1 * i, 0.01 * i, 0.5 + 0.01 * i] for i in range(8)])
    a = moving.copy()
    for i in range(8 - frozen_intervals, 8):
        a[i] = a[i - 1] + change * (a[i - 1, 1] - a[i - 1, 0])
    return {"a": (steps, a), "b": (steps, moving)}


def test_dead_layer_needs_window_intervals_up_to_the_end():
    w = R["dead_layer"].window
    assert names(layer_rules.check_dead_layers(_weights(w))) == [("dead_layer", 10 * (7 - w))]
    assert layer_rules.check_dead_layers(_weights(w - 1)) == []


def test_dead_layer_fires_below_the_threshold_only_and_reads_it_from_the_table(table):
    w, k = R["dead_layer"].window, R["dead_layer"].threshold
    assert layer_rules.check_dead_layers(_weights(w, 0.5 * k)) != []
    assert layer_rules.check_dead_layers(_weights(w, 2 * k)) == []
    table("dead_layer", threshold=4 * k)
    assert layer_rules.check_dead_layers(_weights(w, 2 * k)) != []
    table("dead_layer", threshold=k, window=w + 1)
    assert layer_rules.check_dead_layers(_weights(w)) == []


def _spread(collapsed_steps: int, factor: float = 1e-4):
    spreads = np.linspace(2.0, 1.0, 8)
    if collapsed_steps:
        spreads[-collapsed_steps:] = 2.0 * factor
    stats = np.stack([-spreads / 2, spreads / 2, np.zeros(8), spreads / 4], axis=1)
    return np.arange(0, 80, 10), stats


def test_collapsed_histogram_needs_window_steps_up_to_the_end():
    w = R["collapsed_histogram"].window
    assert names(layer_rules.check_collapsed("h", *_spread(w))) == [("collapsed_histogram", 10 * (8 - w))]
    assert layer_rules.check_collapsed("h", *_spread(w - 1)) == []


def test_collapsed_histogram_at_the_threshold_counts_and_reads_it_from_the_table(table):
    w, k = R["collapsed_histogram"].window, R["collapsed_histogram"].threshold
    assert layer_rules.check_collapsed("h", *_spread(w, k)) != []  # "fell below": at most threshold x its first range
    assert layer_rules.check_collapsed("h", *_spread(w, 1.1 * k)) == []
    table("collapsed_histogram", threshold=2 * k)
    assert layer_rules.check_collapsed("h", *_spread(w, 1.1 * k)) != []
    table("collapsed_histogram", threshold=k, window=w + 1)
    assert layer_rules.check_collapsed("h", *_spread(w, k)) == []


# --------------------------------------------------------------------------------------------- learning rate


def test_learning_rate_notes_need_runs_of_window_steps():
    w_warm, w_decay = R["lr_never_warmed_up"].window, R["lr_never_decayed"].window
    assert names(rules.check_learning_rate("lr", s([1e-3] * w_warm))) == [("lr_never_warmed_up", 0),
                                                                         ("lr_never_decayed", 0)]
    assert rules.check_learning_rate("lr", s([1e-3] * (min(w_warm, w_decay) - 1))) == []


def test_learning_rate_notes_at_the_threshold_count():
    w, k = R["lr_never_warmed_up"].window, R["lr_never_warmed_up"].threshold
    ramp = np.concatenate([[k * 1e-3], np.full(w - 1, 1e-3)])  # starts at exactly threshold x the peak
    assert ("lr_never_warmed_up", 0) in names(rules.check_learning_rate("lr", s(ramp)))
    ramp[0] = 0.99 * k * 1e-3
    assert ("lr_never_warmed_up", 0) not in names(rules.check_learning_rate("lr", s(ramp)))
    k_decay = R["lr_never_decayed"].threshold
    decayed = np.full(w, 1e-3)
    decayed[-1] = 0.99 * k_decay * 1e-3
    assert ("lr_never_decayed", 0) not in names(rules.check_learning_rate("lr", s(decayed)))


def test_learning_rate_notes_read_their_numbers_from_the_table(table):
    w = R["lr_never_warmed_up"].window
    short = s([1e-3] * (w // 2))
    assert rules.check_learning_rate("lr", short) == []
    table("lr_never_decayed", window=w // 2)  # each note has its own window
    assert names(rules.check_learning_rate("lr", short)) == [("lr_never_decayed", 0)]
    table("lr_never_warmed_up", window=w // 2)
    assert len(rules.check_learning_rate("lr", short)) == 2
    almost = s(np.concatenate([[0.95e-3], np.full(w // 2 - 1, 1e-3)]))
    assert ("lr_never_warmed_up", 0) not in names(rules.check_learning_rate("lr", almost))
    table("lr_never_warmed_up", threshold=0.9)
    assert ("lr_never_warmed_up", 0) in names(rules.check_learning_rate("lr", almost))
    ends_lower = s(np.concatenate([np.full(w // 2 - 1, 1e-3), [0.95e-3]]))
    assert ("lr_never_decayed", 0) not in names(rules.check_learning_rate("lr", ends_lower))
    table("lr_never_decayed", threshold=0.9)
    assert ("lr_never_decayed", 0) in names(rules.check_learning_rate("lr", ends_lower))


def test_divergence_in_the_first_updates_is_named_though_the_start_hides_it():
    """A far too high rate: the loss jumps at once and never comes back below its first value, so the
    largest of the first points (the start the rise is measured from) is itself the jump."""
    w = R["divergence"].window
    jumped = [2.3, 15.0, 6.5, 22.0] + [5.0, 7.0, 4.5, 6.0] * 5
    assert names(rules.check_divergence("l", s(jumped)))[0][0] == "divergence"
    healthy = [2.3, 15.0, 6.5] + [2.0, 1.5, 1.2, 1.0] * 5  # back below its first value: no divergence
    assert rules.check_divergence("l", s(healthy)) == []
    assert rules.check_divergence("l", s(jumped[: 2 * w - 1])) == []  # too short to say


def _relu_histograms(shares: list[float], low: float = 0.0):
    """One activations histogram per step (step 10 * i): ``share`` of 1,000 values in the lowest bucket,
    the rest in the next; ``low`` is the smallest value (a ReLU's output: 0)."""
    rows = []
    for share in shares:
        zeros = round(1000 * share)
        rows.append({"min": low, "counts": [0, zeros, 1000 - zeros]})
    return pd.DataFrame(rows)


def test_dead_units_threshold_window_and_non_relu_histograms():
    k, w = RULES["dead_units"].threshold, RULES["dead_units"].window
    steps = np.arange(0, 60, 10)
    healthy = [0.5] * 6
    dying = [0.5, 0.6, 0.7, 0.95, 0.97, 0.99]
    shares = layer_rules.zero_bucket_share(_relu_histograms(dying))
    assert names(layer_rules.check_dead_units("a", steps, shares)) == [("dead_units", 30)]
    assert layer_rules.check_dead_units("a", steps, layer_rules.zero_bucket_share(_relu_histograms(healthy))) == []
    at_edge = layer_rules.zero_bucket_share(_relu_histograms([0.5] * (6 - w) + [k] * w))
    assert layer_rules.check_dead_units("a", steps, at_edge) == []  # "more than" the threshold
    too_short = layer_rules.zero_bucket_share(_relu_histograms([0.5] * (7 - w) + [0.99] * (w - 1)))
    assert layer_rules.check_dead_units("a", steps, too_short) == []
    # a histogram with negative values is no ReLU's output: never dead units, however peaked
    tanh = layer_rules.zero_bucket_share(_relu_histograms(dying, low=-0.5))
    assert np.isnan(tanh).all() and layer_rules.check_dead_units("a", steps, tanh) == []


def test_rising_loss_must_rise_above_the_runs_own_noise():
    """Two stretches of a small batch's noisy loss: a 6 % rise of the means within 3 standard errors is
    noise; the same rise on a quiet loss is a finding."""
    n = 40
    rng = np.random.default_rng(0)
    steps = np.arange(2 * n)
    level = np.r_[np.full(3 * n // 2, 1.0), np.full(n // 2, 1.06)]  # the last quarter rises
    noisy = level + rng.normal(scale=0.3, size=2 * n)
    quiet = level + rng.normal(scale=0.01, size=2 * n)
    assert rules.check_rising("loss", (steps, noisy)) == []
    assert [f.rule for f in rules.check_rising("loss", (steps, quiet))] == ["rising_loss"]


def test_rising_loss_compares_the_last_stretch_with_the_best_one_before_it():
    """A loss that fell to 0.1, then jumped to 1.2 at 60 % of the run and stayed (a shard of bad labels):
    the quarter before the last straddles the jump, so its noise hides the rise from a comparison of the last
    two quarters; the best stretch before (0.1) does not. A loss still falling, noisily, is no finding, nor
    one whose last stretch is within the threshold of its best."""
    rng = np.random.default_rng(1)
    steps = np.arange(200)
    noise = rng.normal(scale=0.02, size=200)
    jumped = np.where(steps < 120, 0.1, 1.2) + noise
    found = rules.check_rising("loss", (steps, jumped))
    assert [f.rule for f in found] == ["rising_loss"] and found[0].step < 120
    falling = 2.0 * np.exp(-steps / 50) + 0.1 + np.abs(noise)
    assert rules.check_rising("loss", (steps, falling)) == []
    k = R["rising_loss"].threshold
    flat = np.where(steps < 150, 1.0, 1.0 + 0.8 * k) + rng.normal(scale=0.001, size=200)
    assert rules.check_rising("loss", (steps, flat)) == []
    assert rules.check_rising("loss", (steps, np.where(steps < 150, 1.0, 1.0 + 1.2 * k))) != []


def test_an_early_jump_is_a_divergence_and_a_noisy_first_point_is_not():
    steps = np.arange(20)
    jumped = np.r_[1.0, np.full(19, 2.0)]
    noisy_start = np.r_[1.0, 1.0 + np.linspace(0.2, 0.01, 19)]  # above its first point, never 1.5x it
    assert [f.rule for f in rules.check_divergence("loss", (steps, jumped))] == ["divergence"]
    assert rules.check_divergence("loss", (steps, noisy_start)) == []


def test_a_lone_gradient_spike_is_noise_and_a_lasting_one_explodes():
    steps = np.arange(60)
    base = np.full(60, 0.2)
    lone, lasting = base.copy(), base.copy()
    lone[40] = 5.0
    lasting[40:] = 5.0
    at_the_end = base.copy()
    at_the_end[-1] = 5.0
    assert rules.check_exploding("g", (steps, lone)) == []
    assert [f.step for f in rules.check_exploding("g", (steps, lasting))] == [40]
    assert [f.step for f in rules.check_exploding("g", (steps, at_the_end))] == [59]


def test_overfitting_must_rise_above_one_evaluations_noise():
    """A validation curve that jumps from evaluation to evaluation (unscaled inputs) ends above its lowest
    draw without turning; a smooth one that turns up overfits."""
    val_steps = np.arange(0, 260, 10)
    train = (np.arange(260), np.linspace(2.0, 0.1, 260))
    jumpy = 0.35 + 0.25 * np.where(np.arange(26) % 2, 1.0, -0.6)  # 0.2 / 0.6, alternating
    jumpy[19], jumpy[-1] = 0.18, 0.26
    turning = np.r_[np.linspace(2.0, 0.3, 13), np.linspace(0.31, 0.6, 13)]
    assert validation_rules.check_overfitting("val", (val_steps, jumpy), train) == []
    assert [f.step for f in validation_rules.check_overfitting("val", (val_steps, turning), train)] == [120]


def test_a_spike_that_recovers_is_a_warning_and_one_that_does_not_is_a_divergence():
    steps = np.arange(200)
    loss = np.linspace(2.0, 0.5, 200)
    recovered, stuck = loss.copy(), loss.copy()
    recovered[100:110] = 9.0  # 10 steps up, then 90 calm ones
    stuck[100:] = 9.0
    late = loss.copy()
    late[180:] = 9.0  # no calm window after it: it may not have recovered
    assert [(f.rule, f.severity, f.step) for f in rules.check_divergence("loss", (steps, recovered))] == [
        ("loss_spike", "warning", 100)]
    assert [f.rule for f in rules.check_divergence("loss", (steps, stuck))] == ["divergence"]
    assert [f.rule for f in rules.check_divergence("loss", (steps, late))] == ["divergence"]
    nan_spike = recovered.copy()
    nan_spike[100] = np.nan
    assert [f.rule for f in rules.check_divergence("loss", (steps, nan_spike))] == ["divergence"]


def test_a_gradient_scalers_skipped_steps_are_the_steps_where_its_scale_fell():
    steps = np.arange(10)
    grad = np.r_[1.0, 1.1, np.inf, 1.0, 1.2, np.inf, 1.1, 1.0, np.nan, 1.0]
    scale_after = np.r_[8.0, 8.0, 4.0, 4.0, 4.0, 2.0, 2.0, 2.0, 2.0, 2.0]  # logged after the update
    scale_before = np.r_[8.0, 8.0, 8.0, 4.0, 4.0, 4.0, 2.0, 2.0, 2.0, 2.0]  # logged before it
    for scale in (scale_after, scale_before):
        assert rules.scaler_skips((steps, grad), (steps, scale)).tolist() == [2, 5]  # not 8: scale held


def test_overfitting_with_sparse_evaluations_after_a_completed_schedule():
    """Three evaluations after the best one: early stopping's excuse, unless the learning rate went through
    its whole schedule; and not when the validation accuracy ended higher."""
    val = (np.array([500, 1000, 1500, 2000]), np.array([0.8, 0.6, 0.7, 0.9]))
    train = (np.arange(2001), np.linspace(2.0, 0.1, 2001))
    decayed = (np.arange(2001), np.linspace(1e-3, 1e-5, 2001))
    constant = (np.arange(2001), np.full(2001, 1e-3))
    assert not validation_rules.schedule_completed(constant) and validation_rules.schedule_completed(decayed)
    assert validation_rules.check_overfitting("val", val, train, completed=False) == []
    assert [f.step for f in validation_rules.check_overfitting("val", val, train, completed=True)] == [1000]
    rising_accuracy = (val[0], np.array([0.6, 0.7, 0.72, 0.75]))
    assert validation_rules.check_overfitting("val", val, train, completed=True, accuracy=rising_accuracy) == []
