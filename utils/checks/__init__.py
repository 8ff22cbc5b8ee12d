"""Checkers for the labs: each takes the reader's function, tests it, and says *what* is wrong.

One module per lab (``utils.checks.lab00`` for ``labs/lab00_*.ipynb``), each registering its checkers with
``@checker("<lab>.<exercise>")``. Every checker raises ``CheckFailed`` (an ``AssertionError``) with a
diagnosis, or prints a line starting with "PASSED". A stub that still raises ``NotImplementedError`` fails
with its hint; any other exception the reader's code raises becomes a ``CheckFailed`` that names it (the
original traceback stays attached). ``all_checkers()`` imports every lab module and returns the registry.

How a checker decides (so that a diagnosis never blames a fault the answer does not have): it builds fresh
inputs itself, keeps copies of them to notice edits made in place, runs several regimes (small and large
magnitudes, ties, infinities), and names a specific mistake when the answer reproduces that mistake's
output exactly. Otherwise it names the fault from the symptom, where the answer shows one by itself, whatever
code produced it: probabilities that are negative or do not sum to 1 (``distribution_fault``), a result off
by one constant factor (``scale_fault``), one evaluation early, rows of a gradient that do not sum to 0.
Only an answer with no such symptom gets a neutral message that shows the input, the answer and the
expected value.
``tests/test_checkers.py`` proves this for every registered checker with the cases in ``tests/checker_cases``.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from typing import Any

import numpy as np


class CheckFailed(AssertionError):
    """The reader's code is wrong; the message says how, and what to try."""


CHECKERS: dict[str, Callable[[Callable[..., Any]], None]] = {}


