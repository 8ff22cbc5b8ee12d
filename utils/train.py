"""The book's one training loop, instrumented with tensorboardX, checkpointed, resumable.

``train(model, optimizer, config, batch_fn=..., loss_fn=..., eval_fn=..., writer=...)`` runs
``config.max_steps`` optimizer updates. Each update: ``grad_accum_steps`` micro-batches (forward under bf16
autocast when asked, ``loss / k`` backward), global gradient-norm clipping, an optimizer step and a
learning-rate step (warm-up + cosine from ``utils.schedule``). Around it:

=====================  ==========================================================  =====================
tag                    what                                                        when
=====================  ==========================================================  =====================
train/loss             mean loss of the update's micro-batches (``train/<metric>``  every ``log_every``
                       for the extra metrics of ``loss_fn``; ``train/perplexity``)
train/lr               learning rate used by the update                            every ``log_every``
train/grad_norm        global L2 norm of the gradient, before clipping             every ``log_every``
perf/<units>_per_s     examples or tokens per second of the update                 every ``log_every``
perf/mfu               model FLOPs utilisation vs the measured matmul peak         every ``log_every``
val/loss, val/<m>      ``eval_fn(model)`` (batch-size-weighted averages)           every ``eval_every``
weights/<p>, grads/<p> histograms of each parameter and its gradient              every ``histogram_every``
update_ratio/<p>       ||update|| / ||weight|| of each matrix parameter              every ``update_ratio_every``
samples                ``sample_fn(model)`` text (``add_text``)                    see below
=====================  ==========================================================  =====================

Steps are 0-based update numbers: the values of update ``s`` are logged at step ``s``; the evaluation
after update ``s`` too. "Every N" means at steps 0, N, 2N, ... and at the last step (histograms and update
ratios: not necessarily the last). Samples: at step 0, at the last step, and at the steps ``s`` where
``s + 1`` is a multiple of ``sample_every``, i.e. right before the checkpoint saved after update ``s``. A checkpoint saved after update ``s`` records ``step = s + 1``, the first update a
resumed run executes.

Resuming without duplicated or lost points, in every reader: every run segment is opened with
``purge_step`` (0 for a fresh run, the checkpoint's step on resume), the writer is flushed right before each
checkpoint is saved, and a resumed run writes again, deterministically, every step after the checkpoint.
TensorBoard's Python loaders purge on every session start but the first (so the first segment must emit
one too: ``purge_step=0``); its Rust loader keeps the last value written for a repeated step. ``open_segment``
does this. Batches come from ``batch_fn(i)`` with ``i`` the global micro-batch index, a pure function of
``i``, so a resumed run sees the same data as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from utils import checkpoint as ckpt
from utils import perf, schedule

Batch = Any
LossFn = Callable[[torch.nn.Module, Batch], tuple[torch.Tensor, dict[str, float]]]


# --------------------------------------------------------------------------------------------- configuration


@dataclass
class TrainConfig:
    """Every knob of ``train``. Learning rates in the optimizer's units; ``*_every`` in updates
    (0 = never; evaluation and checkpoints also happen after the last update)."""

    max_steps: int
    lr: float = 1e-3
    min_lr: float = 0.0
    warmup_steps: int = 0
    schedule: str = "cosine"  # "cosine" (warm-up + cosine to min_lr) or "constant" (lr throughout)
    grad_clip: float | None = 1.0  # max global L2 norm; None = no clipping (the norm is still logged)
    grad_accum_steps: int = 1
    autocast: str = "off"  # "off", "bf16", or "auto" (bf16 where perf.bf16_autocast_supported says so)
    log_every: int = 1
    eval_every: int = 0
    histogram_every: int = 0
    update_ratio_every: int = 0
    sample_every: int = 0
    early_stopping_patience: int | None = None  # evaluations without improvement before stopping
    early_stopping_min_delta: float = 0.0
    restore_best: bool = False  # at the end of an early-stopped run, reload the best weights seen
    checkpoint_every: int = 0
    checkpoint_dir: str | None = None
    keep_checkpoints: int = 2
    units: str = "examples"  # what batch_count counts: "examples" or "tokens" (names the throughput tag)
    flops_per_unit: float | None = None  # training FLOPs per unit, for perf/mfu
    perplexity: bool = False  # also log exp(loss) as train/perplexity and val/perplexity
    stop_on_non_finite: bool = True  # a NaN/inf loss ends the run (result.diverged) instead of raising
    stop_after: int | None = None  # end after this many updates as if interrupted (to demonstrate resume)
    progress: bool = True  # tqdm bar
    desc: str = "train"
    device: str = "cpu"


@dataclass
class TrainResult:
    """What ``train`` did. Lists hold one entry per logged step / per evaluation."""

    start_step: int = 0
    steps_done: int = 0  # updates completed in total (including those before a resume)
    train_steps: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    eval_steps: list[int] = field(default_factory=list)
    eval_metrics: list[dict[str, float]] = field(default_factory=list)
    best_val_loss: float = math.inf
    best_step: int = -1
    stopped_early: bool = False
    diverged: bool = False
    interrupted: bool = False
    checkpoints: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0
    units_per_s: float = 0.0  # mean throughput of the logged steps
    mfu: float | None = None
    autocast_dtype: str = "float32"

    def val(self, name: str = "loss") -> list[float]:
        """One validation metric, in evaluation order."""
        return [m[name] for m in self.eval_metrics]


# --------------------------------------------------------------------------------------------- building blocks


def make_adamw(model: torch.nn.Module, lr: float, weight_decay: float = 0.0,
               betas: tuple[float, float] = (0.9, 0.95), eps: float = 1e-8) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (``ndim >= 2``: linear and embedding weights), never on biases
    or normalisation gains, whose decay only hurts."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=lr, betas=betas, eps=eps)


def make_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig) -> torch.optim.lr_scheduler.LambdaLR:
    """``LambdaLR`` following ``config`` (sets every group's base learning rate to ``config.lr``)."""
    for group in optimizer.param_groups:
        group["lr"] = config.lr
        group["initial_lr"] = config.lr
    if config.schedule == "constant":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    if config.schedule != "cosine":
        raise ValueError(f"schedule must be 'cosine' or 'constant', got {config.schedule!r}")
    return torch.optim.lr_scheduler.LambdaLR(optimizer, schedule.lr_lambda(
        max_lr=config.lr, warmup_steps=config.warmup_steps, total_steps=config.max_steps, min_lr=config.min_lr))


def classification_loss(model: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor]):
    """``loss_fn`` for a classifier: ``model(x)`` gives logits (B, C); returns mean cross-entropy and the
    batch accuracy (a fraction)."""
    x, y = batch
    logits = model(x)  # (B, C)
    loss = F.cross_entropy(logits.float(), y)
    return loss, {"accuracy": (logits.argmax(-1) == y).float().mean().item()}


