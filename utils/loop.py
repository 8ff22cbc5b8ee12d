"""The book's one training loop: ``train_step`` (one optimizer update) and ``train``
(the loop around it).

``train_step`` is what every update does: accumulate the gradient of the mean loss over
``k`` micro-batches (``loss / k`` backward each, under bf16 autocast when asked), clip
the global gradient norm, step. ``train`` repeats it ``config.max_steps`` times and,
around each update, calls the small pieces of ``utils.hooks``: scalars, histograms,
update ratios, per-layer gradient norms and ReLUs' zeros (``utils.layer_stats``),
evaluation and early stopping, text samples, checkpoints. One rule
decides when each happens (``hooks.due``: at step 0, every N updates, and at the last
one). Steps are 0-based update numbers: what update ``s`` measured, and the evaluation
after it, are logged at step ``s``.

The same loop trains data-parallel (``utils.distributed``): every rank calls ``train``
with its own rows (``batch_fn``), a ``Ranks`` that says how to average a number over the
ranks and how to wait for them, and a writer on rank 0 only; ``after_backward`` is where
gradients can be averaged by hand. ``after_update`` is the caller's own work after each
update (and its way to end the run early, as ``interrupt_after`` does).

What it logs, tag by tag, and when: ``hooks.TAGS``.

Resuming without a doubled or missing point in any reader: open each run segment with
``open_segment`` (``purge_step`` 0 for a fresh run, the checkpoint's step on resume);
the writer is flushed before each checkpoint; a resumed run rewrites, deterministically,
every step after its checkpoint, because batches come from ``batch_fn(i)``, a pure
function of the micro-batch index ``i``.

The same code runs on a GPU: ``TrainConfig(device="cuda")`` (or ``"auto"``) moves the
model and every batch there, and ``autocast="auto"`` then computes in bf16 where the
device supports it.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from utils import checkpoint as ckpt
from utils import hooks, perf, validate
from utils.batches import Batch, batch_count, to_device
from utils.evaluation import LossFn, classification_loss
from utils.hooks import ONE_PROCESS, Ranks
from utils.layer_stats import LayerProbe
from utils.optim import make_scheduler


@dataclass
class TrainConfig:
    """Every setting of ``train``. Learning rates in the optimizer's units; ``*_every``
    in updates (0 = never; see ``hooks.due``)."""

    max_steps: int
    # the peak learning rate: train sets the optimizer's groups from it (set_peak_lr)
    lr: float = 1e-3
    # the cosine's floor; min_lr = lr with warmup_steps = 0: a constant rate
    min_lr: float = 0.0
    warmup_steps: int = 0
    # max global L2 norm; None = no clipping (the norm is still logged)
    grad_clip: float | None = 1.0
    grad_accum_steps: int = 1
    device: str = "cpu"  # "cpu", "cuda", "cuda:1", "mps", or "auto" (the best one present)
    autocast: str = "off"  # "off", "bf16", or "auto" (bf16 where the device computes it natively)
    log_every: int = 1
    eval_every: int = 0
    histogram_every: int = 0
    update_ratio_every: int = 0
    # per-layer gradient norms and ReLUs' share of zeros (utils.layer_stats)
    layer_stats_every: int = 0
    sample_every: int = 0
    checkpoint_every: int = 0
    checkpoint_dir: str | None = None
    keep_checkpoints: int = 2
    # evaluations without improvement before stopping
    early_stopping_patience: int | None = None
    # when stopped early, reload the weights of the best evaluation
    restore_best: bool = False
    units: str = "examples"  # what throughput counts: "examples" or "tokens"
    flops_per_unit: float | None = None  # training FLOPs per unit, for perf/mfu
    # also log exp(loss) as train/perplexity and val/perplexity
    perplexity: bool = False
    progress: bool = True  # a tqdm bar
    desc: str = "train"

    def __post_init__(self) -> None:
        for name, minimum in _WHOLE_MINIMUMS.items():
            validate.check_whole(name, getattr(self, name), minimum,
                           optional=name == "early_stopping_patience")
        validate.check_number("lr", self.lr, 0.0)
        validate.check_number("min_lr", self.min_lr, 0.0)
        validate.check_number("grad_clip", self.grad_clip, 0.0, above=True, optional=True)
        validate.check_choice("autocast", self.autocast, ("off", "bf16", "auto"))
        validate.check_choice("units", self.units, ("examples", "tokens"))
        if self.min_lr > self.lr:
            raise ValueError(f"min_lr={self.min_lr:g} is above lr={self.lr:g}: the cosine would climb instead "
                             "of decaying; give a floor min_lr <= lr (min_lr = lr: a constant rate)")
        if self.warmup_steps > self.max_steps:
            raise ValueError(f"warmup_steps={self.warmup_steps} is more than max_steps={self.max_steps}: the "
                             "warm-up must end by the last update; lower warmup_steps or raise max_steps")
        if self.checkpoint_every and not self.checkpoint_dir:
            raise ValueError(f"checkpoint_every={self.checkpoint_every} needs checkpoint_dir: say where the "
                             "checkpoints go")
        _check_device_name(self.device)


#: The whole-number settings of ``TrainConfig`` and their smallest allowed value (0 = never, for ``*_every``).
_WHOLE_MINIMUMS = {"max_steps": 1, "warmup_steps": 0, "grad_accum_steps": 1, "log_every": 0, "eval_every": 0,
                   "histogram_every": 0, "update_ratio_every": 0, "layer_stats_every": 0, "sample_every": 0,
                   "checkpoint_every": 0, "keep_checkpoints": 1, "early_stopping_patience": 1}


def _check_device_name(name: str) -> None:
    """A name ``torch.device`` parses, or "auto"; whether the device is present is
    checked when training."""
    if name == "auto":
        return
    try:
        torch.device(name)
    except (RuntimeError, TypeError):
        raise ValueError(f"device={name!r} is not a device: use 'cpu', 'cuda', 'cuda:1', 'mps' or 'auto'") from None


@dataclass
class TrainResult:
    """What ``train`` did. Lists hold one entry per update / per evaluation of this
    segment."""

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
    # mean throughput, the first update of the segment left out (one-off costs)
    units_per_s: float = 0.0
    step_rates: list[float] = field(default_factory=list, repr=False)
    mfu: float | None = None
    device: str = "cpu"
    autocast_dtype: str = "float32"

    def val(self, name: str = "loss") -> list[float]:
        """One validation metric, in evaluation order."""
        return [m[name] for m in self.eval_metrics]


@dataclass
class StepStats:
    """What one update measured: mean loss and metrics over its micro-batches, gradient
    norm before clipping (NaN when the loss was not finite and no update was made)."""

    loss: float
    metrics: dict[str, float]
    grad_norm: float = math.nan

    @property
    def finite(self) -> bool:
        return math.isfinite(self.loss) and math.isfinite(self.grad_norm)


#: ``after_update(step, stats)``: called after each update (its logs, evaluation and checkpoint done) with
#: this rank's own ``StepStats``; returning True ends the run there, as if it had been interrupted.
AfterUpdate = Callable[[int, StepStats], "bool | None"]


def interrupt_after(updates: int) -> AfterUpdate:
    """``after_update`` that ends the run after ``updates`` updates, as a lost machine
    would (to demonstrate resuming: the checkpoints saved so far are all that is left).
    """
    return lambda step, stats: step + 1 >= updates


# ---------------------------------------------------------------------------------------------
# one update


def accumulate_gradients(model: torch.nn.Module, loss_fn: LossFn,
                         micro_batches: list[Batch],
                         autocast: Callable[[], Any] = contextlib.nullcontext,
                         no_sync: Callable[[], Any] = contextlib.nullcontext,
                         ) -> StepStats:
    """Add the gradient of the mean loss over ``micro_batches`` to ``.grad``: backward
    of ``loss_i / k`` for each of the k micro-batches. Equal to one backward over the
    concatenated batch when the micro-batches have the same size and the loss is a
    per-example mean. ``no_sync``: DDP's ``no_sync``, entered for all micro-batches
    but the last, so that the ranks all-reduce once per update, not k times."""
    k = len(micro_batches)
    losses, sums = [], {}
    for i, batch in enumerate(micro_batches):
        with no_sync() if i < k - 1 else contextlib.nullcontext():
            with autocast():
                loss, metrics = loss_fn(model, batch)
            # dividing here makes the summed .grad the gradient of the mean
            (loss / k).backward()
        losses.append(loss.detach().float())
        for name, value in metrics.items():
            sums[name] = sums.get(name, 0.0) + float(value)
    mean_loss = float(torch.stack(losses).mean())
    return StepStats(loss=mean_loss, metrics={n: v / k for n, v in sums.items()})


def train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer,
               micro_batches: list[Batch], loss_fn: LossFn, *,
               grad_clip: float | None = None,
               autocast: Callable[[], Any] = contextlib.nullcontext,
               after_backward: Callable[[torch.nn.Module], None] | None = None,
               no_sync: Callable[[], Any] = contextlib.nullcontext,
               ) -> StepStats:
    """One optimizer update from ``micro_batches`` (already on the model's device).
    ``after_backward(model)`` runs once the gradients are complete, before clipping
    (``utils.distributed.average_gradients``: the all-reduce written by hand);
    ``no_sync``: see ``accumulate_gradients``. A non-finite loss or gradient norm
    makes no update: the weights stay as they were and ``StepStats.finite`` is False."""
    # set_to_none: .grad is None, not a tensor of zeros
    optimizer.zero_grad(set_to_none=True)
    stats = accumulate_gradients(model, loss_fn, micro_batches, autocast, no_sync)
    if after_backward is not None:
        # before any early return: on several ranks it is a collective
        after_backward(model)
    if not math.isfinite(stats.loss):
        return stats
    params = [p for group in optimizer.param_groups for p in group["params"]]
    limit = grad_clip if grad_clip is not None else math.inf
    # the norm before clipping
    stats.grad_norm = float(torch.nn.utils.clip_grad_norm_(params, limit))
    if stats.finite:
        optimizer.step()
    return stats


def accumulated_gradients(model: torch.nn.Module, loss_fn: LossFn,
                          micro_batches: list[Batch]) -> dict[str, torch.Tensor]:
    """The gradient ``train_step`` would use, as ``{name: copy}``; leaves the model's
    ``.grad`` cleared."""
    model.zero_grad(set_to_none=True)
    accumulate_gradients(model, loss_fn, micro_batches)
    grads = {name: p.grad.detach().clone() for name, p in model.named_parameters()
             if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return grads


# ---------------------------------------------------------------------------------------------
# devices


def resolve_device(name: str) -> torch.device:
    """``"auto"``: CUDA if present, else Apple's MPS, else the CPU; any other name as
    given, checked."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        return torch.device("mps" if mps is not None and mps.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for, but torch sees no CUDA GPU: use device='cpu' or 'auto'")
    return device


