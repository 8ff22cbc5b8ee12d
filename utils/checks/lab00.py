"""Checkers of lab 0 (``labs/lab00_first_run.ipynb``): logging a curve, TensorBoard's smoothing."""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from utils import tb
from utils.checks import CheckFailed, call, checker, passed, scale_fault, unchanged

#: Losses the check logs: not representable exactly in float32 (TensorBoard stores float32), all different.
LOSSES = [2.3026, 1.9173, 1.6402, 1.4837, 1.3915, 1.3361]
FLOAT32_RTOL = 1e-6


def _log_and_read(log_losses: Callable[[Any, list[float]], None], losses: list[float], root: str):
    """Run the reader's function on a fresh run; return (the list it was given, the scalars read back or None,
    whether some key was written to a sub-folder of the run, as ``add_scalars`` does)."""
    given = list(losses)
    with tb.open_run("lab00", "check", root=root) as writer:
        call(log_losses, writer, given)
    run = tb.run_path("lab00", "check", root)
    try:
        frame = tb.read_scalars(run)
    except tb.RunNotFoundError:
        frame = None
    in_subfolders = any(path.is_dir() for path in Path(run).iterdir()) if Path(run).is_dir() else False
    return given, frame, in_subfolders


def _diagnose_points(steps: list[int], values: list[float], losses: list[float]) -> str | None:
    """The one mistake the logged (steps, values) show, or None if they are right."""
    n = len(losses)
    if len(steps) == 1 and n > 1:
        return (f"logged 1 point for {n} losses (the loss {values[0]:.4f} at step {steps[0]}): the add_scalar "
                "call must run once per loss, inside the loop")
    if len(steps) == n - 1 and np.allclose(values, losses[1:], rtol=FLOAT32_RTOL):
        return f"the first loss ({losses[0]}) is missing: log all {n} losses, the first at step 0"
    if len(steps) == n - 1 and np.allclose(values, losses[:-1], rtol=FLOAT32_RTOL):
        return (f"the last loss ({losses[-1]}) is missing: the loop stops one early; log all {n} losses, "
                f"steps 0 to {n - 1}")
    if len(steps) != n:
        return f"logged {len(steps)} points for {n} losses: log each loss exactly once"
    if np.allclose(sorted(values), range(n)) and steps != list(range(n)):
        return ("the value and the step are swapped: add_scalar takes the tag, then the value, then the step "
                "(the loss ended up as the step, the index as the value)")
    if steps == list(range(1, n + 1)):
        return "steps start at 1: the first loss belongs to step 0 (count from 0, as enumerate does)"
    if len(set(steps)) == 1:
        return (f"every point has step {steps[0]}: pass the step as the third argument of add_scalar, or "
                "TensorBoard draws them all at one x position")
    if steps != list(range(n)):
        return f"logged steps {steps}, expected {list(range(n))}: loss i belongs to step i"
    if not np.allclose(values, losses, rtol=FLOAT32_RTOL):
        return _values_symptom(values, losses) or (f"logged values {[round(v, 4) for v in values]}, expected "
                                                   f"{losses}: loss i at step i, in order")
    return None


def _values_symptom(values: list[float], losses: list[float]) -> str | None:
    """What logged values at the right steps show by themselves: the losses reversed, reordered, one value
    repeated, or each off by one factor."""
    if np.allclose(values, losses[::-1], rtol=FLOAT32_RTOL):
        return "the losses were logged in reverse order: log them in order, losses[i] at step i"
    if np.allclose(sorted(values), sorted(losses), rtol=FLOAT32_RTOL):
        return (f"the right losses at the wrong steps ({[round(v, 4) for v in values]}): losses[i] belongs at "
                "step i, in the list's own order, without sorting or shuffling")
    if np.allclose(values, values[0], rtol=FLOAT32_RTOL):
        return (f"every point has the value {values[0]:.4f}: log the loop's current loss, not one fixed "
                "value (is a variable from outside the loop used?)")
    return scale_fault(values, losses, "each logged value", "log each loss as it is, with no factor")