def lm_loss(model: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor]):
    """``loss_fn`` for a language model with the ``utils.gpt.GPT`` interface: ``model(x, y)`` returns
    ``(logits, loss)`` with x, y of shape (B, T) (token ids; y is x shifted by one)."""
    x, y = batch
    _, loss = model(x, y)
    return loss, {}


def batch_count(batch: Batch, units: str = "examples") -> int:
    """Examples (first dimension of the inputs) or tokens (all their entries) in a batch."""
    first = batch[0]
    return int(first.numel()) if units == "tokens" else int(first.shape[0])


@torch.no_grad()
def evaluate(model: torch.nn.Module, batches: Any, loss_fn: LossFn, units: str = "examples",
             autocast: str = "off", device: str = "cpu") -> dict[str, float]:
    """Mean loss and metrics over an iterable of batches, **weighted by batch size** (the mean of batch means
    is wrong when the last batch is smaller). Puts the model in eval mode and back to train mode."""
    was_training = model.training
    model.eval()
    totals: dict[str, float] = {}
    count = 0
    try:
        for batch in batches:
            n = batch_count(batch, units)
            with _autocast(autocast, device):
                loss, metrics = loss_fn(model, batch)
            for name, value in {"loss": float(loss), **metrics}.items():
                totals[name] = totals.get(name, 0.0) + float(value) * n
            count += n
    finally:
        model.train(was_training)
    if count == 0:
        raise ValueError("evaluate() received no batches")
    return {name: total / count for name, total in totals.items()}


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


