"""The two sides of ``benchmarks.speedrun`` and the one loop that times them.

A ``Recipe`` is every setting of one training run. ``nanogpt_side`` builds nanoGPT's model and optimizer
from a checkout (its ``model.py`` and ``configure_optimizers``) and schedules the learning rate as its
``train.py`` does; ``book_side`` builds the book's ``utils.gpt.GPT`` and steps it with
``utils.loop.train_step``, with AdamW (``utils.optim.make_adamw``'s groups) or with ``torch.optim.Muon`` on
the blocks' matrices and AdamW on the rest, on the book's warm-up + cosine (``utils.schedule``).
``run_to_target`` trains one side, timing the updates only: the validation loss on fixed batches every
``eval_every`` updates (and after the last) is measured with the clock stopped, and the run ends as soon as
it reaches ``target``. ``torch.compile`` compiles on the first update, so its compile time is counted.
"""

from __future__ import annotations

import contextlib
import io
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from types import ModuleType
from typing import Any

import torch

from utils import loop, schedule
from utils.evaluation import lm_loss
from utils.gpt import GPT, GPTConfig
from utils.optim import make_adamw

#: nanoGPT's CPU recipe: its README's command ("I only have a macbook") over train_shakespeare_char.py.
SHAPE = {"block_size": 64, "n_layer": 4, "n_head": 4, "n_embd": 128}
GRAD_CLIP = 1.0


@dataclass(frozen=True)
class Recipe:
    """One training run. ``steps`` is where the schedule ends (the cosine reaches ``min_lr``); a run may
    stop earlier, at its target. ``muon_lr``: Muon on the blocks' matrices at this peak rate (AdamW at
    ``lr`` on the embeddings and norms); None, AdamW everywhere."""

    name: str
    side: str = "book"  # "book" or "nanogpt"
    steps: int = 2000
    batch: int = 12
    lr: float = 1e-3
    min_lr: float = 1e-4
    warmup: int = 100
    betas: tuple[float, float] = (0.9, 0.99)
    weight_decay: float = 0.1
    muon_lr: float | None = None
    muon_weight_decay: float = 0.0
    adamw: str = "for-loop"  # torch's AdamW implementation: "for-loop", "foreach" or "fused"
    compile: bool = False
    threads: int | None = None  # None: torch's default
    note: str = ""

    def but(self, name: str, note: str = "", **changes: Any) -> Recipe:
        return replace(self, name=name, note=note, **changes)

    def settings(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if k not in ("name", "note")}


#: nanoGPT's recipe: lr 1e-3 to 1e-4 over 2,000 updates after 100 of warm-up, AdamW (0.9, 0.99), decay 0.1.
NANOGPT = Recipe("nanogpt", side="nanogpt")


class Optimizers:
    """Several optimizers stepped as one, with the interface ``loop.train_step`` uses."""

    def __init__(self, *optimizers: torch.optim.Optimizer) -> None:
        self.optimizers = optimizers

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return [group for optimizer in self.optimizers for group in optimizer.param_groups]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        for optimizer in self.optimizers:
            optimizer.step()


@dataclass
class Side:
    """A model, its update ``step(batch) -> loss`` and its learning rate at update ``s``: ``set_lr(s)``."""

    model: torch.nn.Module  # the module evaluated (uncompiled)
    step: Callable[[tuple[torch.Tensor, torch.Tensor]], float]
    set_lr: Callable[[int], None]


def nanogpt_lr(recipe: Recipe, step: int) -> float:
    """The learning rate of ``step`` as nanoGPT's ``train.py`` schedules it: linear warm-up to ``lr`` over
    ``warmup + 1`` steps, then a cosine to ``min_lr`` at ``steps`` (its ``lr_decay_iters``)."""
    if step < recipe.warmup:
        return recipe.lr * (step + 1) / (recipe.warmup + 1)
    if step > recipe.steps:
        return recipe.min_lr
    progress = (step - recipe.warmup) / (recipe.steps - recipe.warmup)
    return recipe.min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (recipe.lr - recipe.min_lr)


def book_multiplier(recipe: Recipe, step: int) -> float:
    """The book's warm-up + cosine (``utils.schedule.warmup_cosine``) as a multiplier of each peak rate."""
    return schedule.warmup_cosine(step, max_lr=1.0, warmup_steps=recipe.warmup, total_steps=recipe.steps,
                                  min_lr=recipe.min_lr / recipe.lr)


def _scheduler(optimizer: Any, multiplier: Callable[[int], float]) -> Callable[[int], None]:
    """``set_lr(step)``: every group at its own peak rate (its rate when built) times ``multiplier(step)``."""
    peaks = [float(group["lr"]) for group in optimizer.param_groups]

    def set_lr(step: int) -> None:
        factor = multiplier(step)
        for group, peak in zip(optimizer.param_groups, peaks, strict=True):
            group["lr"] = peak * factor

    return set_lr


