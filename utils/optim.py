"""The optimizer and its learning-rate schedule.

``make_adamw`` builds AdamW with weight decay on matrices only, optionally with a
different learning rate per part of the model (discriminative learning rates: a
pretrained body slower than a new head). ``make_scheduler`` makes every parameter group
follow warm-up + cosine (``utils.schedule``) *from its own learning rate*, so those
per-group rates survive the schedule.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from utils import schedule


def make_adamw(model: torch.nn.Module, lr: float, weight_decay: float = 0.0,
               betas: tuple[float, float] = (0.9, 0.95), eps: float = 1e-8,
               lr_by_prefix: Mapping[str, float] | None = None) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (``ndim >= 2``: linear and embedding
    weights), never on biases or normalisation gains, whose decay only hurts. Frozen
    parameters (``requires_grad=False``) are left out.

    lr_by_prefix: ``{parameter-name prefix: learning rate}`` for parts that train at
    another rate, e.g. ``{"head.": 1e-3}`` with ``lr=1e-4`` for the body; the first
    matching prefix wins. Each group gets a ``name`` (``decay``, ``no_decay``, or
    ``<prefix>decay`` ...), which the training loop logs its rate under.
    """
    groups: dict[str, dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        prefix = next((pre for pre in (lr_by_prefix or {}) if name.startswith(pre)), "")
        kind = "decay" if p.ndim >= 2 else "no_decay"
        group = groups.setdefault(prefix + kind, {
            "name": prefix + kind, "params": [],
            "weight_decay": weight_decay if kind == "decay" else 0.0,
            "lr": lr_by_prefix[prefix] if prefix else lr})
        group["params"].append(p)
    if not groups:
        raise ValueError("the model has no trainable parameter "
                         "(every requires_grad is False)")
    return torch.optim.AdamW(list(groups.values()), lr=lr, betas=betas, eps=eps)


def make_scheduler(optimizer: torch.optim.Optimizer, *, lr: float, min_lr: float,
                   warmup_steps: int,
                   total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """``LambdaLR`` scaling each group's own learning rate by the warm-up + cosine
    multiplier that takes ``lr`` to ``min_lr``: a group built at ``lr`` follows
    ``schedule.warmup_cosine`` exactly, a group built at ``lr / 10`` follows it at a
    tenth. ``lr`` must be the largest group rate (the peak of the run); ``min_lr = lr``
    gives a constant rate (after warm-up)."""
    peaks = [group["lr"] for group in optimizer.param_groups]
    reaches_lr = any(abs(peak - lr) <= 1e-12 * max(lr, 1e-30) for peak in peaks)
    if not reaches_lr or max(peaks) > lr * (1 + 1e-12):
        raise ValueError(f"the optimizer's learning rates {sorted(set(peaks))} do "
                         f"not peak at lr = {lr}: build the optimizer with the run's "
                         "peak learning rate (groups may use lower ones)")
    multiplier = schedule.lr_lambda(max_lr=lr, warmup_steps=warmup_steps,
                                    total_steps=total_steps, min_lr=min_lr)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, multiplier)
