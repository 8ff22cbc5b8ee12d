"""Checkers of lab 4 (``labs/lab04_training.ipynb``): a batch-size-weighted validation loss, early stopping."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

from utils.checks import CheckFailed, call, checker, passed


def _reference_stop(val_losses: Sequence[float], patience: int, min_delta: float = 0.0) -> int | None:
    best, bad = math.inf, 0
    for index, value in enumerate(val_losses):
        if value < best - min_delta:
            best, bad = value, 0
        else:
            bad += 1
            if bad >= patience:
                return index
    return None


@checker("lab04.validation_loss")
def check_validation_loss(validation_loss: Callable[[torch.nn.Module, list], float]) -> None:
    """``validation_loss(model, batches)``: mean cross-entropy over every example of ``batches`` (a list of
    ``(x, y)`` of different sizes), with the model in eval mode and no gradients."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(100, 6, generator=generator)
    y = torch.randint(0, 3, (100,), generator=generator)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Dropout(0.5), torch.nn.Linear(16, 3))
    model.train()
    with torch.no_grad():
        model.eval()
        per_example = torch.nn.functional.cross_entropy(model(x), y, reduction="none")
        model.train()
    order = torch.argsort(per_example)  # sorted, so that batches have different mean losses
    sizes = [40, 40, 20]
    starts = [0, 40, 80]
    batches = [(x[order][s:s + n], y[order][s:s + n]) for s, n in zip(starts, sizes, strict=True)]
    expected = per_example.mean().item()
    got = call(validation_loss, model, batches)
    got = float(got.item() if hasattr(got, "item") else got)
    batch_means = [per_example[order][s:s + n].mean().item() for s, n in zip(starts, sizes, strict=True)]
    if math.isclose(got, sum(batch_means) / len(batch_means), rel_tol=1e-4):
        raise CheckFailed(f"returned {got:.4f}, the mean of the batch means; with batches of {sizes} examples "
                          f"that over-weights the small last batch. Weight each batch mean by its size: "
                          f"sum(loss_b * n_b) / sum(n_b) = {expected:.4f}")
    if math.isclose(got, sum(m * n for m, n in zip(batch_means, sizes, strict=True)), rel_tol=1e-4):
        raise CheckFailed("returned the weighted sum; divide by the number of examples")
    if not model.training:
        raise CheckFailed("the model was left in eval mode: restore model.train() after evaluating (a training "
                          "loop that evaluates in the middle would go on without dropout)")
    if not math.isclose(got, expected, rel_tol=1e-4):
        repeat = call(validation_loss, model, batches)
        repeat = float(repeat.item() if hasattr(repeat, "item") else repeat)
        if not math.isclose(repeat, got, rel_tol=1e-6):
            raise CheckFailed(f"two calls gave {got:.4f} and {repeat:.4f}: dropout is active. Call model.eval() "
                              "before evaluating (and model.train() after)")
        raise CheckFailed(f"returned {got:.4f}, expected {expected:.4f} (mean cross-entropy per example)")
    passed("lab04.validation_loss")


@checker("lab04.stop_index")
def check_stop_index(stop_index: Callable[[Sequence[float], int], Any]) -> None:
    """``stop_index(val_losses, patience)``: the index of the evaluation at which early stopping ends the run
    (the ``patience``-th evaluation in a row without a new best), or ``None`` if it never does."""
    cases = [
        ([1.0, 0.9, 0.8, 0.7], 2),  # always improving: never stops
        ([1.0, 0.9, 0.95, 0.97, 0.99, 1.0, 1.0], 3),  # stops at 4
        ([1.0, 1.1, 0.9, 1.2, 0.85, 1.3, 1.4], 2),  # improvements reset the count: stops at 6
        ([1.0, 0.8, 0.85, 0.82, 0.81, 0.9], 4),  # compared with the best (0.8), not the previous value: 5
    ]
    for losses, patience in cases:
        expected = _reference_stop(losses, patience)
        got = call(stop_index, list(losses), patience)
        if got == expected:
            continue
        if expected is None:
            raise CheckFailed(f"with validation losses {losses} (always improving) and patience {patience} you "
                              f"stop at {got}; the run should never stop (return None)")
        if got is not None and got == expected + 1:
            raise CheckFailed(f"{losses}, patience {patience}: you stop at {got}, one evaluation late: stop when "
                              f"the count of evaluations without improvement *reaches* patience (>=)")
        if got is not None and got == expected - 1:
            raise CheckFailed(f"{losses}, patience {patience}: you stop at {got}, one evaluation early: the "
                              f"evaluation that sets a new best does not count as a bad one")
        if losses == [1.0, 1.1, 0.9, 1.2, 0.85, 1.3, 1.4]:
            raise CheckFailed(f"{losses}, patience {patience}: you return {got}, expected {expected}. Reset the "
                              "count of bad evaluations to 0 whenever a new best appears")
        if losses == [1.0, 0.8, 0.85, 0.82, 0.81, 0.9]:
            raise CheckFailed(f"{losses}, patience {patience}: you return {got}, expected {expected}. Compare each "
                              "loss with the *best* so far, not with the previous one")
        raise CheckFailed(f"{losses}, patience {patience}: you return {got}, expected {expected}. Count the "
                          "evaluations since the last new best, and return the index where the count reaches "
                          "patience")
    passed("lab04.stop_index")