def autocast_context(mode: str, device: torch.device | str) -> Callable[[], Any]:
    """A factory of the context each forward pass runs in, decided once: bf16 autocast
    for ``"bf16"``, and for ``"auto"`` where ``perf.bf16_autocast_supported`` says the
    device computes bf16 natively."""
    if mode not in ("off", "bf16", "auto"):
        raise ValueError(f"autocast must be 'off', 'bf16' or 'auto', got {mode!r}")
    device = torch.device(device)
    if mode == "off" or (mode == "auto" and not perf.bf16_autocast_supported(str(device))):
        return contextlib.nullcontext
    return lambda: torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def compute_dtype(autocast: Callable[[], Any]) -> torch.dtype:
    """The dtype the matmuls of a run compute in, given its ``autocast_context``."""
    return torch.float32 if autocast is contextlib.nullcontext else torch.bfloat16


# ---------------------------------------------------------------------------------------------
# the loop


def train(model: torch.nn.Module, optimizer: torch.optim.Optimizer, config: TrainConfig,
          *,
          batch_fn: Callable[[int], Batch], loss_fn: LossFn = classification_loss,
          eval_fn: hooks.EvalFn | None = None, writer: Any = None,
          resume_from: str | Path | None = None,
          sample_fn: Callable[[torch.nn.Module], str] | None = None,
          peak_gflops: float | None = None,
          extra_state: Mapping[str, Any] | None = None,
          after_backward: Callable[[torch.nn.Module], None] | None = None,
          after_update: AfterUpdate | None = None,
          ranks: Ranks = ONE_PROCESS,
          no_sync: Callable[[], Any] = contextlib.nullcontext) -> TrainResult:
    """Train ``model`` for ``config.max_steps`` updates, logging through ``writer`` (a
    ``tb.RunWriter``).

    batch_fn(i): the i-th micro-batch (i = step * grad_accum_steps + micro), e.g.
    ``batches.epoch_batches``. loss_fn(model, batch) -> (mean loss, {metric: float}).
    eval_fn(model), or eval_fn(model, step) when it has a parameter named ``step`` ->
    {"loss": ..., ...}. The optimizer's peak learning rate is ``config.lr``
    (``set_peak_lr``). resume_from: a checkpoint of an earlier segment (open the writer
    with ``open_segment``). peak_gflops: the denominator of ``perf/mfu``. extra_state:
    plain data saved in every checkpoint. after_backward and no_sync: see
    ``train_step``; after_update: ``AfterUpdate``; ranks: ``Ranks``.
    """
    run = _prepare(model, optimizer, config, resume_from)
    k, last, due = config.grad_accum_steps, config.max_steps - 1, hooks.due
    bar = _progress(config, run.result.start_step)
    for step in bar:
        tick = time.perf_counter()
        # k x (B, ...)
        micro = [to_device(batch_fn(step * k + i), run.device) for i in range(k)]
        ratio_due = writer and due(config.update_ratio_every, step, last)
        before = hooks.snapshot_matrices(model) if ratio_due else None
        lrs = hooks.group_lrs(optimizer)  # the rates this update uses
        probe = (LayerProbe(model, then=after_backward)
                 if writer and due(config.layer_stats_every, step, last) else None)
        with probe or contextlib.nullcontext():
            own = train_step(
                model, optimizer, micro, loss_fn, grad_clip=config.grad_clip,
                autocast=run.autocast, no_sync=no_sync,
                after_backward=probe.after_backward if probe else after_backward)
        # what this rank's rows gave -> what the whole batch gave
        stats = hooks.over_ranks(own, ranks)
        # divergence, handled here only: log what the writer accepts, stop
        if not stats.finite:
            layers = probe.scalars() if probe else None  # which layer blew up
            hooks.log_divergence(writer, step, stats, layers)
            run.result.diverged = True
            break
        run.scheduler.step()
        units = ranks.size * sum(batch_count(b, config.units) for b in micro)
        rate = units / (time.perf_counter() - tick)
        _record(run.result, step, stats.loss, rate)
        if writer:
            hooks.log_update(writer, model, config, step, stats, lrs, rate, before,
                             peak_gflops)
        if probe is not None:
            writer.add_step_scalars(probe.scalars(), step)
        stop = False
        if eval_fn is not None and due(config.eval_every, step, last):
            metrics = hooks.evaluate_and_log(eval_fn, model, step, writer,
                                             config.perplexity)
            run.result.eval_steps.append(step)
            run.result.eval_metrics.append(metrics)
            stop = run.stopping.update(metrics["loss"], step, model)
            run.result.stopped_early = stop
        if writer and sample_fn is not None and due(config.sample_every, step, last):
            hooks.log_sample(writer, sample_fn, model, step)
        if config.checkpoint_every and (due(config.checkpoint_every, step, last)
                                        or stop):
            saved = hooks.save_checkpoint(config, step, model=model,
                                          optimizer=optimizer, scheduler=run.scheduler,
                                          stopping=run.stopping, writer=writer,
                                          extra_state=extra_state, ranks=ranks)
            run.result.checkpoints += [str(saved)] if saved else []
        run.result.steps_done = step + 1
        asked = bool(after_update and after_update(step, own))
        run.result.interrupted = asked and step < last
        if stop or run.result.interrupted:
            break
    getattr(bar, "close", lambda: None)()
    return _finish(run, model, config, writer, peak_gflops)


