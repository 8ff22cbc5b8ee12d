"""Checkers for the labs: each takes the reader's function, tests it, and says *what* is wrong.

One module per lab (``utils.checks.lab00`` for ``labs/lab00_*.ipynb``), each registering its checkers with
``@checker("<lab>.<exercise>")``. Every checker raises ``CheckFailed`` (an ``AssertionError``) with a
diagnosis, or prints a line starting with "PASSED". A stub that still raises ``NotImplementedError`` fails
with its hint. ``all_checkers()`` imports every lab module and returns the registry; a test proves that every
checker rejects its lab's stub and accepts its solution.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from typing import Any


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
    """Call the reader's function; an unfinished stub becomes a ``CheckFailed`` that repeats its hint."""
    try:
        return function(*args, **kwargs)
    except NotImplementedError as exc:
        raise CheckFailed(f"{function.__name__} is not implemented yet. Hint: {exc}") from None


def passed(exercise_id: str) -> None:
    print(f"PASSED {exercise_id}")




def all_checkers() -> dict[str, Callable[..., Any]]:
    """Import every lab module of this package and return ``{exercise id: checker}``."""
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")
    return dict(CHECKERS)
