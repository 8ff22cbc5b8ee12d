"""What a gradient k times too large does under AdamW, the book's optimizer (chapters 4, 5 and 9 say it).

Under SGD it is a k-times larger learning rate. AdamW divides each update by the running root mean square of
the gradient, so a gradient scaled by a constant k moves the weights the same distance (up to ``eps``);
what changes is the logged gradient norm (k times larger) and clipping: a fixed threshold then clips more
updates, as a threshold k times smaller would. Measured here on the book's GPT and optimizer.

What each test guards against: a "forgot to divide by k" box that teaches SGD's behaviour for AdamW; a
"clipping becomes part of the learning rate" claim that is not what AdamW does.
"""

from __future__ import annotations

import torch

from utils.evaluation import lm_loss
from utils.gpt import GPT, GPTConfig
from utils.loop import train_step
from utils.optim import make_adamw

CONFIG = GPTConfig(vocab_size=65, block_size=32, n_layer=2, n_head=2, n_embd=32)


def _distance_moved(scale: float, steps: int = 20, grad_clip: float | None = None, lr: float = 1e-3,
                    optimizer: str = "adamw") -> tuple[float, list[float]]:
    """Train a fresh model ``steps`` updates on fixed batches with the loss multiplied by ``scale``; the
    L2 distance its weights moved, and the gradient norms ``train_step`` reports (before clipping)."""
    torch.manual_seed(0)
    model = GPT(CONFIG)
    start = [p.detach().clone() for p in model.parameters()]
    if optimizer == "adamw":
        opt = make_adamw(model, lr, weight_decay=0.0)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(0)
    norms = []
    for _ in range(steps):
        batch = tuple(torch.randint(65, (8, 32), generator=generator) for _ in range(2))

        def scaled(m, b):
            loss, metrics = lm_loss(m, b)
            return loss * scale, metrics

        norms.append(train_step(model, opt, [batch], scaled, grad_clip=grad_clip).grad_norm)
    moved = sum(float((p.detach() - s).pow(2).sum()) for p, s in zip(model.parameters(), start, strict=True))
    return moved**0.5, norms


def test_a_k_times_larger_gradient_moves_adamw_the_same_distance_and_sgd_k_times_further():
    k = 4.0
    adamw_one, norms_one = _distance_moved(1.0)
    adamw_k, norms_k = _distance_moved(k)
    assert abs(adamw_k / adamw_one - 1) < 0.01  # measured 1.000
    assert all(abs(b / a - k) < 1e-3 for a, b in zip(norms_one, norms_k, strict=True))  # the log shows k
    sgd_one, _ = _distance_moved(1.0, steps=1, optimizer="sgd", lr=0.05)
    sgd_k, _ = _distance_moved(k, steps=1, optimizer="sgd", lr=0.05)
    assert abs(sgd_k / sgd_one - k) < 1e-3  # SGD: its update is k times larger


def test_under_adamw_a_k_times_larger_gradient_meets_clipping_as_a_k_times_lower_threshold():
    k, threshold = 4.0, 1.0
    _, norms = _distance_moved(1.0)
    clipped_one = sum(n > threshold for n in norms)
    clipped_k = sum(k * n > threshold for n in norms)
    assert clipped_k > clipped_one  # more updates clipped, as with a threshold of 1/k
    with_clip_one, _ = _distance_moved(1.0, grad_clip=threshold)
    with_clip_k, _ = _distance_moved(k, grad_clip=threshold)
    # AdamW still normalises: the distance changes by a few per cent at most, not by a factor
    assert abs(with_clip_k / with_clip_one - 1) < 0.1
