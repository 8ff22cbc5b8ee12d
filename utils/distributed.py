"""Data-parallel training of the book's GPT with ``torch.distributed``: the script chapter 9 launches.

Every rank (process) holds the whole model, takes its own rows of each global batch, computes the gradient
of its rows, and an all-reduce averages the gradients, so every rank makes the same update and the weights
stay identical. With equal shards and a per-token mean loss, the average of the ranks' gradients *is* the
gradient of the whole batch: two ranks with half the batch each end with the weights of one process with the
whole batch (to float rounding). Three ways to get that all-reduce, chosen with ``--mode``:

- ``ddp``: ``torch.nn.parallel.DistributedDataParallel``, which all-reduces gradients in buckets while the
  backward pass still runs;
- ``by-hand``: a plain backward, then ``average_gradients`` (one ``all_reduce`` per parameter, divided by the
  world size), then clip and step: the same arithmetic, written out;
- ``fsdp``: ``torch.distributed.fsdp.fully_shard`` (ZeRO-3): each rank keeps only its shard of every
  parameter, gradient and AdamW state, and gathers the full weights layer by layer when it needs them.

Each rank trains with the book's one loop, ``utils.loop.train``, given what data parallelism changes: its
own rows (``shard_rows``), the loss logged as the mean over the ranks, rank 0 alone writing the log and the
checkpoints while the others wait (``group_ranks``). ``--every-rank-run`` also makes *every* rank log its own
loss into one run, the mistake the chapter shows. Every rank resumes from the same file, which rank 0 picks.

Started as torchrun starts it (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``... in the environment)::

    python -m torch.distributed.run --nproc_per_node 2 --rdzv-backend c10d --rdzv-endpoint 127.0.0.1:0 \\
        --local-addr 127.0.0.1 -m utils.distributed --steps 20 --log-run ch09/ddp

(``utils.torchrun`` holds the flags and launches it so). Without those variables it runs as one process
(world size 1), for the reference run in a notebook. ``--device cuda`` puts each rank on GPU ``LOCAL_RANK``
(``backend_for``: nccl for the gradients).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from utils import checkpoint as ckpt
from utils import loop, validate
from utils.batches import random_windows
from utils.evaluation import LossFn, lm_loss
from utils.gpt import GPT, GPTConfig
from utils.optim import make_adamw

MODES = ("ddp", "by-hand", "fsdp")


def _small_model() -> GPTConfig:
    return GPTConfig(vocab_size=65, block_size=32, n_layer=2, n_head=2, n_embd=64, dropout=0.0)


def _short_training() -> loop.TrainConfig:
    return loop.TrainConfig(max_steps=20, lr=3e-3, min_lr=3e-4, warmup_steps=2, grad_clip=1.0, units="tokens",
                            progress=False, desc="rank")


@dataclass
class DistConfig:
    """One data-parallel run: the model (``GPTConfig``: 2 layers, 2 heads, 64-dim, context 32, no dropout,
    which would draw other masks on every rank), the loop (``TrainConfig``: 20 updates, peak lr 3e-3 after 2
    warm-up steps, cosine to 3e-4; its ``device`` is ``"cpu"``, or ``"cuda"``: each rank on GPU
    ``LOCAL_RANK``), and what data parallelism adds. ``global_batch`` windows of ``model.block_size``
    tokens per update, split evenly over the ranks; ``log_run`` is ``"<chapter>/<run>"`` for
    ``tb.open_run`` (rank 0 only), ``""`` for no log; ``every_rank_run`` the run every rank writes to.
    ``rank_seeds``: rank r builds its model from ``seed + r`` (the batches still come from ``seed``), so the
    ranks start from different weights: DDP's constructor broadcasts rank 0's, the by-hand mode does not."""

    model: GPTConfig = field(default_factory=_small_model)
    training: loop.TrainConfig = field(default_factory=_short_training)
    global_batch: int = 16
    seed: int = 0
    rank_seeds: bool = False
    mode: str = "ddp"
    log_run: str = ""
    every_rank_run: str = ""
    resume: bool = False
    flush_every_step: bool = False  # put each step on disk at once (for a run that will be killed)
    weights_out: str = ""
    summary_out: str = ""
    sharded_out: str = ""  # fsdp: a folder for the sharded checkpoint of the end (checkpoint.save_sharded)

    def __post_init__(self) -> None:
        if not isinstance(self.model, GPTConfig) or not isinstance(self.training, loop.TrainConfig):
            raise ValueError("DistConfig takes model=GPTConfig(...) and training=TrainConfig(...), got "
                             f"{type(self.model).__name__} and {type(self.training).__name__}")
        validate.check_whole("global_batch", self.global_batch, 1)
        validate.check_whole("seed", self.seed, 0)
        validate.check_choice("mode", self.mode, MODES)
        validate.check_choice("device", self.training.device, ("cpu", "cuda"))
        for name in ("log_run", "every_rank_run"):
            value = getattr(self, name)
            if value and (value.count("/") != 1 or not all(value.split("/"))):
                raise ValueError(f"{name}={value!r} is not allowed: give '<chapter>/<run>', e.g. 'ch09/ddp' "
                                 "(or '' for no log)")
        if self.mode == "fsdp" and (self.training.checkpoint_every or self.resume):
            raise ValueError("this script saves whole-model checkpoints; an FSDP run would need sharded ones "
                             "(torch.distributed.checkpoint): run mode='fsdp' without checkpoint_every and resume")
        if self.sharded_out and self.mode != "fsdp":
            raise ValueError("sharded_out saves the shards of an FSDP run: use mode='fsdp', or weights_out "
                             "for the whole model")
        if self.resume and not self.training.checkpoint_dir:
            raise ValueError("resume needs checkpoint_dir: say where the checkpoints to resume from are")

    def with_training(self, **changes: Any) -> DistConfig:
        """A copy with some ``TrainConfig`` fields changed, e.g. ``config.with_training(max_steps=12)``."""
        return dataclasses.replace(self, training=dataclasses.replace(self.training, **changes))


# --------------------------------------------------------------------------------------------- the pieces


def world() -> tuple[int, int]:
    """``(rank, world_size)`` of this process: from the process group, else ``(0, 1)``."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def shard_rows(batch: tuple[torch.Tensor, ...], rank: int, world_size: int) -> tuple[torch.Tensor, ...]:
    """This rank's contiguous rows of a global batch: rows ``rank * b`` to ``(rank + 1) * b`` with
    ``b = B / world_size``. Equal shards keep "mean of the ranks' gradients = gradient of the batch" exact."""
    rows = batch[0].shape[0]
    if rows % world_size:
        raise ValueError(f"a global batch of {rows} rows does not split evenly over {world_size} ranks: "
                         "choose a global batch that is a multiple of the number of processes")
    size = rows // world_size
    return tuple(t[rank * size:(rank + 1) * size] for t in batch)