def random_windows(tokens: torch.Tensor, block_size: int, batch_size: int, seed: int = 0) -> Callable[[int], Batch]:
    """``batch_fn`` for language modelling: micro-batch ``i`` is ``batch_size`` windows of ``block_size``
    tokens at random offsets of ``tokens`` (1-D long), drawn from a generator seeded with ``(seed, i)``.
    Returns ``(x, y)``, both (B, T), y shifted by one."""
    if tokens.ndim != 1 or len(tokens) <= block_size + 1:
        raise ValueError(f"need a 1-D token tensor longer than block_size + 1 = {block_size + 1}, "
                         f"got shape {tuple(tokens.shape)}")

    def batch_fn(index: int) -> Batch:
        generator = torch.Generator().manual_seed(seed * 1_000_003 + index)
        starts = torch.randint(len(tokens) - block_size - 1, (batch_size,), generator=generator)
        offsets = torch.arange(block_size)
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


def global_grad_norm(parameters: Any) -> float:
    """The L2 norm of all gradients taken together, sqrt(sum of squared entries), as ``clip_grad_norm_``
    computes it (parameters without a gradient are skipped)."""
    grads = [p.grad.detach().float() for p in parameters if p.grad is not None]
    if not grads:
        return 0.0
    return float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])))


def accumulated_gradients(model: torch.nn.Module, loss_fn: LossFn, micro_batches: list[Batch]) -> dict[str, torch.Tensor]:
    """The gradient of the mean loss over ``micro_batches`` as ``train`` computes it: backward of
    ``loss_i / k`` for each of the k micro-batches, summed in ``.grad``. Returns ``{name: gradient copy}``
    and leaves the model's ``.grad`` zeroed. Equal to one backward over the concatenated batch when the
    micro-batches have the same size and the loss is a per-example mean."""
    model.zero_grad(set_to_none=True)
    k = len(micro_batches)
    for batch in micro_batches:
        loss, _ = loss_fn(model, batch)
        (loss / k).backward()
    grads = {name: p.grad.detach().clone() for name, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return grads


def _autocast(mode: str, device: str):
    if mode == "off" or (mode == "auto" and not perf.bf16_autocast_supported(device)):
        return contextlib.nullcontext()
    if mode not in ("bf16", "auto"):
        raise ValueError(f"autocast must be 'off', 'bf16' or 'auto', got {mode!r}")
    return torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16)


def _due(every: int, step: int, last: bool = False) -> bool:
    return last or (every > 0 and step % every == 0)


def _progress(total: int, initial: int, desc: str, enabled: bool) -> Iterator[int]:
    if not enabled:
        return iter(range(initial, total))
    from tqdm.auto import tqdm

    return tqdm(range(initial, total), initial=initial, total=total, desc=desc, mininterval=1.0, leave=True)


# --------------------------------------------------------------------------------------------- the loop


def open_segment(chapter: str, run: str, *, resume_from: str | Path | None = None, **kwargs: Any):
    """``tb.open_run`` for a training run that may be resumed: a fresh run replaces the directory and starts
    with ``purge_step=0``; a resumed one appends with ``purge_step`` = the checkpoint's step, so every reader
    (``tb.read_scalars``, TensorBoard's Python and Rust loaders) shows each step once. Pass the same
    ``resume_from`` to ``train``."""
    from utils import tb

    if resume_from is None:
        return tb.open_run(chapter, run, on_exists="replace", purge_step=0, **kwargs)
    step = int(ckpt.read_checkpoint(resume_from)["step"])
    kwargs.pop("hparams", None)  # recorded by the first segment
    kwargs.pop("hparam_metrics", None)
    return tb.open_run(chapter, run, on_exists="append", purge_step=step, **kwargs)


