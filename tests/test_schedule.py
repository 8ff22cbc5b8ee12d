"""utils.schedule: warm-up + cosine, as a pure function and through torch's LambdaLR."""

from __future__ import annotations

import math

import pytest
import torch

from utils.schedule import lr_lambda, warmup_cosine

KW = dict(max_lr=1e-3, warmup_steps=10, total_steps=110, min_lr=1e-4)


def test_key_steps():
    assert warmup_cosine(0, **KW) == pytest.approx(1e-4)  # max_lr / warmup_steps: the first update is not wasted
    assert warmup_cosine(9, **KW) == pytest.approx(1e-3)  # end of warm-up
    assert warmup_cosine(10, **KW) == pytest.approx(1e-3)  # cosine starts at the peak
    assert warmup_cosine(60, **KW) == pytest.approx((1e-3 + 1e-4) / 2)  # half-way: the mean of peak and floor
    assert warmup_cosine(110, **KW) == pytest.approx(1e-4)
    assert warmup_cosine(500, **KW) == pytest.approx(1e-4)  # stays at the floor, never rises again


def test_monotone_and_bounded():
    values = [warmup_cosine(s, **KW) for s in range(200)]
    assert all(b >= a for a, b in zip(values[:10], values[1:10], strict=False))
    assert all(b <= a + 1e-15 for a, b in zip(values[10:], values[11:], strict=False))
    assert min(values) >= KW["min_lr"] - 1e-15 and max(values) <= KW["max_lr"] + 1e-15


def test_no_warmup_and_errors():
    assert warmup_cosine(0, max_lr=1.0, warmup_steps=0, total_steps=10) == pytest.approx(1.0)
    assert warmup_cosine(5, max_lr=1.0, warmup_steps=0, total_steps=10) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        warmup_cosine(-1, **KW)
    with pytest.raises(ValueError):
        warmup_cosine(0, max_lr=1.0, warmup_steps=20, total_steps=10)


def test_lambda_lr_matches_the_function():
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=KW["max_lr"])
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(**KW))
    seen = []
    for _ in range(120):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert seen == pytest.approx([warmup_cosine(s, **KW) for s in range(120)])
    assert math.isclose(lr_lambda(max_lr=0.0, warmup_steps=0, total_steps=5)(3), 0.0)


@pytest.mark.parametrize("warmup_steps", [10, 0])
def test_the_keras_schedule_is_the_same_function(warmup_steps):
    """utils.keras_tb re-states the schedule in Keras ops (Keras calls it with a symbolic step); it must give
    the numbers of utils.schedule.warmup_cosine at every step, after total_steps included."""
    import numpy as np

    from utils.keras_tb import warmup_cosine_schedule

    kw = {**KW, "warmup_steps": warmup_steps}
    keras_schedule = warmup_cosine_schedule(**kw)
    steps = np.arange(0, 160)
    got = np.array([float(keras_schedule(step)) for step in steps])
    expected = np.array([warmup_cosine(int(step), **kw) for step in steps])
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=0)


@pytest.mark.parametrize("warmup_steps", [10, 0])
def test_equals_torchs_own_warmup_and_cosine_schedulers(warmup_steps):
    """The book writes warm-up + cosine itself to teach it; torch's LinearLR then CosineAnnealingLR, chained
    by SequentialLR, must give the same rate at every step up to total_steps."""
    kw = {**KW, "warmup_steps": warmup_steps}
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=kw["max_lr"])
    schedulers = [torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=kw["total_steps"] - warmup_steps, eta_min=kw["min_lr"])]
    if warmup_steps:  # linear from max_lr / W at step 0 to max_lr at step W - 1
        warmup = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=1 / warmup_steps, end_factor=1.0,
                                                   total_iters=warmup_steps - 1)
        schedulers = [warmup, *schedulers]
    scheduler = (torch.optim.lr_scheduler.SequentialLR(optimizer, schedulers, milestones=[warmup_steps])
                 if warmup_steps else schedulers[0])
    torch_rates = []
    for _ in range(kw["total_steps"] + 1):
        torch_rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    ours = [warmup_cosine(s, **kw) for s in range(kw["total_steps"] + 1)]
    assert torch_rates == pytest.approx(ours, rel=1e-9, abs=1e-12)
