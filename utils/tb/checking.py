"""Checking runs: ``assert_logged``, the assertion every chapter ends with (these tags exist in this run, at
these steps, with finite values)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from utils.tb.reading import (
    accumulator,
    list_tags_from,
    read_histograms,
    read_images,
    read_scalars,
    read_text,
)


def assert_logged(run: str | Path, expected: Mapping[str, int | Sequence[int] | None]) -> pd.DataFrame:
    """Assert that each tag exists in ``run`` with the expected steps, and that every scalar is finite.

    expected: tag -> ``None`` (at least one point), an ``int`` (exactly that many points) or a sequence of
        steps (exactly those, in order). Tags may be scalars, histograms, images or text (by their logged
        name; tensorboardX text tags end in ``/text_summary``, which may be left out).
    Returns the scalars of the checked scalar tags (columns as ``read_scalars``), so a chapter can go on to
    assert values. Raises ``AssertionError`` naming the tag, what was expected and what was found.
    """
    available = list_tags_from(accumulator(run))
    scalars = read_scalars(run, [tag for tag in expected if tag in available["scalars"]])
    for tag, want in expected.items():
        steps = _logged_steps(run, tag, available, scalars)
        if want is None:
            ok, wanted = len(steps) > 0, "at least one point"
        elif isinstance(want, int):
            ok, wanted = len(steps) == want, f"{want} points"
        else:
            ok, wanted = steps == list(want), f"steps {_short(list(want))}"
        if not ok:
            raise AssertionError(f"{tag!r} in {run}: expected {wanted}, found {len(steps)} points at steps "
                                 f"{_short(steps)}")
    return scalars


def _logged_steps(run: str | Path, tag: str, available: Mapping[str, list[str]],
                  scalars: pd.DataFrame) -> list[int]:
    """The steps at which ``tag`` was logged, whatever its kind; raises if a scalar is not finite."""
    if tag in available["scalars"]:
        series = scalars[scalars.tag == tag]
        finite = np.isfinite(series.value.to_numpy())
        if not finite.all():
            raise AssertionError(f"{tag!r} in {run} has NaN/inf values at steps "
                                 f"{series.step[~finite].tolist()[:10]}")
        return series.step.tolist()
    if tag in available["histograms"]:
        return read_histograms(run, tag)["step"].tolist()
    if tag in available["images"]:
        return [step for step, _ in read_images(run, tag)]
    if tag in available["text"] or f"{tag}/text_summary" in available["text"]:
        return read_text(run, tag)["step"].tolist()
    all_tags = sorted(t for names in available.values() for t in names)
    raise AssertionError(f"tag {tag!r} was never logged in {run}. Logged tags: {all_tags}")


def _short(steps: list[int]) -> str:
    if len(steps) <= 12:
        return str(steps)
    return f"[{', '.join(map(str, steps[:5]))}, ..., {', '.join(map(str, steps[-3:]))}] ({len(steps)} in all)"
