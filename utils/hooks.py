"""What the training loop does around each update, one small function each: scalars,
histograms, update ratios, evaluation with early stopping, text samples, checkpoints,
the one rule for "every N updates", and what changes when several ranks train one model
(``Ranks``: the loss averaged over them, rank 0 saving).

``utils.loop.train`` calls these; each takes the writer (a ``tb.RunWriter``) and the
step it writes at.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from utils import checkpoint as ckpt
from utils import perf

if TYPE_CHECKING:  # only for the annotations: utils.loop imports this module
    from utils.loop import StepStats, TrainConfig
    from utils.tb import RunWriter

#: What ``utils.loop.train`` logs: (tag, what it holds, the setting that says how often).
TAGS = (
    ("train/loss, train/<m>", "mean loss (and metrics) of the update's micro-batches", "log_every"),
    ("train/perplexity", "exp(train/loss), with perplexity=True", "log_every"),
    ("train/lr (train/lr/<g>)", "rate the update used (per group when they differ)", "log_every"),
    ("train/grad_norm", "global L2 norm of the gradient, before clipping", "log_every"),
    ("perf/<units>_per_s", "examples or tokens per second of the update", "log_every"),
    ("perf/mfu", "model FLOPs utilisation against peak_gflops", "log_every"),
    ("val/loss, val/<m>", "eval_fn(model) after the update", "eval_every"),
    ("weights/<p>, grads/<p>", "histograms of each parameter and its gradient", "histogram_every"),
    ("update_ratio/<p>", "||update|| / ||weight|| of each matrix", "update_ratio_every"),
    ("grad_norm/<p>", "L2 norm of each matrix's gradient, before clipping", "layer_stats_every"),
    ("zero_share/<m>", "share of a ReLU's outputs that are exactly 0, on the update's batch",
     "layer_stats_every"),
    ("dead_share/<m>", "share of a ReLU's units that are 0 for every input of the update",
     "layer_stats_every"),
    ("samples", "sample_fn(model) text", "sample_every"),
)

#: ``eval_fn(model)``, or ``eval_fn(model, step)`` when it has a parameter named ``step``: ``{"loss": ...}``.
EvalFn = Callable[..., Mapping[str, float]]


def due(every: int, step: int, last_step: int) -> bool:
    """The one rule for "every N updates", used for logging, evaluation, histograms,
    update ratios, samples and checkpoints alike: at step 0, at every multiple of
    ``every``, and at the last step; ``every = 0``: never. Steps are 0-based update
    numbers."""
    return every > 0 and (step % every == 0 or step == last_step)


def group_lrs(optimizer: torch.optim.Optimizer) -> dict[str, float]:
    """The learning rate each parameter group is about to use, by group name
    (``group<i>`` when unnamed)."""
    groups = optimizer.param_groups
    return {group.get("name", f"group{i}"): float(group["lr"]) for i, group in enumerate(groups)}


def step_scalars(stats: StepStats, lrs: dict[str, float], rate: float,
                 config: TrainConfig, peak_gflops: float | None) -> dict[str, float]:
    """The scalars of one update by tag: ``train/loss`` (mean over its micro-batches),
    ``train/<metric>``, ``train/perplexity``, ``train/lr`` (the first group's; with
    several distinct rates also ``train/lr/<group>`` each), ``train/grad_norm`` (before
    clipping), ``perf/<units>_per_s``, ``perf/mfu``."""
    scalars = {"train/loss": stats.loss}
    if config.perplexity:
        scalars["train/perplexity"] = math.exp(min(stats.loss, 50.0))
    scalars.update({f"train/{name}": value for name, value in stats.metrics.items()})
    scalars["train/lr"] = next(iter(lrs.values()))
    if len(set(lrs.values())) > 1:
        scalars.update({f"train/lr/{name}": lr for name, lr in lrs.items()})
    scalars["train/grad_norm"] = stats.grad_norm
    scalars[f"perf/{config.units}_per_s"] = rate
    if config.flops_per_unit and peak_gflops:
        scalars["perf/mfu"] = perf.mfu(rate, config.flops_per_unit, peak_gflops)
    return scalars


def log_step(writer: RunWriter, step: int, stats: StepStats, lrs: dict[str, float],
             rate: float, config: TrainConfig, peak_gflops: float | None) -> None:
    """Write ``step_scalars`` as one event (``RunWriter.add_step_scalars``: one trip
    through tensorboardX's queue per update instead of one per tag)."""
    writer.add_step_scalars(step_scalars(stats, lrs, rate, config, peak_gflops), step)


def log_divergence(writer: RunWriter | None, step: int, stats: StepStats,
                   layer_scalars: Mapping[str, float] | None = None) -> None:
    """Record the non-finite loss of a diverged update, where the writer accepts one
    (``allow_non_finite``), and the update's per-layer scalars, if measured: which
    layer blew up (the non-finite among them likewise only where accepted)."""
    if writer is None:
        return
    allowed = getattr(writer, "allow_non_finite", False)
    if allowed:
        writer.add_scalar("train/loss", stats.loss, step)
    kept = {tag: v for tag, v in (layer_scalars or {}).items() if allowed or math.isfinite(v)}
    if kept:
        writer.add_step_scalars(kept, step)


def log_histograms(writer: RunWriter, model: torch.nn.Module, step: int) -> None:
    """``weights/<name>`` (after the update) and ``grads/<name>`` (the gradient it used)
    per parameter."""
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        writer.add_histogram(f"weights/{name}", p.detach(), step)
        if p.grad is not None:
            writer.add_histogram(f"grads/{name}", p.grad.detach(), step)


def snapshot_matrices(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Copies of the trainable matrices (``ndim >= 2``), taken before an update to
    measure its size."""
    return {name: p.detach().clone() for name, p in model.named_parameters()
            if p.requires_grad and p.ndim >= 2}


def log_update(writer: RunWriter, model: torch.nn.Module, config: TrainConfig,
               step: int, stats: StepStats, lrs: dict[str, float], rate: float,
               before: dict[str, torch.Tensor] | None,
               peak_gflops: float | None) -> None:
    """What is due at ``step``: the scalars, the histograms, the update ratios
    (``before``: the matrices ``snapshot_matrices`` copied before the update, or None
    when they are not due)."""
    last = config.max_steps - 1
    if due(config.log_every, step, last):
        log_step(writer, step, stats, lrs, rate, config, peak_gflops)
    if due(config.histogram_every, step, last):
        log_histograms(writer, model, step)
    if before is not None:
        log_update_ratios(writer, model, before, step)


def log_update_ratios(writer: RunWriter, model: torch.nn.Module, before: dict[str, torch.Tensor],
                      step: int) -> None:
    """``update_ratio/<name>`` = ||W_after - W_before|| / ||W_before|| for each matrix
    snapshotted."""
    params = dict(model.named_parameters())
    for name, old in before.items():
        change = torch.linalg.vector_norm(params[name].detach() - old)
        writer.add_scalar(f"update_ratio/{name}", float(change / (torch.linalg.vector_norm(old) + 1e-12)), step)


@dataclass
class EarlyStopping:
    """Stop after ``patience`` evaluations in a row without a validation loss *below*
    the best so far (a tie does not count as progress); optionally keep a copy of the
    best weights. ``patience=None``: never stop."""

    patience: int | None = None
    keep_best: bool = False
    best_loss: float = math.inf
    best_step: int = -1
    bad_evals: int = 0
    best_state: dict[str, torch.Tensor] | None = field(default=None, repr=False)

    def update(self, loss: float, step: int, model: torch.nn.Module) -> bool:
        """Record one evaluation; return True when training should stop."""
        if loss < self.best_loss:
            self.best_loss, self.best_step, self.bad_evals = loss, step, 0
            if self.keep_best:
                weights = model.state_dict().items()
                self.best_state = {k: v.detach().clone() for k, v in weights}
        else:
            self.bad_evals += 1
        return self.patience is not None and self.bad_evals >= self.patience

    def state(self) -> dict[str, float | int]:
        """What a checkpoint keeps, so a resumed run stops where an uninterrupted one
        would."""
        return {"best_val_loss": self.best_loss, "best_step": self.best_step,
                "bad_evals": self.bad_evals}

    def restore(self, state: dict[str, Any]) -> None:
        self.best_loss = float(state.get("best_val_loss", math.inf))
        self.best_step = int(state.get("best_step", -1))
        self.bad_evals = int(state.get("bad_evals", 0))


def evaluate_and_log(eval_fn: EvalFn, model: torch.nn.Module, step: int,
                     writer: RunWriter | None, perplexity: bool) -> dict[str, float]:
    """Run ``eval_fn`` (given ``step=step`` when it takes a ``step``), add
    ``perplexity`` = exp(loss) if asked, log each as ``val/<name>``."""
    found = eval_fn(model, step=step) if _takes_step(eval_fn) else eval_fn(model)
    metrics = {name: float(value) for name, value in found.items()}
    if perplexity:
        metrics["perplexity"] = math.exp(min(metrics["loss"], 50.0))
    model.train()
    if writer is not None:
        tagged = {f"val/{name}": value for name, value in metrics.items()}
        writer.add_step_scalars(tagged, step)
    return metrics


def _takes_step(fn: Callable[..., Any]) -> bool:
    """Whether ``fn`` has a parameter named ``step``: an ``eval_fn`` that logs something
    of its own, at the step of the evaluation (one written before the step was passed
    takes the model alone)."""
    try:
        return "step" in inspect.signature(fn).parameters
    except (TypeError, ValueError):  # a callable without a signature Python can read
        return False


def log_sample(writer: RunWriter, sample_fn: Callable[[torch.nn.Module], str], model: torch.nn.Module,
               step: int) -> None:
    """``samples``: the text ``sample_fn(model)`` generates (``add_text``)."""
    writer.add_text("samples", sample_fn(model), step)
    model.train()


@dataclass(frozen=True)
class Ranks:
    """The processes that train one model together, data-parallel, as
    ``utils.loop.train`` needs to know them (one process by default;
    ``utils.distributed.ranks()`` makes one from ``torch.distributed``). Each rank
    trains on its own rows of every batch, and:

    - ``rank`` 0 alone saves the checkpoints (and is the only rank given a writer);
    - ``mean(x)`` is the mean of a number over all ranks, so that the log shows the loss of the whole batch,
    not of one rank's rows. A collective: every rank calls it, at every update;
    - ``barrier()`` returns once every rank has called it: after a checkpoint, so that no rank runs ahead
    of a file still being written;
    - ``size`` ranks each process as many examples as this one (equal shards): throughput is ``size``
    times this rank's."""

    rank: int = 0
    size: int = 1
    mean: Callable[[float], float] = float
    barrier: Callable[[], None] = lambda: None


ONE_PROCESS = Ranks()


def over_ranks(stats: StepStats, ranks: Ranks) -> StepStats:
    """An update's numbers for the whole batch: loss and metrics averaged over the ranks
    (each measured its own rows); the gradient norm is the same on every rank already,
    computed after the all-reduce."""
    if ranks.size == 1:
        return stats
    return replace(stats, loss=ranks.mean(stats.loss),
                   metrics={name: ranks.mean(value) for name, value in stats.metrics.items()})


def save_checkpoint(config: TrainConfig, step: int, *, model: torch.nn.Module,
                    optimizer: torch.optim.Optimizer, scheduler: Any,
                    stopping: EarlyStopping, writer: RunWriter | None,
                    extra_state: Mapping[str, Any] | None,
                    ranks: Ranks = ONE_PROCESS) -> Path | None:
    """Save the state after update ``step`` (it records ``step + 1``, the first update a
    resumed run executes), flushing the writer first so that the log holds everything
    the checkpoint says happened; then delete all but the newest
    ``config.keep_checkpoints``. Rank 0 saves and returns the path, every other rank
    None; every rank returns only once the file is written (``ranks.barrier``)."""
    path = None
    if ranks.rank == 0:
        if writer is not None:
            writer.flush()
        extra = {"train_config": asdict(config), "train_state": stopping.state(),
                 **dict(extra_state or {})}
        path = ckpt.save_checkpoint(ckpt.step_path(config.checkpoint_dir, step + 1),
                                    model=model, step=step + 1, optimizer=optimizer,
                                    scheduler=scheduler, extra=extra)
        ckpt.prune_checkpoints(config.checkpoint_dir, config.keep_checkpoints)
    ranks.barrier()
    return path
