"""Where the training loop's batches come from: ``batch_fn(i) -> batch``, a pure function of the micro-batch
index ``i``, so that a resumed run sees exactly the data an uninterrupted one would have seen.

``epoch_batches`` shuffles an in-memory dataset once per epoch; ``random_windows`` cuts language-modelling
windows at random offsets of a token stream; ``fixed_windows`` is a fixed list of such batches for an
evaluation that measures the same tokens every time. ``to_device`` moves a batch where the model is.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

Batch = Any


def batch_count(batch: Batch, units: str = "examples") -> int:
    """Examples (first dimension of the inputs) or tokens (all their entries) in a batch."""
    if units not in ("examples", "tokens"):
        raise ValueError(f"units must be 'examples' or 'tokens', got {units!r}")
    first = batch[0]
    return int(first.numel()) if units == "tokens" else int(first.shape[0])


def to_device(batch: Batch, device: torch.device | str) -> Batch:
    """The batch's tensors on ``device`` (a tuple or list of tensors, or one tensor); other items unchanged."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, (tuple, list)):
        return type(batch)(to_device(item, device) for item in batch)
    return batch


def epoch_batches(x: torch.Tensor, y: torch.Tensor, batch_size: int, seed: int = 0) -> Callable[[int], Batch]:
    """``batch_fn`` for a dataset held in memory: micro-batch ``i`` is batch ``i mod n_batches`` of epoch
    ``i // n_batches``, each epoch a fresh permutation drawn from ``seed + epoch`` (the last batch of an epoch
    may be smaller). A pure function of ``i``: a resumed run gets the same batches."""
    n = len(x)
    per_epoch = math.ceil(n / batch_size)
    cache: dict[int, np.ndarray] = {}

    def batch_fn(index: int) -> Batch:
        epoch, position = divmod(index, per_epoch)
        if epoch not in cache:
            cache.clear()
            cache[epoch] = np.random.default_rng(seed + epoch).permutation(n)
        rows = torch.from_numpy(cache[epoch][position * batch_size:(position + 1) * batch_size])
        return x[rows], y[rows]

    batch_fn.batches_per_epoch = per_epoch  # type: ignore[attr-defined]
    return batch_fn


def random_windows(tokens: torch.Tensor, block_size: int, batch_size: int,
                   seed: int = 0) -> Callable[[int], Batch]:
    """``batch_fn`` for language modelling: micro-batch ``i`` is ``batch_size`` windows of ``block_size``
    tokens at random offsets of ``tokens`` (1-D long), drawn from a generator seeded with ``(seed, i)``.
    Returns ``(x, y)``, both (B, T), y shifted by one."""
    if tokens.ndim != 1 or len(tokens) <= block_size + 1:
        raise ValueError(f"need a 1-D token tensor longer than block_size + 1 = {block_size + 1}, "
                         f"got shape {tuple(tokens.shape)}")

    def batch_fn(index: int) -> Batch:
        generator = torch.Generator().manual_seed(seed * 1_000_003 + index)
        starts = torch.randint(len(tokens) - block_size - 1, (batch_size,), generator=generator)  # (B,)
        offsets = torch.arange(block_size)  # (T,)
        x = tokens[starts[:, None] + offsets]  # (B, T)
        y = tokens[starts[:, None] + offsets + 1]  # (B, T)
        return x, y

    return batch_fn


def fixed_windows(tokens: torch.Tensor, block_size: int, batch_size: int, n_batches: int,
                  seed: int = 1) -> list[Batch]:
    """A fixed list of ``n_batches`` random-window batches, for an evaluation that measures the same
    tokens every time (so that its curve is not noisier than the model)."""
    batch_fn = random_windows(tokens, block_size, batch_size, seed)
    return [batch_fn(i) for i in range(n_batches)]