def average_gradients(model: torch.nn.Module) -> None:
    """Replace each gradient by its mean over all ranks: ``all_reduce`` (a sum, in place on every rank),
    then divide by the world size. This is what DDP does, in buckets overlapped with the backward pass."""
    _, world_size = world()
    if world_size == 1:
        return  # one process: its gradient is already the batch's
    for parameter in model.parameters():
        if parameter.grad is not None:
            dist.all_reduce(parameter.grad, op=dist.ReduceOp.SUM)
            parameter.grad /= world_size


def mean_over_ranks(value: float) -> float:
    """The mean of a number over all ranks (every rank gets it): what rank 0 logs. The number travels as a
    CPU tensor, carried by the process group's CPU backend (gloo, also on GPUs: ``backend_for``)."""
    if not (dist.is_available() and dist.is_initialized()):
        return float(value)
    total = torch.tensor([float(value)], dtype=torch.float64)
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return float(total) / dist.get_world_size()


def group_ranks() -> loop.Ranks:
    """This process among the ranks, as ``loop.train`` needs it: its rank and their number, the mean over
    ranks (``mean_over_ranks``), the barrier. Without a process group: one process."""
    rank, world_size = world()
    if world_size == 1:
        return loop.ONE_PROCESS
    return loop.Ranks(rank=rank, size=world_size, mean=mean_over_ranks, barrier=dist.barrier)


def loss_through(forward: torch.nn.Module) -> LossFn:
    """``lm_loss`` computed by ``forward`` whatever model ``loop.train`` passes: the loop holds the plain
    model (its checkpoints and logs name parameters without DDP's ``module.``), the forward pass goes
    through DDP's wrapper, whose backward then all-reduces the gradients."""
    return lambda model, batch: lm_loss(forward, batch)


# --------------------------------------------------------------------------------------------- set-up


def backend_for(device: str) -> str:
    """The process group's backends: gloo on the CPU; with ``device="cuda"`` nccl for CUDA tensors (the
    gradients) and gloo for CPU ones (the loss ``mean_over_ranks`` reduces, the objects rank 0 broadcasts),
    which nccl alone cannot carry ("No backend type associated with device type cpu")."""
    return "cpu:gloo,cuda:nccl" if device == "cuda" else "gloo"


