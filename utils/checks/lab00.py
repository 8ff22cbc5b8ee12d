"""Checkers of lab 0 (``labs/lab00_first_run.ipynb``): logging a curve, TensorBoard's smoothing."""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable
from typing import Any

import numpy as np

from utils import tb
from utils.checks import CheckFailed, call, checker, passed


@checker("lab00.log_losses")
def check_log_losses(log_losses: Callable[[Any, list[float]], None]) -> None:
    """``log_losses(writer, losses)`` must log ``losses[i]`` under ``train/loss`` at step ``i``."""
    losses = [2.5, 1.75, 1.25, 1.0, 0.875]
    with tempfile.TemporaryDirectory() as root:
        with tb.open_run("lab00", "check", root=root) as writer:
            call(log_losses, writer, list(losses))
        run = tb.run_path("lab00", "check", root)
        try:
            frame = tb.read_scalars(run)
        except tb.RunNotFoundError:
            frame = None
        if frame is None or frame.empty:
            raise CheckFailed("nothing was logged: call writer.add_scalar(tag, value, step) once per loss")
        tags = sorted(frame.tag.unique())
        if tags != ["train/loss"]:
            raise CheckFailed(f"logged tags {tags}; the book's convention is one tag, 'train/loss' (the "
                              "'train/' prefix groups it with other training curves in TensorBoard)")
        steps = frame.step.tolist()
        values = frame.value.tolist()
    if len(steps) != len(losses):
        raise CheckFailed(f"logged {len(steps)} points for {len(losses)} losses")
    if steps == list(range(1, len(losses) + 1)):
        raise CheckFailed("steps start at 1: the first loss belongs to step 0 (use enumerate(losses))")
    if len(set(steps)) == 1:
        raise CheckFailed(f"every point has step {steps[0]}: pass the step as the third argument of "
                          "add_scalar, or TensorBoard draws them all at one x position")
    if steps != list(range(len(losses))):
        raise CheckFailed(f"logged steps {steps}, expected {list(range(len(losses)))}")
    if not np.allclose(values, losses):
        raise CheckFailed(f"logged values {values}, expected {losses} (in order)")
    passed("lab00.log_losses")


@checker("lab00.smooth")
def check_smooth(smooth: Callable[[list[float], float], Any]) -> None:
    """``smooth(values, weight)`` must equal TensorBoard's debiased exponential moving average."""
    values = [4.0, 2.0, 3.0, 1.0, 2.0, 0.5]
    weight = 0.6
    got = np.asarray(call(smooth, list(values), weight), dtype=float)
    expected = tb.smooth(values, weight)
    if got.shape != expected.shape:
        raise CheckFailed(f"returned {got.shape[0] if got.ndim else 'a scalar'} values for {len(values)} inputs: "
                          "return one smoothed value per input")
    biased = [(1 - weight) * values[0]]
    for value in values[1:]:
        biased.append(weight * biased[-1] + (1 - weight) * value)
    if np.allclose(got, biased):
        raise CheckFailed(f"not debiased: the first value is {got[0]:.3g} but should be {values[0]} (the "
                          "average starts at 0, so divide by 1 - weight**n, n = points so far)")
    swapped = tb.smooth(values, 1 - weight)
    if np.allclose(got, swapped):
        raise CheckFailed("weight is applied to the new value; TensorBoard applies it to the running "
                          "average: m = weight * m + (1 - weight) * x")
    if not np.allclose(got, expected, rtol=1e-9, atol=1e-12):
        raise CheckFailed(f"smooth({values}, {weight}) returned {np.round(got, 4).tolist()}, expected "
                          f"{np.round(expected, 4).tolist()}")
    with_nan = np.asarray(call(smooth, [1.0, math.nan, 3.0], weight), dtype=float)
    if not (math.isnan(with_nan[1]) and np.allclose(with_nan[[0, 2]], tb.smooth([1.0, math.nan, 3.0], weight)[[0, 2]])):
        raise CheckFailed(f"with a NaN in the input, got {with_nan.tolist()}: pass a non-finite value "
                          "through unchanged and leave it out of the running average")
    passed("lab00.smooth")
