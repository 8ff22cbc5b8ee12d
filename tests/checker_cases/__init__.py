"""Right and wrong answers for every lab checker; ``tests/test_checkers.py`` runs them all.

Format (one module per lab, ``tests/checker_cases/labNN.py``, found automatically):

    from tests.checker_cases import Cases, Wrong

    CASES = {
        "lab03.log_softmax": Cases(            # the name the checker is registered under
            correct=[reference, loop_version, float32_version],        # >= 3, written differently
            wrong=[
                Wrong(no_max_shift, "unstable"),                       # answer, diagnosis substring
                (sums_over_batch, "over the whole batch"),             # a plain pair works too
                Wrong(in_place, "changed", forbidden=("unstable",)),   # optional extra forbidden text
                ...                                                    # >= 8
            ],
        ),
    }

- ``correct``: at least 3 implementations that must pass: the reference solution and others written
  differently (loop vs vectorised, float32 where float32 is acceptable, numpy vs Python numbers, ...).
- ``wrong``: at least 8 ``(answer, diagnosis)`` pairs (or ``Wrong``). The checker must raise ``CheckFailed``
  whose message contains ``diagnosis`` and contains none of the *other* wrong cases' diagnoses of the same
  checker (those that are not part of this one's own text), nor any of ``forbidden``. So give each fault a
  distinctive diagnosis substring; two answers with the same fault may share one.
- An answer is whatever the checker takes: a function, or a class for checkers that take a class. Write
  answers as small module-level functions with names that say the fault; a docstring or comment says why
  the answer is wrong when the name cannot.
- ``CASES`` may also map a name to a plain dict ``{"correct": [...], "wrong": [...]}``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Wrong:
    """A wrong answer and the text its diagnosis must contain (and, optionally, text it must not contain)."""

    answer: Callable[..., Any]
    diagnosis: str
    forbidden: tuple[str, ...] = ()


@dataclass(frozen=True)
class Cases:
    """The right and wrong answers of one checker."""

    correct: Sequence[Callable[..., Any]]
    wrong: Sequence[Wrong | tuple[Callable[..., Any], str]] = field(default_factory=list)


def normalise(entry: Cases | dict[str, Any]) -> tuple[list[Callable[..., Any]], list[Wrong]]:
    """(correct answers, wrong answers as ``Wrong``) of a ``CASES`` value, whichever form it has."""
    correct = entry["correct"] if isinstance(entry, dict) else entry.correct
    wrong = entry["wrong"] if isinstance(entry, dict) else entry.wrong
    return list(correct), [w if isinstance(w, Wrong) else Wrong(*w) for w in wrong]