def rank_device(config: DistConfig) -> torch.device:
    """The CPU, or this rank's own GPU: ``cuda:LOCAL_RANK`` (one process per GPU of a machine)."""
    if config.training.device == "cpu":
        return torch.device("cpu")
    device = loop.resolve_device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}")  # says so if no GPU
    torch.cuda.set_device(device)
    return device


def build_replica(config: DistConfig, vocab_size: int, device: torch.device) -> tuple[GPT, torch.nn.Module]:
    """This rank's copy of the model, on ``device``: the same on every rank (the same seed), unless
    ``rank_seeds``; and what computes its forward pass: DDP's wrapper (whose constructor broadcasts rank 0's
    parameters and buffers to every rank), or the model itself (FSDP shards it in place, block by block)."""
    if config.model.vocab_size != vocab_size:
        raise ValueError(f"model.vocab_size is {config.model.vocab_size} but the tokenizer has {vocab_size} "
                         f"tokens: set GPTConfig(vocab_size={vocab_size})")
    torch.manual_seed(config.seed + (world()[0] if config.rank_seeds else 0))
    model = GPT(config.model).to(device)
    if config.mode == "ddp" and world()[1] > 1:
        ids = [device.index] if device.type == "cuda" else None
        return model, torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
    if config.mode == "fsdp":
        from torch.distributed.fsdp import fully_shard

        for block in model.transformer.h:
            fully_shard(block)  # each block's weights are gathered only while it computes
        fully_shard(model)
    return model, model


def _resume_point(config: DistConfig) -> str | None:
    """Rank 0 picks the newest readable checkpoint and tells every rank, so that all load the same file; none
    is an error (starting afresh would replace the run's log)."""
    if not config.resume:
        return None
    rank, world_size = world()
    folder = config.training.checkpoint_dir
    choice = [str(ckpt.latest_checkpoint(folder) or "") if rank == 0 else ""]
    if world_size > 1:
        dist.broadcast_object_list(choice, src=0)
    if not choice[0]:
        raise ckpt.CheckpointNotFoundError(f"resume: no readable checkpoint in {folder}: run without --resume "
                                           "to start afresh")
    return choice[0]


_REMEDY = ("Resume with the settings it was written with, or start afresh: without --resume, or with another "
           "--checkpoint-dir.")


def _check_resume(config: DistConfig, path: str, model: torch.nn.Module) -> None:
    """Refuse a checkpoint of another model (before any log is opened: nothing is changed)."""
    state = ckpt.read_checkpoint(path)
    saved = state.get("extra", {}).get("distributed")
    if saved is not None:
        ckpt.check_same(path, "model", saved.get("model"), asdict(config.model), _REMEDY)
    ckpt.check_model_fits(path, state, model, _REMEDY)


def _writers(config: DistConfig, stack: contextlib.ExitStack, resume_from: str | None):
    """Rank 0's writer on ``config.log_run`` (``None`` elsewhere), and, for the demonstration, every rank's
    writer on ``config.every_rank_run`` (rank 0 creates the run before the others append to it)."""
    from utils import tb  # only where a rank logs: the import costs seconds (pandas, tensorboardX)

    rank, world_size = world()
    writer = every = None
    if rank == 0 and config.log_run:
        chapter, name = config.log_run.split("/")
        writer = stack.enter_context(loop.open_segment(chapter, name, resume_from=resume_from))
    if config.every_rank_run:
        chapter, name = config.every_rank_run.split("/")
        if rank == 0:
            every = stack.enter_context(tb.open_run(chapter, name, on_exists="replace"))
        if world_size > 1:
            dist.barrier()
        if rank > 0:
            every = stack.enter_context(tb.open_run(chapter, name, on_exists="append"))
    return writer, every


def _after_update(config: DistConfig, writer: Any, every: Any, own_losses: dict) -> loop.AfterUpdate:
    """After each update: every rank notes the loss of its own rows in ``own_losses`` and logs it into
    ``every`` (the mistake); rank 0 puts its log on disk when asked (``flush_every_step``) and reports the
    step (the line a kill waits for)."""
    rank = world()[0]

    def after_update(step: int, own: loop.StepStats) -> None:
        own_losses[str(step)] = own.loss
        if every is not None:
            every.add_scalar("train/loss", own.loss, step)
        if writer is not None and config.flush_every_step:
            writer.flush()
        if rank == 0:
            print(f"step {step} done", flush=True)

    return after_update


