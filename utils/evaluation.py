"""Losses the training loop optimises, and validation: means weighted by batch size.

A ``loss_fn(model, batch) -> (mean loss tensor, {metric: float})`` is what
``utils.loop.train`` calls on every micro-batch: ``classification_loss`` for a
classifier, ``lm_loss`` for a language model. ``evaluate`` averages a loss function over
validation batches **weighted by batch size**; ``dead_unit_fraction`` measures a layer
whose units stopped firing; ``WeightedMean`` is that average on its own, shared with the
TensorFlow loop in ``utils.keras_tb``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
import torch.nn.functional as F

from utils.batches import Batch, batch_count, to_device

LossFn = Callable[[torch.nn.Module, Batch], tuple[torch.Tensor, dict[str, float]]]


def dead_unit_fraction(activations: torch.Tensor) -> float:
    """Share of units (the columns of ``activations``, (N, U)) that output exactly 0 on
    every example (row): a ReLU unit that never fires passes no gradient back, so
    nothing revives it."""
    return float((activations == 0).all(dim=0).double().mean())


def classification_loss(model: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor]):
    """``loss_fn`` for a classifier: ``model(x)`` gives logits (B, C); returns mean
    cross-entropy and the batch accuracy (a fraction)."""
    x, y = batch
    logits = model(x)  # (B, C)
    loss = F.cross_entropy(logits.float(), y)
    return loss, {"accuracy": (logits.argmax(-1) == y).float().mean().item()}


def lm_loss(model: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor]):
    """``loss_fn`` for a language model with the ``utils.gpt.GPT`` interface: ``model(x,
    y)`` returns ``(logits, loss)`` with x, y of shape (B, T) (token ids; y is x shifted
    by one: the loss at position t scores the prediction of token t + 1)."""
    x, y = batch
    _, loss = model(x, y)
    return loss, {}


class WeightedMean:
    """Running means of named values, each batch weighted by its size: ``sum(value_b *
    n_b) / sum(n_b)``. The mean of batch means is wrong whenever batches differ in size
    (a smaller last batch)."""

    def __init__(self) -> None:
        self.totals: dict[str, float] = {}
        self.count = 0

    def add(self, values: Mapping[str, float], n: int) -> None:
        """Add one batch of ``n`` examples (or tokens) whose mean values are ``values``.
        """
        for name, value in values.items():
            self.totals[name] = self.totals.get(name, 0.0) + float(value) * n
        self.count += n

    def means(self) -> dict[str, float]:
        if self.count == 0:
            raise ValueError("no batches were averaged: the validation data is empty")
        return {name: total / self.count for name, total in self.totals.items()}


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of the model's first parameter (CPU for a model without parameters).
    """
    first = next(model.parameters(), None)
    return first.device if first is not None else torch.device("cpu")


@torch.no_grad()
def evaluate(model: torch.nn.Module, batches: Iterable[Batch], loss_fn: LossFn,
             units: str = "examples",
             autocast: Callable[[], Any] = contextlib.nullcontext) -> dict[str, float]:
    """Mean loss and metrics over an iterable of batches, **weighted by batch size**
    (see ``WeightedMean``). Each batch is moved to the model's device. Puts the model in
    eval mode (dropout off) and back. autocast: a context-manager factory such as
    ``utils.loop.autocast_context(...)`` (default: full precision)."""
    was_training = model.training
    model.eval()
    device = model_device(model)
    average = WeightedMean()
    try:
        for batch in batches:
            batch = to_device(batch, device)
            with autocast():
                loss, metrics = loss_fn(model, batch)
            average.add({"loss": float(loss), **metrics}, batch_count(batch, units))
    finally:
        model.train(was_training)
    return average.means()
