"""Lab 0's checkers name the classic mistakes."""

from __future__ import annotations

import pytest

from utils import tb
from utils.checks import CheckFailed, lab00


def logs_from_one(writer, losses):
    for step, loss in enumerate(losses, start=1):
        writer.add_scalar("train/loss", loss, step)


def logs_without_step(writer, losses):
    for loss in losses:
        writer.add_scalar("train/loss", loss)


def logs_wrong_tag(writer, losses):
    for step, loss in enumerate(losses):
        writer.add_scalar("loss", loss, step)


def logs_nothing(writer, losses):
    pass


@pytest.mark.parametrize(("wrong", "diagnosis"), [
    (logs_from_one, "steps start at 1"),
    (logs_without_step, "every point has step 0"),
    (logs_wrong_tag, "'train/loss'"),
    (logs_nothing, "nothing was logged"),
])
def test_log_losses_diagnoses(wrong, diagnosis):
    with pytest.raises(CheckFailed, match=diagnosis):
        lab00.check_log_losses(wrong)


def biased(values, weight):
    out, m = [], 0.0
    for v in values:
        m = weight * m + (1 - weight) * v
        out.append(m)
    return out


def swapped(values, weight):
    return list(tb.smooth(values, 1 - weight))


def nan_breaks_average(values, weight):
    out, m, n = [], 0.0, 0
    for v in values:
        m = weight * m + (1 - weight) * v
        n += 1
        out.append(m / (1 - weight**n))
    return out


@pytest.mark.parametrize(("wrong", "diagnosis"), [
    (biased, "not debiased"),
    (swapped, "weight is applied to the new value"),
    (nan_breaks_average, "NaN"),
    (lambda values, weight: values[:-1], "return one smoothed value per input"),
])
def test_smooth_diagnoses(wrong, diagnosis):
    with pytest.raises(CheckFailed, match=diagnosis):
        lab00.check_smooth(wrong)


def test_reference_passes(capsys):
    lab00.check_smooth(lambda values, weight: tb.smooth(values, weight))
    assert "PASSED lab00.smooth" in capsys.readouterr().out