@checker("lab00.log_losses")
def check_log_losses(log_losses: Callable[[Any, list[float]], None]) -> None:
    """``log_losses(writer, losses)`` must log ``losses[i]`` under ``train/loss`` at step ``i``, and leave
    ``losses`` as it was."""
    with tempfile.TemporaryDirectory() as root:
        given, frame, in_subfolders = _log_and_read(log_losses, LOSSES, root)
    if not unchanged(given, LOSSES):
        raise CheckFailed("the list of losses was changed by your function (it holds "
                          f"{given} now): read it, do not modify it (no sort, reverse, pop or assignment)")
    if frame is None or frame.empty:
        if in_subfolders:
            raise CheckFailed("your scalars went into a sub-folder of the run: add_scalars (with an s) writes "
                              "each key as a separate run. Log one series with add_scalar(tag, value, step)")
        raise CheckFailed("nothing was logged: call writer.add_scalar(tag, value, step) once per loss")
    tags = sorted(frame.tag.unique())
    if tags != ["train/loss"]:
        raise CheckFailed(f"logged tags {tags}; the book's convention is one tag, 'train/loss' (the "
                          "'train/' prefix groups it with other training curves in TensorBoard)")
    problem = _diagnose_points(frame.step.tolist(), frame.value.tolist(), LOSSES)
    if problem:
        raise CheckFailed(problem)
    with tempfile.TemporaryDirectory() as root:  # an empty list is a legal input: nothing to log
        _, frame, _ = _log_and_read(log_losses, [], root)
    if frame is not None and not frame.empty:
        raise CheckFailed(f"for an empty list of losses you logged {len(frame)} point(s); log nothing")
    passed("lab00.log_losses")


#: (values, weight) the smoothing check runs: plain, a NaN, both infinities, a heavy weight.
SMOOTH_REGIMES: list[tuple[list[float], float]] = [
    ([4.0, 2.0, 3.0, 1.0, 2.0, 0.5], 0.6),
    ([1.0, math.nan, 3.0, 2.0, 5.0], 0.6),
    ([2.0, math.inf, 1.0, -math.inf, 4.0], 0.6),
    ([3.0, 1.0, 2.5, 0.5, 1.5, 0.75, 2.0, 1.25], 0.9),
]


def _smooth_variant(values: list[float], weight: float, *, debias: bool = True, swap: bool = False,
                    skip: str = "non_finite", count_skipped: bool = False, non_finite_out: str = "pass",
                    start_at_first: bool = False, exponent_shift: int = 0) -> list[float]:
    """TensorBoard's smoothing with one mistake switched on (the defaults compute it right).
    skip: which inputs stay out of the average: "non_finite", "nan" (math.isnan only) or "none";
    non_finite_out: what a skipped input becomes in the output: "pass", "drop", "zero" or "hold"."""
    w = 1 - weight if swap else weight
    out: list[float] = []
    average, count = (None, 0) if start_at_first else (0.0, 0)
    for value in values:
        skipped = {"non_finite": not math.isfinite(value), "nan": math.isnan(value), "none": False}[skip]
        if skipped:
            count += count_skipped
            if non_finite_out != "drop":
                out.append({"pass": value, "zero": 0.0, "hold": out[-1] if out else 0.0}[non_finite_out])
            continue
        if average is None:
            average = value
        else:
            average = w * average + (1 - w) * value
        count += 1
        if debias and not start_at_first:
            with np.errstate(all="ignore"):
                out.append(float(np.float64(average) / (1 - np.float64(w) ** (count + exponent_shift))))
        else:
            out.append(average)
    return out


#: (variant options, diagnosis) for the smoothing mistakes, recognised only when the answer reproduces the
#: mistake's output in every regime.
SMOOTH_MISTAKES: list[tuple[dict[str, Any], str]] = [
    ({"debias": False}, "not debiased: the running average starts at 0, so the first values are too small. "
                        "Divide it by 1 - weight**n, n = the number of values averaged so far"),
    ({"swap": True}, "weight is applied to the new value; TensorBoard applies it to the running average "
                     "(weight 0.9 means: keep 90% of the average, take 10% of the new value)"),
    ({"start_at_first": True}, "the average starts at the first value: TensorBoard starts it at 0 and "
                               "removes that start's bias by dividing by 1 - weight**n"),
    ({"exponent_shift": 1}, "the debias exponent is off by one: after the first value n = 1, so the first "
                            "smoothed value equals the first input"),
    ({"skip": "none"}, "a NaN made every later smoothed value NaN: leave non-finite values out of the running "
                       "average (and pass them through to the output)"),
    ({"skip": "nan"}, "an infinity entered the running average: inf and -inf must be left out of it like NaN "
                      "(math.isfinite rejects all three; math.isnan only NaN)"),
    ({"count_skipped": True}, "the count n also counted the non-finite inputs: n is the number of values that "
                              "entered the average, so skipped ones do not count"),
    ({"non_finite_out": "drop"}, "the non-finite inputs are missing from the output: it must have one value "
                                 "per input, with a non-finite input passed through at its position"),
    ({"non_finite_out": "zero"}, "a non-finite input must pass through to the output unchanged (it was "
                                 "replaced)"),
    ({"non_finite_out": "hold"}, "a non-finite input must pass through to the output unchanged (it was "
                                 "replaced)"),
]


