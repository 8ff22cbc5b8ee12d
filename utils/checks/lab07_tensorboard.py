"""Checkers of lab 7 (``labs/lab07_tensorboard.ipynb``): a custom-scalars layout, PR curves for a
classifier, and the step at which a run's validation loss stopped improving.

The first two checkers call the reader's function with a real ``tb.RunWriter`` on a temporary run, read the
event files back with TensorBoard's loader and say what is missing or wrong in them (a wrong tag, a wrong
chart type, a curve built from labels instead of scores). The third writes runs for the reader's function
to read. A mistake is named only when the answer's output equals that mistake's exactly (see
``utils.checks``).
"""

from __future__ import annotations

import math
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from utils.checks import CheckFailed, call, checker, passed

# The tags the lab's classifier run logs (``loop.train`` plus its evaluation function).
LOGGED_TAGS = ("train/loss", "train/accuracy", "train/lr", "train/grad_norm", "perf/examples_per_s",
               "val/loss", "val/accuracy", "val/accuracy_low", "val/accuracy_high")
LOSS_TAGS = ("train/loss", "val/loss")
BAND = ("val/accuracy", "val/accuracy_low", "val/accuracy_high")  # (value, lower, upper)


def _written_run(write: Callable[[Any], Any], root: str, name: str) -> Path:
    """Open a fresh run under ``root``, let the reader's function write into it, close it."""
    from utils import tb

    with tb.open_run("lab07", name, root=root) as writer:
        call(write, writer)
        return Path(writer.logdir)


# --------------------------------------------------------------------------- lab07.layout


def _matches(pattern: str, tag: str) -> bool:
    """Whether a Multiline chart's entry selects ``tag``: the tag itself, or a regular expression that
    matches all of it."""
    try:
        return pattern == tag or re.fullmatch(pattern, tag) is not None
    except re.error:
        return False


def _selected(patterns: list[str]) -> set[str]:
    return {tag for tag in LOGGED_TAGS for p in patterns if _matches(p, tag)}


def _loss_chart_fault(charts) -> str | None:
    """What is wrong with the train-against-validation chart, or None when a Multiline chart selects
    exactly train/loss and val/loss."""
    multiline = [row.tags for row in charts.itertuples() if row.kind == "multiline"]
    if any(_selected(tags) == set(LOSS_TAGS) for tags in multiline):
        return None
    margin_tags = {tag for row in charts.itertuples() if row.kind == "margin"
                   for series in row.tags for tag in series}
    if set(LOSS_TAGS) & margin_tags:
        return ("train/loss and val/loss are in a Margin chart: two curves in one chart are a Multiline "
                "chart (a Margin chart draws one value with a band)")
    for tags in multiline:
        chosen = _selected(tags)
        unknown = [p for p in tags if not any(_matches(p, t) for t in LOGGED_TAGS)]
        if unknown:
            return (f"the Multiline chart's tags {unknown} match no tag the run logs (it logs "
                    f"{', '.join(LOGGED_TAGS)}): check the spelling, as logged (train/loss, not loss/train)")
        if set(LOSS_TAGS) < chosen:
            return (f"the Multiline chart selects {sorted(chosen)}: a pattern matches more than train/loss "
                    "and val/loss")
        if chosen and chosen < set(LOSS_TAGS):
            return f"the Multiline chart shows only {sorted(chosen)}: put train/loss and val/loss in it"
    return "no Multiline chart shows train/loss and val/loss together"


def _band_fault(charts) -> str | None:
    """What is wrong with the accuracy band, or None when a Margin chart has the series
    (val/accuracy, val/accuracy_low, val/accuracy_high)."""
    series = [tuple(s) for row in charts.itertuples() if row.kind == "margin" for s in row.tags]
    if BAND in series:
        return None
    for triple in series:
        if set(triple) == set(BAND):
            if triple[0] == BAND[0]:
                return "the band's lower and upper tags are swapped: a Margin series is [value, lower, upper]"
            return (f"the Margin series is {list(triple)}: its order is [value, lower, upper], i.e. "
                    f"{list(BAND)}")
    in_multiline = {tag for row in charts.itertuples() if row.kind == "multiline"
                    for tag in _selected(row.tags)}
    if set(BAND) <= in_multiline:
        return ("the accuracy and its bounds are in a Multiline chart: three separate lines. A band is a "
                "Margin chart: ['Margin', [value, lower, upper]]")
    if series:
        return (f"the Margin chart's series are {[list(s) for s in series]}; expected {list(BAND)} "
                f"(tags the run logs: {', '.join(LOGGED_TAGS)})")
    return "no Margin chart: draw val/accuracy with its interval as ['Margin', [value, lower, upper]]"