def train(model: torch.nn.Module, optimizer: torch.optim.Optimizer, config: TrainConfig, *,
          batch_fn: Callable[[int], Batch], loss_fn: LossFn = classification_loss,
          eval_fn: Callable[[torch.nn.Module], Mapping[str, float]] | None = None, writer: Any = None,
          resume_from: str | Path | None = None, sample_fn: Callable[[torch.nn.Module], str] | None = None,
          peak_gflops: float | None = None, extra_state: Mapping[str, Any] | None = None) -> TrainResult:
    """Train ``model`` for ``config.max_steps`` updates; log through ``writer`` (a ``tb.RunWriter``, or None).

    batch_fn(i) -> batch: the i-th micro-batch (i = step * grad_accum_steps + micro), e.g. ``epoch_batches``
        or ``random_windows``. loss_fn(model, batch) -> (mean loss tensor, {metric: float}).
    eval_fn(model) -> {"loss": ..., ...}: validation (see ``evaluate``); needed for early stopping.
    resume_from: a checkpoint of an earlier segment of this run: model, optimizer, scheduler, RNG state and
        the step are restored and training continues at that step (open the writer with ``open_segment``).
    peak_gflops: denominator of ``perf/mfu`` (``perf.matmul_peak_gflops()``); with ``config.flops_per_unit``.
    extra_state: plain data saved in every checkpoint (e.g. the model's config as a dict).
    """
    if config.grad_accum_steps < 1:
        raise ValueError(f"grad_accum_steps must be >= 1, got {config.grad_accum_steps}")
    if config.checkpoint_every and not config.checkpoint_dir:
        raise ValueError("checkpoint_every needs checkpoint_dir")
    device = config.device
    scheduler = make_scheduler(optimizer, config)
    result = TrainResult()
    bad_evals = 0
    best_state: dict[str, torch.Tensor] | None = None
    if resume_from is not None:
        state = ckpt.load_checkpoint(resume_from, model=model, optimizer=optimizer, scheduler=scheduler)
        result.start_step = int(state["step"])
        saved = state.get("extra", {}).get("train_state", {})
        result.best_val_loss = float(saved.get("best_val_loss", math.inf))
        result.best_step = int(saved.get("best_step", -1))
        bad_evals = int(saved.get("bad_evals", 0))
    autocast_on = not isinstance(_autocast(config.autocast, device), contextlib.nullcontext)
    result.autocast_dtype = "bfloat16" if autocast_on else "float32"
    named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    params = [p for _, p in named]
    matrices = [(name, p) for name, p in named if p.ndim >= 2]
    k = config.grad_accum_steps
    rates: list[float] = []
    mfus: list[float] = []
    started = time.perf_counter()
    model.train()
    step = result.start_step
    bar = _progress(config.max_steps, result.start_step, config.desc, config.progress)
    for step in bar:
        last = step == config.max_steps - 1
        tick = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss_sum, units = 0.0, 0
        metric_sums: dict[str, float] = {}
        for micro in range(k):
            batch = batch_fn(step * k + micro)
            with _autocast(config.autocast, device):
                loss, metrics = loss_fn(model, batch)
            (loss / k).backward()
            loss_sum += float(loss.detach())
            units += batch_count(batch, config.units)
            for name, value in metrics.items():
                metric_sums[name] = metric_sums.get(name, 0.0) + float(value)
        train_loss = loss_sum / k
        if not math.isfinite(train_loss) and config.stop_on_non_finite:
            result.diverged = True
            if writer is not None and getattr(writer, "allow_non_finite", False):
                writer.add_scalar("train/loss", train_loss, step)
            break
        grad_norm = float(torch.nn.utils.clip_grad_norm_(
            params, config.grad_clip if config.grad_clip is not None else math.inf))
        log_now = writer is not None and _due(config.log_every, step, last)
        if writer is not None and config.histogram_every and _due(config.histogram_every, step):
            for name, p in named:
                writer.add_histogram(f"weights/{name}", p.detach(), step)
                if p.grad is not None:
                    writer.add_histogram(f"grads/{name}", p.grad.detach(), step)
        ratio_now = writer is not None and config.update_ratio_every and _due(config.update_ratio_every, step)
        before = [p.detach().clone() for _, p in matrices] if ratio_now else []
        lr = optimizer.param_groups[0]["lr"]
        optimizer.step()
        scheduler.step()
        seconds = time.perf_counter() - tick
        rate = units / max(seconds, 1e-9)
        if ratio_now:
            for (name, p), old in zip(matrices, before, strict=True):
                ratio = torch.linalg.vector_norm(p.detach() - old) / (torch.linalg.vector_norm(old) + 1e-12)
                writer.add_scalar(f"update_ratio/{name}", float(ratio), step)
        if not math.isfinite(train_loss):  # stop_on_non_finite=False: log what the writer accepts
            result.diverged = True
        if log_now:
            writer.add_scalar("train/loss", train_loss, step)
            if config.perplexity:
                writer.add_scalar("train/perplexity", math.exp(min(train_loss, 50.0)), step)
            for name, total in metric_sums.items():
                writer.add_scalar(f"train/{name}", total / k, step)
            writer.add_scalar("train/lr", lr, step)
            if math.isfinite(grad_norm) or getattr(writer, "allow_non_finite", False):
                writer.add_scalar("train/grad_norm", grad_norm, step)
            writer.add_scalar(f"perf/{config.units}_per_s", rate, step)
            if config.flops_per_unit and peak_gflops:
                utilisation = perf.mfu(rate, config.flops_per_unit, peak_gflops)
                writer.add_scalar("perf/mfu", utilisation, step)
                mfus.append(utilisation)
        result.train_steps.append(step)
        result.train_loss.append(train_loss)
        if step > result.start_step:  # the first update of a segment pays one-off costs
            rates.append(rate)
        stop = False
        if eval_fn is not None and _due(config.eval_every, step, last):
            metrics_val = {name: float(v) for name, v in eval_fn(model).items()}
            if config.perplexity:
                metrics_val["perplexity"] = math.exp(min(metrics_val["loss"], 50.0))
            model.train()
            result.eval_steps.append(step)
            result.eval_metrics.append(metrics_val)
            if writer is not None:
                for name, value in metrics_val.items():
                    writer.add_scalar(f"val/{name}", value, step)
            if metrics_val["loss"] < result.best_val_loss - config.early_stopping_min_delta:
                result.best_val_loss, result.best_step, bad_evals = metrics_val["loss"], step, 0
                if config.restore_best:
                    best_state = copy.deepcopy(model.state_dict())
            else:
                bad_evals += 1
                if config.early_stopping_patience is not None and bad_evals >= config.early_stopping_patience:
                    result.stopped_early = stop = True
        # samples at step 0, at the last step, and right before each checkpoint when sample_every equals
        # checkpoint_every (step + 1 a multiple): a sample is then never written after the last checkpoint, so
        # a resume never writes one twice. (Purging on resume covers scalars and histograms, but TensorBoard's
        # EventAccumulator, the reader of utils.tb, does not purge text.)
        sample_due = step == 0 or last or (config.sample_every > 0 and (step + 1) % config.sample_every == 0)
        if sample_fn is not None and writer is not None and sample_due:
            writer.add_text("samples", sample_fn(model), step)
            model.train()
        if bar is not None and hasattr(bar, "set_postfix"):
            bar.set_postfix(loss=f"{train_loss:.3f}", lr=f"{lr:.2e}", refresh=False)
        completed = step + 1
        if config.checkpoint_every and (completed % config.checkpoint_every == 0 or last or stop):
            if writer is not None:
                writer.flush()  # everything up to this step is on disk before the checkpoint says so
            train_state = {"best_val_loss": result.best_val_loss, "best_step": result.best_step,
                           "bad_evals": bad_evals}
            path = ckpt.save_checkpoint(
                ckpt.step_path(config.checkpoint_dir, completed), model=model, step=completed,
                optimizer=optimizer, scheduler=scheduler,
                extra={"train_config": asdict(config), "train_state": train_state, **dict(extra_state or {})})
            result.checkpoints.append(str(path))
            ckpt.prune_checkpoints(config.checkpoint_dir, config.keep_checkpoints)
        result.steps_done = completed
        if stop:
            break
        if config.stop_after is not None and completed >= config.stop_after and not last:
            result.interrupted = True
            break
    if hasattr(bar, "close"):
        bar.close()
    if result.stopped_early and config.restore_best and best_state is not None:
        model.load_state_dict(best_state)
    result.elapsed_s = time.perf_counter() - started
    result.units_per_s = float(np.mean(rates)) if rates else 0.0
    result.mfu = float(np.mean(mfus[1:] if len(mfus) > 1 else mfus)) if mfus else None
    if writer is not None:
        writer.flush()
    return result