def _same(got: Any, expected: list[float]) -> bool:
    """Equal within a float32-sized tolerance, NaN matching NaN and infinities matching themselves."""
    try:
        a = np.asarray(got, dtype=np.float64)
    except (TypeError, ValueError):
        return False
    b = np.asarray(expected, dtype=np.float64)
    return a.shape == b.shape and bool(np.allclose(a, b, rtol=1e-5, atol=1e-7, equal_nan=True))


def _smoothed(smooth: Callable[[list[float], float], Any], values: list[float], weight: float) -> Any:
    given = list(values)
    result = call(smooth, given, weight)
    if not unchanged(given, values):
        raise CheckFailed(f"smooth changed the list it was given (it holds {given} now): build a new list of "
                          "smoothed values and leave the input as it was")
    if result is None:
        raise CheckFailed("smooth returned None: did you forget the `return`?")
    if np.ndim(result) != 1 or len(result) != len(values):
        if _same(result, _smooth_variant(values, weight, non_finite_out="drop")):
            return result  # a recognised mistake: check_smooth names it
        size = "a scalar" if np.ndim(result) == 0 else f"{len(result)} values"
        raise CheckFailed(f"returned {size} for the {len(values)} inputs {values}: return one smoothed value "
                          "per input")
    return result


def _smooth_symptom(answers: list[Any]) -> str | None:
    """What wrong smoothed values show by themselves, in every regime: the input returned unchanged, a first
    value that differs from the first input (debiasing makes them equal), or TensorBoard's smoothing at
    another weight."""
    regimes = list(zip(answers, SMOOTH_REGIMES, strict=True))
    if all(_same(got, values) for got, (values, _) in regimes):
        return "the output equals the input: nothing was smoothed (is the running average ever used?)"
    firsts = [(np.asarray(got, dtype=np.float64)[0], values[0]) for got, (values, _) in regimes]
    if any(not math.isclose(got, value, rel_tol=1e-5) for got, value in firsts if math.isfinite(value)):
        first, value = next((g, v) for g, v in firsts if not math.isclose(g, v, rel_tol=1e-5))
        return (f"the first smoothed value is {first:.4g} for a first input of {value}: with the debiasing "
                "(divide by 1 - weight**n, n = 1 after the first value) they are equal, whatever the weight")
    grid = [float(w) for w in np.round(np.linspace(0.0, 0.99, 100), 2)]
    used = [next((w for w in grid if _same(got, _smooth_variant(values, w))), None) for got, (values, _) in regimes]
    if None not in used:
        pairs = ", ".join(dict.fromkeys(f"{w:g} for {weight}"
                                        for w, (_, (_, weight)) in zip(used, regimes, strict=True)))
        return (f"your output is TensorBoard's smoothing with weight {pairs} given: the right formula at the "
                "wrong weight (is the weight transformed, or a fixed value used?)")
    return None


@checker("lab00.smooth")
def check_smooth(smooth: Callable[[list[float], float], Any]) -> None:
    """``smooth(values, weight)`` must equal TensorBoard's debiased exponential moving average (``tb.smooth``),
    pass non-finite values (NaN, inf, -inf) through and leave them out of the average, accept float32-level
    differences, leave ``values`` unchanged and keep no state between calls."""
    first, again = (_smoothed(smooth, *SMOOTH_REGIMES[0]) for _ in range(2))
    if not _same(again, np.asarray(first, dtype=np.float64).tolist()):
        raise CheckFailed("a second call with the same input gave a different result: the function keeps state "
                          "between calls (a global or a default argument). Start each call from average 0")
    answers = [first] + [_smoothed(smooth, values, weight) for values, weight in SMOOTH_REGIMES[1:]]
    wrong = [i for i, (got, (values, weight)) in enumerate(zip(answers, SMOOTH_REGIMES, strict=True))
             if not _same(got, _smooth_variant(values, weight))]
    if wrong:
        for options, message in SMOOTH_MISTAKES:
            if all(_same(got, _smooth_variant(values, weight, **options))
                   for got, (values, weight) in zip(answers, SMOOTH_REGIMES, strict=True)):
                raise CheckFailed(message)
        symptom = _smooth_symptom(answers)
        if symptom:
            raise CheckFailed(symptom)
        values, weight = SMOOTH_REGIMES[wrong[0]]
        got = np.round(np.asarray(answers[wrong[0]], dtype=float), 4).tolist()
        expected = np.round(_smooth_variant(values, weight), 4).tolist()
        raise CheckFailed(f"smooth({values}, {weight}) returned {got}, expected {expected} (debiased moving "
                          "average, non-finite values passed through)")
    passed("lab00.smooth")