def checker(exercise_id: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register a checker under ``exercise_id`` (``"<lab>.<exercise>"``)."""

    def register(function: Callable[..., Any]) -> Callable[..., Any]:
        CHECKERS[exercise_id] = function
        return function

    return register


def call(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call the reader's function. An unfinished stub becomes a ``CheckFailed`` that repeats its hint; any other
    exception becomes a ``CheckFailed`` naming it, chained to the original so that its traceback is shown."""
    name = getattr(function, "__qualname__", getattr(function, "__name__", repr(function)))
    try:
        return function(*args, **kwargs)
    except NotImplementedError as exc:
        raise CheckFailed(f"{name} is not implemented yet. Hint: {exc}") from None
    except CheckFailed:
        raise
    except Exception as exc:  # the reader's code may raise anything; say which call failed, and how
        raise CheckFailed(f"{name} raised {type(exc).__name__}: {exc} (see the traceback above for the line; "
                          "the check called it with inputs it built itself)") from exc


def passed(exercise_id: str) -> None:
    print(f"PASSED {exercise_id}")


def unchanged(given: Any, original: Any) -> bool:
    """Whether an input the reader's function received still equals the copy taken before the call
    (NaN equal to NaN). Works for numpy arrays, torch tensors and lists of numbers."""
    if hasattr(given, "detach"):
        given, original = given.detach().cpu().numpy(), original.detach().cpu().numpy()
    a, b = np.asarray(given), np.asarray(original)
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    return bool(np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"))


def graph_free_number(result: Any, what: str) -> float:
    """The reader's scalar result as a float: a Python number, a numpy scalar or one-element array, or a
    torch tensor without a computation graph. Anything else is a ``CheckFailed`` that says what to return."""
    if result is None:
        raise CheckFailed(f"{what} returned None: did you forget the `return`?")
    if getattr(result, "requires_grad", False):
        raise CheckFailed(f"{what} returned a tensor that is still attached to the computation graph "
                          "(requires_grad=True): return a plain number, with .item(), and compute it under "
                          "torch.no_grad() so that no graph is built")
    try:
        array = np.asarray(result.detach().cpu() if hasattr(result, "detach") else result, dtype=np.float64)
    except (TypeError, ValueError):
        raise CheckFailed(f"{what} returned {type(result).__name__}; return one number") from None
    if array.size != 1:
        raise CheckFailed(f"{what} returned {array.size} numbers (shape {array.shape}); return one number")
    return float(array.reshape(-1)[0])


def distribution_fault(probs: np.ndarray, what: str = "the rows") -> str | None:
    """The fault a (..., K) array of probability rows shows by itself, whatever the answer computed: NaN or
    inf, a negative entry, an entry above 1, or rows that do not sum to 1. None when it could be a
    distribution (it may still be the wrong one)."""
    p = np.asarray(probs, dtype=np.float64)
    if not np.isfinite(p).all():
        return f"{what} hold NaN or inf: a probability is a finite number between 0 and 1"
    if p.min() < -1e-6:
        return (f"negative probabilities ({p.min():.4g}): a probability is >= 0. exp() of anything is "
                "positive, so the softmax never gives one: were the logits (or their log-softmax) returned?")
    sums = p.sum(axis=-1)
    if not np.allclose(sums, 1.0, atol=1e-4):
        shown = np.round(np.ravel(sums)[:4], 4).tolist()
        if p.max() > 1 + 1e-6:
            return (f"probabilities above 1 (up to {p.max():.4g}) and {what} sum to {shown}: a distribution "
                    "sums to 1 over the classes; did you skip the division by the sum (or the exp)?")
        return (f"not normalised: {what} sum to {shown}, not 1. Divide by each row's sum, over the last "
                "axis (keepdims=True), after every change to the logits")
    return None


def scale_fault(got: Any, expected: Any, what: str = "your answer", hint: str | None = None) -> str | None:
    """When ``got`` is ``expected`` times one constant factor (not 1), the message naming it, with ``hint``
    (by default: a sum for a mean, a missing or extra division). None otherwise; for a single number, only a
    whole factor (or its inverse) counts, since any number is some multiple of another."""
    a, b = np.asarray(got, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    if a.shape != b.shape or not np.isfinite(a).all() or not np.any(np.abs(b) > 1e-12):
        return None
    ratio = float(np.sum(a * b) / np.sum(b * b))
    if abs(ratio - 1) < 1e-3 or abs(ratio) < 1e-9 or not np.allclose(a, ratio * b, rtol=1e-4, atol=1e-7):
        return None
    whole = max(abs(ratio), 1 / abs(ratio))
    if a.size == 1 and abs(whole - round(whole)) > 1e-4 * whole:
        return None  # one number is always some multiple of another: only a whole factor says something
    if ratio < 0:
        return f"wrong sign: {what} is {ratio:.4g} times the expected value (a negative factor)"
    if ratio > 1:
        return (f"{what} is {ratio:.4g} times the expected value: " + (hint or "a factor like this is a "
                "reduction: a sum where a mean belongs, or a division left out"))
    return (f"{what} is 1/{1 / ratio:.4g} of the expected value: " + (hint or "divided once too often (by the "
            "number of classes as well as examples?), or a mean where a sum belongs"))


def normalised(text: Any) -> str:
    """A name or label as the checkers compare it: stripped, lower case, "-" and " " read as "_"."""
    return str(text).strip().lower().replace("-", "_").replace(" ", "_")


def answers_per_run(answer: Any, runs: Any, function: str, shape: str, noun: str) -> dict[str, Any]:
    """The reader's ``{run name: value}`` keyed by the lab's run names (``"a"``, ``"Run A"`` and ``"run_a"``
    are one run), values as given. ``CheckFailed`` names the fault: no ``return``, not a dict (``shape`` says
    what to return), a run that does not exist, or one left out (``noun``: what each run needs)."""
    if answer is None:
        raise CheckFailed(f"{function}() returned None: did you forget the `return`?")
    if not hasattr(answer, "items"):
        raise CheckFailed(f"{function}() returned {type(answer).__name__}: return a dict {shape}")
    values = {}
    for key, value in answer.items():
        name = normalised(key)
        name = name if name.startswith("run_") else f"run_{name}"
        if name not in runs:
            raise CheckFailed(f"{key!r} is not a run of this lab: the runs are {', '.join(runs)}")
        values[name] = value
    missing = [name for name in runs if name not in values]
    if missing:
        raise CheckFailed(f"no {noun} for {', '.join(missing)}: {noun} every run")
    return values


def all_checkers() -> dict[str, Callable[..., Any]]:
    """Import every lab module of this package and return ``{exercise id: checker}``."""
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")
    return dict(CHECKERS)