@checker("lab07.layout")
def check_layout(log_layout: Callable[[Any], Any]) -> None:
    """``log_layout(writer)`` writes a custom-scalars layout with a Multiline chart of train/loss and
    val/loss and a Margin chart of val/accuracy between val/accuracy_low and val/accuracy_high."""
    from utils import tb
    from utils.tb.reading import read_custom_scalars

    with tempfile.TemporaryDirectory(prefix="lab07-layout-") as root:
        run = _written_run(log_layout, root, "layout")
        charts = read_custom_scalars(run)
        children = [str(p.relative_to(run)) for p in tb.list_runs(run) if p != run]
    if charts.empty:
        if children:
            raise CheckFailed(f"no layout, but new runs {children}: add_scalars writes one run per key. A "
                              "layout is writer.add_custom_scalars({category: {title: [kind, tags]}})")
        raise CheckFailed("the run holds no custom-scalars layout: call writer.add_custom_scalars(layout) "
                          "with a dict {category: {chart title: ['Multiline' or 'Margin', tags]}}")
    fault = _loss_chart_fault(charts) or _band_fault(charts)
    if fault:
        raise CheckFailed(f"{fault}.\n  Your layout, as TensorBoard reads it:\n{charts.to_string(index=False)}")
    passed("lab07.layout")


# --------------------------------------------------------------------------- lab07.pr_curves


# Fewer thresholds than this make a handful of points, not a curve to read a threshold off (the default is 127).
MIN_THRESHOLDS = 10


