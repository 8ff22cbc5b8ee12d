"""Learning-rate schedules: linear warm-up, then cosine decay to a floor.

``warmup_cosine(step, ...)`` is a pure function of the step (an ``int``, counted from 0 = the first update);
``lr_lambda(...)`` wraps it as the multiplier ``torch.optim.lr_scheduler.LambdaLR`` expects, so the
scheduler's state is just its step counter and resumes exactly from a checkpoint.
"""

from __future__ import annotations

import math
from collections.abc import Callable


def warmup_cosine(step: int, *, max_lr: float, warmup_steps: int, total_steps: int, min_lr: float = 0.0) -> float:
    """The learning rate of update ``step`` (0-based): warm-up, cosine decay, then a constant floor.

    - ``step < warmup_steps``: linear from ``max_lr / warmup_steps`` (step 0: not 0, or the first update
      would be wasted) up to ``max_lr`` at ``step = warmup_steps - 1``;
    - ``warmup_steps <= step <= total_steps``: half a cosine from ``max_lr`` (at ``warmup_steps``) down to
      ``min_lr`` (at ``total_steps``), over the ``total_steps - warmup_steps`` steps left after warm-up;
    - ``step > total_steps``: ``min_lr`` (the cosine must not rise again).

    Units: whatever ``max_lr`` is in (a learning rate); returns a ``float``.
    """
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    if not 0 <= warmup_steps <= total_steps:
        raise ValueError(f"need 0 <= warmup_steps <= total_steps, got {warmup_steps} and {total_steps}")
    if step < warmup_steps:
        return max_lr * (step + 1) / warmup_steps
    if step >= total_steps:
        return min_lr
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)  # 0 -> 1
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (max_lr - min_lr)


def lr_lambda(*, max_lr: float, warmup_steps: int, total_steps: int, min_lr: float = 0.0) -> Callable[[int], float]:
    """``warmup_cosine`` as a multiplier of ``max_lr``, for ``LambdaLR(optimizer, lr_lambda(...))`` with the
    optimizer's learning rate set to ``max_lr``. ``max_lr = 0`` gives a multiplier of 0 throughout."""

    def multiplier(step: int) -> float:
        if max_lr == 0:
            return 0.0
        return warmup_cosine(step, max_lr=max_lr, warmup_steps=warmup_steps, total_steps=total_steps,
                             min_lr=min_lr) / max_lr

    return multiplier