def set_peak_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Scale every parameter group's learning rate so that the highest is ``lr``, the
    run's peak: the peak is given once, in ``TrainConfig.lr``, and the optimizer's own
    rates only say how its groups compare (a body built at a tenth of the head's rate
    trains at a tenth of the peak)."""
    top = max(float(group["lr"]) for group in optimizer.param_groups)
    for group in optimizer.param_groups:
        group["lr"] = lr * float(group["lr"]) / top if top > 0 else lr
        group.pop("initial_lr", None)  # an earlier scheduler's record of the old peak


# ---------------------------------------------------------------------------------------------
# its set-up


@dataclass
class _Run:
    device: torch.device
    autocast: Callable[[], Any]
    scheduler: Any
    stopping: hooks.EarlyStopping
    result: TrainResult
    started: float


def _prepare(model: torch.nn.Module, optimizer: torch.optim.Optimizer,
             config: TrainConfig,
             resume_from: str | Path | None) -> _Run:
    """Move the model to its device, set the peak learning rate and build the scheduler,
    restore a checkpoint (the config checked itself)."""
    device = resolve_device(config.device)
    model.to(device)  # in place: the optimizer keeps the same parameter objects
    autocast = autocast_context(config.autocast, device)
    set_peak_lr(optimizer, config.lr)
    scheduler = make_scheduler(optimizer, lr=config.lr, min_lr=config.min_lr,
                               warmup_steps=config.warmup_steps,
                               total_steps=config.max_steps)
    stopping = hooks.EarlyStopping(config.early_stopping_patience, config.restore_best)
    dtype = str(compute_dtype(autocast)).removeprefix("torch.")
    result = TrainResult(device=str(device), autocast_dtype=dtype)
    if resume_from is not None:
        state = ckpt.load_checkpoint(resume_from, model=model, optimizer=optimizer,
                                     scheduler=scheduler)
        result.start_step = result.steps_done = int(state["step"])
        stopping.restore(state.get("extra", {}).get("train_state", {}))
    model.train()
    return _Run(device, autocast, scheduler, stopping, result, time.perf_counter())


def _record(result: TrainResult, step: int, loss: float, rate: float) -> None:
    result.train_steps.append(step)
    result.train_loss.append(loss)
    if step > result.start_step:  # the first update of a segment pays one-off costs
        result.step_rates.append(rate)


def _finish(run: _Run, model: torch.nn.Module, config: TrainConfig, writer: Any,
            peak_gflops: float | None) -> TrainResult:
    result = run.result
    stopping = run.stopping
    if result.stopped_early and config.restore_best and stopping.best_state is not None:
        model.load_state_dict(stopping.best_state)
    result.best_val_loss, result.best_step = stopping.best_loss, stopping.best_step
    result.elapsed_s = time.perf_counter() - run.started
    rates = result.step_rates
    result.units_per_s = sum(rates) / len(rates) if rates else 0.0
    if config.flops_per_unit and peak_gflops and result.units_per_s:
        result.mfu = perf.mfu(result.units_per_s, config.flops_per_unit, peak_gflops)
    if writer is not None:
        writer.flush()
    return result


def _progress(config: TrainConfig, start: int):
    steps = range(start, config.max_steps)
    if not config.progress:
        return steps
    from tqdm.auto import tqdm

    return tqdm(steps, initial=start, total=config.max_steps, desc=config.desc, mininterval=1.0)


def open_segment(
    chapter: str, run: str, *, resume_from: str | Path | None = None, **kwargs: Any
):
    """``tb.open_run`` for a training run that may be resumed: a fresh run replaces the
    directory and starts with ``purge_step=0`` (TensorBoard's Python loaders treat the
    first start marker of a run as its start, so the first segment must write one); a
    resumed one appends with ``purge_step`` = the checkpoint's step, so that every
    loader shows each step once (the Rust loader drops the steps >= s when step s
    comes again). Pass the same ``resume_from`` to ``train``."""
    from utils import tb

    if resume_from is None:
        return tb.open_run(chapter, run, on_exists="replace", purge_step=0, **kwargs)
    step = int(ckpt.read_checkpoint(resume_from)["step"])
    kwargs.pop("hparams", None)  # recorded by the first segment
    return tb.open_run(chapter, run, on_exists="append", purge_step=step, **kwargs)