def classifier_outputs(seed: int = 0, n: int = 240, classes: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Labels (N,) in 0..C-1 and softmax probabilities (N, C) of an imperfect classifier, for the check."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    logits = rng.normal(size=(n, classes)) + 2.0 * np.eye(classes)[labels]
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return labels, probs


def reference_curve(labels: np.ndarray, scores: np.ndarray, num_thresholds: int) -> np.ndarray:
    """The (6, num_thresholds) array ``add_pr_curve`` stores: tp, fp, tn, fn, precision, recall."""
    from tensorboardX.summary import compute_curve

    return compute_curve(np.asarray(labels), np.asarray(scores, dtype=float), num_thresholds=num_thresholds)


def _pr_mistakes(labels: np.ndarray, probs: np.ndarray, c: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(labels, scores) each named mistake passes to add_pr_curve for class ``c``."""
    predicted = probs.argmax(axis=1)
    is_c = (labels == c).astype(int)
    return {
        "the curve is built from predicted labels (argmax), not from scores: every threshold above 0 makes "
        "the same decision, so the curve has two points. Pass the class's probability, probs[:, c]":
            (is_c, (predicted == c).astype(float)),
        "the labels are the class numbers, not 0/1 for this class: tensorboardX weighs each example by its "
        "label. Pass labels == c": (labels, probs[:, c]),
        "the scores are the probability of the predicted class (probs.max(1)) for every class: use the "
        "column of the class the curve is for, probs[:, c]": (is_c, probs.max(axis=1)),
        "the scores are 1 - p: a higher score must mean 'more likely this class'": (is_c, 1 - probs[:, c]),
        "labels and scores are swapped: add_pr_curve(tag, labels, predictions, step)":
            (probs[:, c], is_c.astype(float)),
        "each curve uses the next class's column: class c needs probs[:, c]":
            (is_c, probs[:, (c + 1) % probs.shape[1]]),
    }


def _hard_decisions(stored: np.ndarray, expected: np.ndarray) -> bool:
    """Whether a curve with the right labels (the counts at threshold 0 are right) was built from 0/1
    predictions: every threshold above 0 counts the same true and false positives. The check's scores are
    spread over (0, 1), so a curve of its probabilities never looks like this."""
    tp, fp = stored[0], stored[1]
    return (np.allclose(stored[:2, 0], expected[:2, 0]) and np.allclose(tp[1:], tp[1])
            and np.allclose(fp[1:], fp[1]))


def _curve_fault(stored: np.ndarray, labels: np.ndarray, probs: np.ndarray, c: int) -> str | None:
    n = stored.shape[1]
    expected = reference_curve(labels == c, probs[:, c], n)
    if np.allclose(stored, expected, rtol=1e-5, atol=1e-6):
        return None
    for mistake, (given_labels, scores) in _pr_mistakes(labels, probs, c).items():
        if np.allclose(stored, reference_curve(given_labels, scores, n), rtol=1e-5, atol=1e-6):
            return mistake
    if _hard_decisions(stored, expected):
        return (f"the predictions are 0/1 decisions (the labels themselves, or scores already thresholded), "
                f"not scores: every threshold above 0 counts the same {stored[0, 1]:.0f} true and "
                f"{stored[1, 1]:.0f} false positives, so the curve has two points. Pass the class's "
                f"probability, probs[:, {c}], as the predictions")
    differ = np.flatnonzero(~np.isclose(stored[:2], expected[:2], rtol=1e-5, atol=1e-6).all(axis=0))
    if differ.size == 0:  # the counts agree; the stored precision or recall do not
        return (f"the counts match a curve of labels == {c} against probs[:, {c}] but its precision and "
                "recall do not: pass labels and scores to add_pr_curve and let it compute them")
    i = int(differ[0])
    threshold = i / (n - 1)
    return (f"the counts differ from a curve of labels == {c} against probs[:, {c}]: at threshold "
            f"{threshold:.3f} yours has {stored[0, i]:.0f} true and {stored[1, i]:.0f} false positives, "
            f"expected {expected[0, i]:.0f} and {expected[1, i]:.0f}")


@checker("lab07.pr_curves")
def check_pr_curves(log_pr_curves: Callable[..., Any]) -> None:
    """``log_pr_curves(writer, labels, probs, step)``: one PR curve per class ``c``, tag ``pr/class_<c>``,
    labels ``labels == c`` against scores ``probs[:, c]``, at ``step``."""
    from utils.tb.reading import accumulator, read_pr_curves

    labels, probs = classifier_outputs()
    step = 7
    expected = [f"pr/class_{c}" for c in range(probs.shape[1])]
    with tempfile.TemporaryDirectory(prefix="lab07-pr-") as root:
        run = _written_run(lambda w: log_pr_curves(w, labels.copy(), probs.copy(), step), root, "pr")
        acc = accumulator(run)
        logged = sorted(t for t in acc.Tags()["tensors"]
                        if acc.summary_metadata[t].plugin_data.plugin_name == "pr_curves")
        if not logged:
            raise CheckFailed("the run holds no PR curve: call writer.add_pr_curve(tag, labels, scores, step) "
                              "once per class")
        if logged != expected:
            raise CheckFailed(f"PR-curve tags {logged}; expected {expected}: one curve per class, named "
                              "pr/class_<c>")
        curves = {c: read_pr_curves(run, tag) for c, tag in enumerate(expected)}
    for c, frame in curves.items():
        if frame.step.tolist() != [step]:
            raise CheckFailed(f"pr/class_{c} is logged at steps {frame.step.tolist()}; log it once, at the "
                              f"step given ({step})")
        row = frame.iloc[0]
        stored = np.stack([row.tp, row.fp, row.tn, row.fn, row.precision, row.recall])
        if stored.shape[1] < MIN_THRESHOLDS:
            raise CheckFailed(f"pr/class_{c} has num_thresholds={stored.shape[1]}: a PR curve needs many "
                              f"thresholds to be a curve (each threshold is one point; the lab then reads a "
                              f"threshold off it). Leave the default (127) or pass at least {MIN_THRESHOLDS}")
        fault = _curve_fault(stored, labels, probs, c)
        if fault:
            raise CheckFailed(f"pr/class_{c}: {fault}")
    passed("lab07.pr_curves")


# --------------------------------------------------------------------------- lab07.stopped_improving

# name -> {step: validation loss}; each run also logs train/loss at every step and a smoothed val/loss_ema.
VAL_CASES = {
    "rises after step 40": {0: 2.0, 10: 1.2, 20: 0.9, 30: 0.7, 40: 0.6, 50: 0.65, 60: 0.7, 70: 0.8, 79: 0.9},
    "a tie at steps 30 and 60": {0: 2.0, 10: 1.0, 20: 0.8, 30: 0.5, 40: 0.6, 50: 0.55, 60: 0.5, 70: 0.7,
                                 79: 0.75},
    "improves to the last step": {0: 2.0, 10: 1.5, 20: 1.1, 30: 0.9, 40: 0.8, 50: 0.7, 60: 0.65, 70: 0.6,
                                  79: 0.58},
    "never improves": {0: 0.5, 10: 0.7, 20: 0.8, 30: 0.9, 40: 1.0, 50: 1.0, 60: 1.1, 70: 1.2, 79: 1.3},
    # a first low at step 20, beaten after a rise: the best value comes after the first rise
    "falls again after a rise": {0: 2.0, 10: 1.2, 20: 0.9, 30: 1.0, 40: 0.8, 50: 0.6, 60: 0.5, 70: 0.55,
                                 79: 0.6},
    "two bumps": {0: 2.0, 10: 1.4, 20: 1.1, 30: 0.9, 40: 0.95, 50: 0.8, 60: 0.85, 70: 0.6, 79: 0.65},
}
LAST_STEP = 79


def reference_stopped(val: dict[int, float]) -> int:
    """The step of the lowest validation loss, the first one when it ties (a tie is no improvement)."""
    best = min(val.values())
    return min(step for step, value in val.items() if value == best)


def write_val_case(root: str | Path, name: str, val: dict[int, float]):
    """A run with ``val/loss`` at the steps of ``val``, ``train/loss`` at every step (falling, so lowest at
    the last step) and ``val/loss_ema``, a tag that also starts with ``val/loss`` and is lowest at step 10."""
    from utils import tb

    with tb.open_run("lab07", name, root=root) as writer:
        for step in range(LAST_STEP + 1):
            writer.add_scalar("train/loss", 2.0 / (1 + step / 10), step)
        for step, value in val.items():
            writer.add_scalar("val/loss", value, step)
            writer.add_scalar("val/loss_ema", 0.0 if step == 10 else value + 0.1, step)
        return Path(writer.logdir)


def _stopped_variants(val: dict[int, float]) -> dict[str, Any]:
    """What each named mistake returns for one run (None where it happens to be right)."""
    steps, values = list(val), list(val.values())
    first = reference_stopped(val)
    last_tie = max(step for step, value in val.items() if value == min(values))
    after = steps[steps.index(first) + 1] if first != steps[-1] else first
    # the last evaluation before the first one that does not improve (a rise, or a tie)
    stalls = [i for i in range(1, len(values)) if values[i] >= values[i - 1]]
    before_rise = steps[stalls[0] - 1] if stalls else steps[-1]
    variants = {
        "it returns the position of the best evaluation in the list, not its step (evaluations are every "
        "10 steps)": steps.index(first),
        "it returns the lowest loss itself: return the step at which it was logged": min(values),
        "it returns the last of several steps that tie for the lowest loss: a tie is no improvement, so the "
        "loss stopped improving at the first": last_tie,
        "it returns the first evaluation after the best one: return the step of the best": after,
        f"it returns {LAST_STEP}, the run's last step, where train/loss is lowest: find the lowest val/loss":
            LAST_STEP,
        "it mixes in another tag: val/loss_ema also starts with 'val/loss' (and is lowest at step 10); "
        "select the rows whose tag is exactly 'val/loss'": 10,
        "it returns the step before the first rise of val/loss: the loss may rise for a while and then fall "
        "below its earlier low, so the best value may come after a rise. Return the step of the lowest "
        "val/loss over the whole run": before_rise,
    }
    return {mistake: (value if value != first else None) for mistake, value in variants.items()}


def _same(got: float, variant: float | None) -> bool:
    """Whether an answer equals what a mistake returns (losses are stored as float32)."""
    return variant is not None and math.isclose(got, variant, rel_tol=1e-6)


def _as_step(result: Any, what: str) -> float:
    if result is None:
        raise CheckFailed(f"{what} returned None: did you forget the `return`?")
    try:
        array = np.asarray(result, dtype=float)
    except (TypeError, ValueError):
        raise CheckFailed(f"{what} returned {type(result).__name__}: return one step number") from None
    if array.size != 1:
        raise CheckFailed(f"{what} returned {array.size} numbers: return one step number")
    return float(array.reshape(-1)[0])


@checker("lab07.stopped_improving")
def check_stopped_improving(stopped_improving: Callable[[Any], Any]) -> None:
    """``stopped_improving(run)``: the step of the lowest ``val/loss`` logged in the run (the first such step
    on a tie), read with TensorBoard's loader (``tb.read_scalars``)."""
    with tempfile.TemporaryDirectory(prefix="lab07-val-") as root:
        answers = {}
        for index, (name, val) in enumerate(VAL_CASES.items()):
            run = write_val_case(root, f"case{index}", val)
            answers[name] = _as_step(call(stopped_improving, str(run)), f"stopped_improving(<run: {name}>)")
    wrong = {name: got for name, got in answers.items() if got != reference_stopped(VAL_CASES[name])}
    if not wrong:
        passed("lab07.stopped_improving")
        return
    for mistake in _stopped_variants(VAL_CASES["rises after step 40"]):
        if all(_same(got, _stopped_variants(VAL_CASES[name])[mistake]) for name, got in wrong.items()):
            raise CheckFailed(mistake)
    name, got = next(iter(wrong.items()))
    raise CheckFailed(f"for the run '{name}' (val/loss {VAL_CASES[name]}) it returned {got:g}; expected "
                      f"{reference_stopped(VAL_CASES[name])}, the first step of the lowest val/loss")
