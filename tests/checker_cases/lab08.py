"""Answers to lab 8: the diagnosis and cure of six broken runs, and a plateau rule."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from tests.checker_cases import Cases, Wrong

W, X = 10, 0.01

# ---------------------------------------------------------------- lab08.diagnose_runs: right

KEY = {
    "run_a": ("lr_too_low", "lr", "raise"),
    "run_b": ("exploding_gradients", "grad_clip", "set"),
    "run_c": ("overfitting", "train_examples", "raise"),
    "run_d": ("vanishing_gradients", "residual", "set"),
    "run_e": ("nan_loss", "loss", "change"),
    "run_f": ("shuffled_labels", "labels", "change"),
}


def the_key():
    return dict(KEY)


def written_loosely():
    """Lists instead of tuples, short run names, capitals, spaces and dashes."""
    return {"A": ["LR too low", "lr", "Raise"], "b": ["exploding-gradients", "grad_clip", "set"],
            "Run_C": [" overfitting ", "train examples", "raise"],
            "run-d": ["Vanishing gradients", "Residual", "set"], "e": ["NaN loss", "loss", "change"],
            "f": ["shuffled labels", "labels", "change"]}


def other_cures():
    """Every problem cured by another change chapter 8 measured to work."""
    return {**KEY, "run_b": ("exploding_gradients", "lr", "lower"),
            "run_c": ("overfitting", "patience", "set"),
            "run_d": ("vanishing_gradients", "norm", "set")}


def activation_for_vanishing():
    return {**KEY, "run_d": ("vanishing_gradients", "activation", "change")}


def xavier_for_vanishing():
    """Xavier's initialisation, scaled for the sigmoid: chapter 8's vanishing-xavier run learns."""
    return {**KEY, "run_d": ("vanishing_gradients", "init", "change")}


def the_right_scale_and_weight_decay():
    """The exploding run's weights drawn at He's scale; weight decay against overfitting."""
    return {**KEY, "run_b": ("exploding_gradients", "init_gain", "lower"),
            "run_c": ("overfitting", "weight_decay", "raise")}


# ---------------------------------------------------------------- lab08.diagnose_runs: wrong


def too_low_called_vanishing():
    return {**KEY, "run_a": ("vanishing_gradients", "activation", "change")}


def vanishing_called_too_low():
    return {**KEY, "run_d": ("lr_too_low", "lr", "raise")}


def shuffled_called_overfitting():
    return {**KEY, "run_f": ("overfitting", "train_examples", "raise")}


def exploding_called_nan():
    return {**KEY, "run_b": ("nan_loss", "loss", "change")}


def nan_called_exploding():
    return {**KEY, "run_e": ("exploding_gradients", "grad_clip", "set")}


def overfitting_called_healthy():
    return {**KEY, "run_c": ("healthy", None, None)}


def clipping_against_vanishing():
    return {**KEY, "run_d": ("vanishing_gradients", "grad_clip", "set")}


def another_init_against_exploding():
    """The initialisation scheme is right (He's, for ReLU); its scale is what is wrong."""
    return {**KEY, "run_b": ("exploding_gradients", "init", "change")}


def raises_the_init_gain_of_an_exploding_run():
    return {**KEY, "run_b": ("exploding_gradients", "init_gain", "raise")}


def lowers_a_too_low_lr():
    return {**KEY, "run_a": ("lr_too_low", "lr", "lower")}


def more_steps_at_a_too_low_lr():
    return {**KEY, "run_a": ("lr_too_low", "steps", "raise")}


def lower_lr_against_nan():
    return {**KEY, "run_e": ("nan_loss", "lr", "lower")}


def dropout_against_overfitting():
    return {**KEY, "run_c": ("overfitting", "dropout", "raise")}


def augmentation_against_overfitting():
    return {**KEY, "run_c": ("overfitting", "augment", "set")}


def rescales_inputs_against_shuffled_labels():
    return {**KEY, "run_f": ("shuffled_labels", "inputs", "change")}


def everything_lr_too_high():
    return dict.fromkeys(KEY, ("lr_too_high", "lr", "lower"))


def problem_not_in_the_vocabulary():
    return {**KEY, "run_b": ("gradient_explosion", "grad_clip", "set")}


def setting_that_does_not_exist():
    return {**KEY, "run_b": ("exploding_gradients", "clip_norm", "set")}


def change_not_in_the_vocabulary():
    return {**KEY, "run_a": ("lr_too_low", "lr", "increase")}


def problem_only():
    return {name: problem for name, (problem, _, _) in KEY.items()}


def a_run_left_out():
    return {name: answer for name, answer in KEY.items() if name != "run_f"}


def a_run_that_does_not_exist():
    return {**KEY, "run_g": ("healthy", None, None)}


def answers_as_a_list():
    return list(KEY.values())


def forgets_to_return():
    answers = dict(KEY)
    answers.update(run_a=("lr_too_low", "lr", "raise"))  # and no return


# ---------------------------------------------------------------- lab08.plateau_rule: right


def numpy_means(steps, values):
    values = np.asarray(values, dtype=float)
    finite = np.isfinite(values)
    steps, values = np.asarray(steps)[finite], values[finite]
    if len(values) < 2 * W:
        return None
    means = np.convolve(values, np.ones(W) / W, mode="valid")
    for j in range(len(means) - W):
        if means[j + 1:].min() >= (1 - X) * means[j]:
            return int(steps[j + W - 1])
    return None


def python_loops(steps, values):
    points = [(s, v) for s, v in zip(steps, values, strict=True) if math.isfinite(v)]
    if len(points) < 2 * W:
        return None
    means = [sum(v for _, v in points[k - W + 1:k + 1]) / W for k in range(W - 1, len(points))]
    for i in range(W - 1, len(points) - W):  # i: a point with W points after it
        mine = means[i - W + 1]
        if all(later >= (1 - X) * mine for later in means[i - W + 2:]):
            return points[i][0]
    return None


def pandas_rolling(steps, values):
    """Rolling means, and the minimum of every later mean by a reversed cumulative minimum."""
    series = pd.Series(values, index=steps, dtype=float)
    series = series[np.isfinite(series.to_numpy())]
    if len(series) < 2 * W:
        return None
    means = series.rolling(W).mean().dropna()
    later = means[::-1].cummin()[::-1].shift(-1)  # the smallest mean after each point
    ok = (later >= (1 - X) * means).to_numpy()[:len(means) - W]
    return int(means.index[ok.argmax()]) if ok.any() else None


# ---------------------------------------------------------------- lab08.plateau_rule: wrong


def _rule(steps, values, window=W, tolerance=X, ahead=None, later_points=W, absolute=False):
    values = np.asarray(values, dtype=float)
    finite = np.isfinite(values)
    steps, values = np.asarray(steps)[finite], values[finite]
    if len(values) < 2 * W:
        return None
    means = np.convolve(values, np.ones(window) / window, mode="valid")
    for j in range(len(means) - later_points):
        later = means[j + 1:] if ahead is None else means[j + 1:j + 1 + ahead]
        floor = means[j] - tolerance if absolute else (1 - tolerance) * means[j]
        if later.min(initial=np.inf) >= floor:
            return int(steps[j + window - 1])
    return None


def returns_the_index(steps, values):
    found = numpy_means(steps, values)
    return None if found is None else int(np.flatnonzero(np.asarray(steps) == found)[0])


def reports_the_window_start(steps, values):
    found = numpy_means(steps, values)
    if found is None:
        return None
    finite = np.asarray(steps)[np.isfinite(values)]
    return int(finite[np.flatnonzero(finite == found)[0] - W + 1])


def tolerance_in_percent(steps, values):
    return _rule(steps, values, tolerance=1.0)


def needs_no_later_points(steps, values):
    return _rule(steps, values, later_points=0)


def looks_only_a_window_ahead(steps, values):
    return _rule(steps, values, ahead=W)


def absolute_tolerance(steps, values):
    return _rule(steps, values, absolute=True)


def single_points(steps, values):
    return _rule(steps, values, window=1)


def drops_values_not_steps(steps, values):
    values = np.asarray(values, dtype=float)
    kept = values[np.isfinite(values)]
    found = numpy_means(np.arange(len(kept)), kept)
    return None if found is None else int(np.asarray(steps)[found])


def keeps_the_nans(steps, values):
    """Smooths NaN and inf along: a NaN mean compares False, an inf one True."""
    values = np.asarray(values, dtype=float)
    if len(values) < 2 * W:
        return None
    means = np.convolve(values, np.ones(W) / W, mode="valid")
    for j in range(len(means) - W):
        if all(later >= (1 - X) * means[j] for later in means[j + 1:]):
            return int(steps[j + W - 1])
    return None


def crashes_on_short_curves(steps, values):
    values = np.asarray(values, dtype=float)
    finite = np.isfinite(values)
    steps, values = np.asarray(steps)[finite], values[finite]
    means = np.convolve(values, np.ones(W) / W, mode="valid")
    best = means[0]  # IndexError on a curve of fewer than W points
    for j in range(len(means) - W):
        best = min(best, means[j])
        if means[j + 1:].min() >= (1 - X) * means[j]:
            return int(steps[j + W - 1])
    return None


def replaces_nans_in_place(steps, values):
    values[~np.isfinite(values)] = np.nanmedian(values)
    return numpy_means(steps, values)


def says_whether(steps, values):
    return numpy_means(steps, values) is not None


def forgets_to_return_the_step(steps, values):
    numpy_means(steps, values)


def falls_back_to_the_last_step(steps, values):
    """Returns the last step when no point qualifies, instead of None."""
    found = numpy_means(steps, values)
    return int(np.asarray(steps)[-1]) if found is None and len(steps) else found


def next_mean_only(steps, values):
    """Compares each mean with the next one only: the first small step is taken for a plateau."""
    return _rule(steps, values, ahead=1)


def within_one_percent_of_the_end(steps, values):
    """The first point within 1% of the final mean: a curve that still falls gets a plateau near its end."""
    values = np.asarray(values, dtype=float)
    finite = np.isfinite(values)
    steps, values = np.asarray(steps)[finite], values[finite]
    if len(values) < 2 * W:
        return None
    means = np.convolve(values, np.ones(W) / W, mode="valid")
    close = np.flatnonzero(means <= (1 + X) * means[-1])
    return int(steps[close[0] + W - 1])


CASES = {
    "lab08.diagnose_runs": Cases(
        correct=[the_key, written_loosely, other_cures, activation_for_vanishing, xavier_for_vanishing,
                 the_right_scale_and_weight_decay],
        wrong=[
            Wrong(too_low_called_vanishing, "small in every layer alike"),
            Wrong(vanishing_called_too_low, "yet its first layers barely move"),
            Wrong(shuffled_called_overfitting, "never fell below chance"),
            Wrong(exploding_called_nan, "grew by orders of magnitude before the loss gave out"),
            Wrong(nan_called_exploding, "the loss itself computed a NaN"),
            Wrong(overfitting_called_healthy, "run_c is not healthy: it shows that the training loss"),
            Wrong(clipping_against_vanishing, "clipping does not cure vanishing gradients"),
            Wrong(another_init_against_exploding, "yet not its scheme"),
            Wrong(raises_the_init_gain_of_an_exploding_run,
                  "not to raise: this run recorded init_gain=1.8; lower it"),
            Wrong(lowers_a_too_low_lr, "not to lower: this run recorded lr=0.0005; raise it"),
            Wrong(more_steps_at_a_too_low_lr, "about 100x as many updates"),
            Wrong(lower_lr_against_nan, "does not stop 0 / 0"),
            Wrong(dropout_against_overfitting, "dropout at 0.2, 0.5 and 0.8 did not shrink the gap"),
            Wrong(augmentation_against_overfitting, "up to one pixel left the run overfitting"),
            Wrong(rescales_inputs_against_shuffled_labels,
                  "change inputs is not what cures shuffled_labels: its healthy twin differs from it in "
                  "labels only (labels=shuffled here, paired there)"),
            Wrong(everything_lr_too_high, "6 of the 6 runs"),
            Wrong(problem_not_in_the_vocabulary, "'gradient_explosion' is not one of the problems"),
            Wrong(setting_that_does_not_exist, "'clip_norm' is not a setting"),
            Wrong(change_not_in_the_vocabulary, "'increase' is not a change"),
            Wrong(problem_only, "give a tuple (problem, setting, change)"),
            Wrong(a_run_left_out, "no answer for run_f"),
            Wrong(a_run_that_does_not_exist, "not a run of this lab"),
            Wrong(answers_as_a_list, "return a dict"),
            Wrong(forgets_to_return, "returned None"),
        ],
    ),
    "lab08.plateau_rule": Cases(
        correct=[numpy_means, python_loops, pandas_rolling],
        wrong=[
            Wrong(returns_the_index, "position of the point in the arrays"),
            Wrong(reports_the_window_start, "off by the window"),
            Wrong(tolerance_in_percent, "1% is 0.01"),
            Wrong(needs_no_later_points, "fewer than 10 points after it"),
            Wrong(looks_only_a_window_ahead, "only looks 10 means ahead"),
            Wrong(absolute_tolerance, "absolute 0.01"),
            Wrong(single_points, "compares single points"),
            Wrong(drops_values_not_steps, "not their steps"),
            Wrong(keeps_the_nans, "NaN or inf"),
            Wrong(crashes_on_short_curves, "too short to show a plateau"),
            Wrong(replaces_nans_in_place, "changed the steps or values"),
            Wrong(says_whether, "not True/False"),
            Wrong(forgets_to_return_the_step, "misses the plateau"),
            Wrong(falls_back_to_the_last_step, "false alarm: it reports a plateau at step 199"),
            Wrong(next_mean_only, "the plateau starts at step 102"),
            Wrong(within_one_percent_of_the_end, "fewer than 10 points after it"),
        ],
    ),
}