def nanogpt_side(nanogpt: ModuleType, recipe: Recipe, vocab_size: int, seed: int) -> Side:
    """nanoGPT's GPT and ``configure_optimizers``, stepped as its ``train.py`` steps in fp32."""
    torch.manual_seed(seed)
    config = nanogpt.GPTConfig(vocab_size=vocab_size, dropout=0.0, bias=False, **SHAPE)
    with contextlib.redirect_stdout(io.StringIO()):  # it prints its parameter count and optimizer groups
        model = nanogpt.GPT(config).train()
        optimizer = model.configure_optimizers(recipe.weight_decay, recipe.lr, recipe.betas, "cpu")

    def step(batch: tuple[torch.Tensor, torch.Tensor]) -> float:
        _, loss = model(*batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()

    return Side(model, step, _scheduler(optimizer, lambda s: nanogpt_lr(recipe, s) / recipe.lr))


def book_optimizer(model: GPT, recipe: Recipe) -> Optimizers:
    """AdamW over ``make_adamw``'s groups (decay on matrices only) in the recipe's implementation; with
    ``muon_lr``, the blocks' matrices go to ``torch.optim.Muon`` instead."""
    implementation = {"for-loop": {"foreach": False}, "foreach": {"foreach": True},
                      "fused": {"fused": True}}[recipe.adamw]
    hidden = [p for name, p in model.named_parameters()
              if recipe.muon_lr is not None and name.startswith("transformer.h.") and p.ndim == 2]
    rest = make_adamw(model, recipe.lr, recipe.weight_decay, betas=recipe.betas)
    groups = [{"params": [p for p in g["params"] if all(p is not h for h in hidden)],
               "weight_decay": g["weight_decay"], "lr": g["lr"]} for g in rest.param_groups]
    optimizers = [torch.optim.AdamW([g for g in groups if g["params"]], lr=recipe.lr, betas=recipe.betas,
                                    **implementation)]
    if hidden:
        optimizers.append(torch.optim.Muon(hidden, lr=recipe.muon_lr,
                                           weight_decay=recipe.muon_weight_decay))
    return Optimizers(*optimizers)


def book_side(recipe: Recipe, vocab_size: int, seed: int) -> Side:
    """The book's GPT, stepped by ``utils.loop.train_step``; compiled by ``torch.compile`` if asked."""
    torch.manual_seed(seed)
    model = GPT(GPTConfig(vocab_size=vocab_size, dropout=0.0, bias=False, **SHAPE)).train()
    optimizer = book_optimizer(model, recipe)
    stepped = torch.compile(model) if recipe.compile else model

    def step(batch: tuple[torch.Tensor, torch.Tensor]) -> float:
        return loop.train_step(stepped, optimizer, [batch], lm_loss, grad_clip=GRAD_CLIP).loss

    set_lr = _scheduler(optimizer, lambda s: book_multiplier(recipe, s))
    return Side(model, step, set_lr)


@torch.no_grad()
def evaluate(model: torch.nn.Module, batches: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> float:
    """The mean loss over fixed, equal-size batches, in eval mode."""
    model.eval()
    losses = [float(model(x, y)[1]) for x, y in batches]
    model.train()
    return sum(losses) / len(losses)


@dataclass
class Outcome:
    """What a run did: updates, training seconds (evaluations excluded) and its validation curve."""

    recipe: Recipe
    steps: int = 0
    train_s: float = 0.0
    curve: list[tuple[int, float, float]] = field(default_factory=list)  # (updates, train s, val loss)
    reached: bool = False

    @property
    def tokens(self) -> int:
        return self.steps * self.recipe.batch * SHAPE["block_size"]

    @property
    def val_loss(self) -> float:
        return self.curve[-1][2]


def run_to_target(side: Side, recipe: Recipe, batch_fn: Callable[[int], Any], val_batches: Sequence[Any],
                  eval_every: int, target: float | None = None, writer: Any = None) -> Outcome:
    """Train ``side`` for ``recipe.steps`` updates, or until the validation loss (every ``eval_every``
    updates and after the last) is at or below ``target``. Only the updates are timed (batch, learning
    rate, step); each evaluation is logged to ``writer`` (``log_point``)."""
    outcome, started = Outcome(recipe), time.time()
    for step in range(recipe.steps):
        tick = time.perf_counter()
        side.set_lr(step)
        loss = side.step(batch_fn(step))
        outcome.train_s += time.perf_counter() - tick
        outcome.steps = step + 1
        if not math.isfinite(loss):
            break
        if outcome.steps % eval_every and outcome.steps != recipe.steps:
            continue
        val = evaluate(side.model, val_batches)
        outcome.curve.append((outcome.steps, outcome.train_s, val))
        if writer is not None:
            log_point(writer, outcome, loss, started)
        if target is not None and val <= target:
            outcome.reached = True
            break
    return outcome


def log_point(writer: Any, outcome: Outcome, train_loss: float, started: float) -> None:
    """One evaluation in TensorBoard: ``val/loss`` and ``train/loss`` at the update count, their wall time
    the run's start plus its training seconds (TensorBoard's Relative axis: training time, evaluations
    left out); ``val/loss_vs_train_ms`` at step = training milliseconds; ``val/loss_vs_tokens`` at step
    = tokens seen."""
    steps, seconds, val = outcome.curve[-1]
    walltime = started + seconds
    writer.add_scalar("val/loss", val, steps, walltime=walltime)
    writer.add_scalar("train/loss", train_loss, steps, walltime=walltime)
    writer.add_scalar("val/loss_vs_train_ms", val, round(seconds * 1e3), walltime=walltime)
    writer.add_scalar("val/loss_vs_tokens", val, outcome.tokens, walltime=walltime)