# --------------------------------------------------------------------------------------------- the run


def train_distributed(config: DistConfig) -> dict[str, Any]:
    """Train as this rank with ``utils.loop.train``; return (on every rank) a summary: losses (the mean over
    the ranks), throughput, what each rank holds."""
    from utils.pretrain import shakespeare_data

    rank, world_size = world()
    tokenizer, train_ids, _ = shakespeare_data()
    device = rank_device(config)
    model, forward = build_replica(config, tokenizer.vocab_size, device)
    optimizer = make_adamw(model, config.training.lr, weight_decay=0.1)
    resume_from = _resume_point(config)
    if resume_from is not None:  # every rank checks the file rank 0 picked, before any log is opened
        _check_resume(config, resume_from, model)
    global_batch = random_windows(train_ids, config.model.block_size, config.global_batch, config.seed)

    def own_rows(index: int) -> tuple[torch.Tensor, ...]:
        return shard_rows(global_batch(index), rank, world_size)

    own_losses: dict[str, float] = {}
    with contextlib.ExitStack() as stack:
        writer, every = _writers(config, stack, resume_from)
        result = loop.train(
            model, optimizer, dataclasses.replace(config.training, device=str(device)), batch_fn=own_rows,
            loss_fn=loss_through(forward), writer=writer, resume_from=resume_from,
            extra_state={"distributed": asdict(config)},
            after_backward=average_gradients if config.mode == "by-hand" else None,
            after_update=_after_update(config, writer, every, own_losses), ranks=group_ranks(),
            no_sync=getattr(forward, "no_sync", contextlib.nullcontext))  # DDP: all-reduce once per update
    if config.sharded_out:
        ckpt.save_sharded(model, optimizer, config.sharded_out)
    return _summary(config, model, optimizer, result, own_losses)


def _local_count(tensors) -> int:
    """Values this rank stores: a sharded tensor (DTensor) counts its local shard only."""
    return sum((t.to_local() if hasattr(t, "to_local") else t).numel() for t in tensors)


def _summary(config: DistConfig, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
             result: loop.TrainResult, own_losses: dict[str, float]) -> dict[str, Any]:
    rank, world_size = world()
    states = [v for s in optimizer.state.values() for v in s.values() if torch.is_tensor(v) and v.ndim > 0]
    held = [(_local_count(model.parameters()), _local_count(states), os.getpid(), own_losses)]
    if world_size > 1:
        gathered: list[Any] = [None] * world_size
        dist.all_gather_object(gathered, held[0])
        held = gathered
    full = {name: (t.full_tensor() if hasattr(t, "full_tensor") else t).detach().cpu().clone()
            for name, t in model.state_dict().items()}  # a collective under FSDP
    if rank == 0 and config.weights_out:
        ckpt.atomic_torch_save(full, config.weights_out)
    rates = result.step_rates  # the first update of the run left out: it pays one-off costs
    losses = zip(result.train_steps, result.train_loss, strict=True)
    return {"mode": config.mode, "world_size": world_size, "start_step": result.start_step,
            "steps": config.training.max_steps, "seconds": result.elapsed_s,
            "losses": {str(step): loss for step, loss in losses},
            "tokens_per_s": float(torch.tensor(rates).median()) if rates else 0.0,
            "parameters": sum(t.numel() for t in full.values() if t is not full["lm_head.weight"]),
            "parameters_per_rank": [h[0] for h in held], "optimizer_values_per_rank": [h[1] for h in held],
            "pid_per_rank": [h[2] for h in held],  # which process wrote which event file
            "own_losses_per_rank": [h[3] for h in held]}  # each rank's loss of its own rows


# --------------------------------------------------------------------------------------------- the script


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m utils.distributed``: this rank's run, set by flags (``utils.torchrun.parse_arguments``)."""
    from utils.torchrun import parse_arguments  # that module builds on this one

    config, backend = parse_arguments(argv)
    launched = "WORLD_SIZE" in os.environ  # torchrun sets RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT
    if launched:
        dist.init_process_group(backend)
    try:
        summary = train_distributed(config)
        if world()[0] == 0 and config.summary_out:
            Path(config.summary_out).parent.mkdir(parents=True, exist_ok=True)
            Path(config.summary_out).write_text(json.dumps(summary, indent=1))
    except ckpt.CheckpointError as exc:  # a file handed in that cannot be resumed: no traceback, exit 2
        print(f"python -m utils.distributed: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    finally:
        if launched:
            dist.destroy_process_group()


if __name__ == "__main__":
    main()
