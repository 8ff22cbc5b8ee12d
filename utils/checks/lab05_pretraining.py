"""Checkers of lab 5 (``labs/lab05_pretraining.ipynb``): the learning-rate schedule, gradient accumulation."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from utils.checks import CheckFailed, call, checker, passed
from utils.schedule import warmup_cosine


@checker("lab05.lr_schedule")
def check_lr_schedule(lr_at: Callable[..., float]) -> None:
    """``lr_at(step, max_lr, warmup_steps, total_steps, min_lr)`` must equal ``utils.schedule.warmup_cosine``
    at the key steps: 0, the end of warm-up, its middle, the end, and after the end."""
    kw = dict(max_lr=1e-3, warmup_steps=10, total_steps=110, min_lr=1e-4)
    key = {0: "the first step", 9: "the last warm-up step", 10: "the first cosine step", 35: "a quarter of the "
           "cosine", 60: "the middle of the cosine", 110: "total_steps", 160: "after total_steps"}

    def got(step: int) -> float:
        return float(call(lr_at, step, kw["max_lr"], kw["warmup_steps"], kw["total_steps"], kw["min_lr"]))

    values = {step: got(step) for step in key}
    expected = {step: warmup_cosine(step, **kw) for step in key}
    if math.isclose(values[0], 0.0, abs_tol=1e-12):
        raise CheckFailed("the learning rate is 0 at step 0, so the first update does nothing: warm up linearly "
                          "as max_lr * (step + 1) / warmup_steps")
    if math.isclose(values[9], kw["max_lr"] * 9 / 10) or math.isclose(values[0], kw["max_lr"] / 11):
        raise CheckFailed(f"the warm-up does not reach max_lr at its last step (step 9 gives {values[9]:.2e}): "
                          "use (step + 1) / warmup_steps")
    if not all(math.isclose(values[s], expected[s], rel_tol=1e-6) for s in (0, 9)):
        raise CheckFailed(f"warm-up: got {values[0]:.2e} at step 0 and {values[9]:.2e} at step 9, expected "
                          f"{expected[0]:.2e} and {expected[9]:.2e} (linear up to max_lr)")
    if math.isclose(values[110], 0.0, abs_tol=1e-12) or math.isclose(values[60], kw["max_lr"] / 2, rel_tol=1e-6):
        raise CheckFailed("the cosine decays to 0 instead of min_lr: lr = min_lr + 0.5 * (1 + cos(pi * progress)) "
                          "* (max_lr - min_lr)")
    over_total = kw["min_lr"] + 0.5 * (1 + math.cos(math.pi * 60 / 110)) * (kw["max_lr"] - kw["min_lr"])
    if math.isclose(values[60], over_total, rel_tol=1e-6):
        raise CheckFailed("the cosine's progress is step / total_steps; it must start after the warm-up: "
                          "progress = (step - warmup_steps) / (total_steps - warmup_steps)")
    if not all(math.isclose(values[s], expected[s], rel_tol=1e-6) for s in (10, 35, 60, 110)):
        wrong = {key[s]: f"{values[s]:.3e} (expected {expected[s]:.3e})" for s in (10, 35, 60, 110)
                 if not math.isclose(values[s], expected[s], rel_tol=1e-6)}
        raise CheckFailed(f"the cosine part is off at {wrong}. Half a cosine: 0.5 * (1 + cos(pi * progress)), "
                          "progress from 0 at warmup_steps to 1 at total_steps (radians: math.cos, math.pi)")
    if not math.isclose(values[160], kw["min_lr"], rel_tol=1e-6):
        raise CheckFailed(f"after total_steps the learning rate is {values[160]:.2e}: the cosine rises again. "
                          "Hold it at min_lr once step >= total_steps")
    passed("lab05.lr_schedule")


def _setup():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(24, 5, generator=generator)
    y = torch.randint(0, 3, (24,), generator=generator)
    return model, x, y


def _loss_fn(model: torch.nn.Module, batch: Any) -> torch.Tensor:
    x, y = batch
    return torch.nn.functional.cross_entropy(model(x), y)


def _grads(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p) for p in model.parameters()]


def _close(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return all(torch.allclose(u, v, rtol=1e-4, atol=1e-6) for u, v in zip(a, b, strict=True))


@checker("lab05.accumulate")
def check_accumulate(accumulate_gradients: Callable[[torch.nn.Module, Callable, list], Any]) -> None:
    """``accumulate_gradients(model, loss_fn, micro_batches)`` must leave in ``.grad`` the gradient of the mean
    loss over all micro-batches (= the gradient of one batch made of them all), whatever ``.grad`` held before."""
    k = 4
    model, x, y = _setup()
    micro = [(x[i * 6:(i + 1) * 6], y[i * 6:(i + 1) * 6]) for i in range(k)]
    _loss_fn(model, (x, y)).backward()
    reference = _grads(model)
    model.zero_grad()
    _loss_fn(model, micro[-1]).backward()
    last_only = _grads(model)
    stale = [torch.full_like(p, 0.5) for p in model.parameters()]  # what an earlier step left behind
    for p, g in zip(model.parameters(), stale, strict=True):
        p.grad = g.clone()
    call(accumulate_gradients, model, _loss_fn, micro)
    got = _grads(model)
    if _close(got, reference):
        passed("lab05.accumulate")
        return
    if _close(got, [r * k for r in reference]):
        raise CheckFailed(f"the gradient is {k} times too large: divide each micro-batch loss by the number of "
                          f"micro-batches ({k}) before backward, or the step acts like a {k}x learning rate")
    if _close(got, [r + s for r, s in zip(reference, stale, strict=True)]) or \
            _close(got, [r * k + s for r, s in zip(reference, stale, strict=True)]):
        raise CheckFailed("the gradient still contains what .grad held before the call: zero the gradients "
                          "once, before the first micro-batch (model.zero_grad())")
    if _close(got, last_only) or _close(got, [g / k for g in last_only]):
        raise CheckFailed("only the last micro-batch's gradient is left: zero_grad() runs inside the loop. Zero "
                          "once before the loop; backward() adds into .grad")
    if all(torch.equal(g, s) for g, s in zip(got, stale, strict=True)):
        raise CheckFailed(".grad is unchanged: call backward() on each micro-batch's loss")
    raise CheckFailed("the accumulated gradient differs from the gradient of the whole batch: for each "
                      "micro-batch compute loss_fn(model, batch) / k and call backward() on it")
