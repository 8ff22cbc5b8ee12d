"""Checks of settings and command-line values whose errors name the setting, the value and what is allowed.

Settings objects (``TrainConfig``, ``GPTConfig``, ...) call ``check_whole``, ``check_number`` and
``check_choice`` in their ``__post_init__`` and raise ``ValueError``; a command line catches it and hands it
to ``parser.error`` (exit status 2 with the usage line, never a traceback). ``whole_number``, ``decimal`` and
``folder_path`` are ``argparse`` types that check a flag's value where it is parsed: ``argument --steps:
'-5' is not allowed: give a whole number >= 1``.
"""

from __future__ import annotations

import argparse
import math
import numbers
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any


def check_whole(name: str, value: Any, minimum: int, *, optional: bool = False) -> None:
    """``value`` must be an int (not a bool) >= ``minimum``; ``None`` too when ``optional``."""
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        none = " (or None)" if optional else ""
        raise ValueError(f"{name}={value!r} is not allowed: give a whole number >= {minimum}{none}")


def check_number(name: str, value: Any, minimum: float, *, above: bool = False, below: float | None = None,
                 optional: bool = False) -> None:
    """``value`` must be a finite real number >= ``minimum`` (> with ``above``), and < ``below`` when given."""
    if value is None and optional:
        return
    real = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if not real or value < minimum or (above and value == minimum) or (below is not None and value >= below):
        bounds = f"{'>' if above else '>='} {minimum:g}" + (f" and < {below:g}" if below is not None else "")
        raise ValueError(f"{name}={value!r} is not allowed: give a finite number {bounds}"
                         + (" (or None)" if optional else ""))


def check_choice(name: str, value: Any, allowed: Iterable[Any]) -> None:
    """``value`` must be one of ``allowed``."""
    allowed = tuple(allowed)
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not allowed: choose one of {', '.join(map(repr, allowed))}")


# --------------------------------------------------------------------------------------------- argparse


def whole_number(minimum: int) -> Callable[[str], int]:
    """An ``argparse`` type: a whole number >= ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"{text!r} is not allowed: give a whole number >= {minimum}")
        return value

    return parse


def whole_numbers(minimum: int) -> Callable[[str], list[int]]:
    """An ``argparse`` type: comma-separated whole numbers, each >= ``minimum`` (``0,1,2``)."""

    def parse(text: str) -> list[int]:
        try:
            values = [int(part) for part in text.split(",")]
        except ValueError:
            values = []
        if not values or min(values) < minimum:
            raise argparse.ArgumentTypeError(f"{text!r} is not allowed: give comma-separated whole numbers "
                                             f">= {minimum}, e.g. {minimum},{minimum + 1}")
        return values

    return parse


def decimal(minimum: float, *, above: bool = False) -> Callable[[str], float]:
    """An ``argparse`` type: a finite number >= ``minimum`` (> with ``above``)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = None
        if value is None or not math.isfinite(value) or value < minimum or (above and value == minimum):
            raise argparse.ArgumentTypeError(
                f"{text!r} is not allowed: give a number {'>' if above else '>='} {minimum:g}")
        return value

    return parse


def folder_path(text: str) -> str:
    """An ``argparse`` type: a folder that exists or can be created, so not an existing file (checked before
    a long run that writes there at its end)."""
    if Path(text).expanduser().exists() and not Path(text).expanduser().is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a file: give a folder (created when missing)")
    return text


def as_flags(message: str, names: Iterable[str]) -> str:
    """A settings error in command-line words: ``n_head=3`` becomes ``--n-head 3`` for each of ``names``
    (the fields that are also flags), so that the reader sees the flag they typed."""
    for name in names:
        message = re.sub(rf"\b{re.escape(name)}=", f"--{name.replace('_', '-')} ", message)
    return message
