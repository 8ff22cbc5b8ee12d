"""Data-parallel training of the book's GPT with ``torch.distributed``: the script chapter 9 launches.

Every rank (process) holds the whole model, takes its own rows of each global batch, computes the gradient
of its rows, and an all-reduce averages the gradients, so every rank makes the same update and the weights
stay identical. With equal shards and a per-token mean loss, the average of the ranks' gradients *is* the
gradient of the whole batch: two ranks with half the batch each end with the weights of one process with the
whole batch (to float rounding). Three ways to get that all-reduce, chosen with ``--mode``:

- ``ddp``: ``torch.nn.parallel.DistributedDataParallel``, which all-reduces gradients in buckets while the
  backward pass still runs; the update is ``utils.loop.train_step`` unchanged;
- ``by-hand``: a plain backward, then ``average_gradients`` (one ``all_reduce`` per parameter, divided by the
  world size), then clip and step: the same arithmetic, written out;
- ``fsdp``: ``torch.distributed.fsdp.fully_shard`` (ZeRO-3): each rank keeps only its shard of every
  parameter, gradient and AdamW state, and gathers the full weights layer by layer when it needs them.

Logging: only rank 0 writes, and what it writes is all-reduced first (``train/loss`` is the mean over all
ranks' rows). ``--every-rank-run`` also makes *every* rank log its own loss into one run, the mistake the
chapter shows. Checkpoints: rank 0 saves (``utils.checkpoint``, atomic), every rank loads the same file.

Started as torchrun starts it (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``... in the environment)::

    python -m torch.distributed.run --nproc_per_node 2 --master_addr 127.0.0.1 --master_port 29500 \\
        -m utils.distributed --steps 20 --log-run ch09/ddp

Without those variables it runs as one process (world size 1), for the reference run in a notebook.
``--device cuda`` puts each rank on GPU ``LOCAL_RANK`` with the nccl backend (not run on the book's
machine, which has no GPU).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from utils import checkpoint as ckpt
from utils import hooks, loop, validate
from utils.batches import random_windows, to_device
from utils.evaluation import lm_loss
from utils.gpt import GPT, GPTConfig
from utils.optim import make_adamw, make_scheduler

MODES = ("ddp", "by-hand", "fsdp")


@dataclass
class DistConfig:
    """One data-parallel run. ``global_batch`` windows of ``block_size`` tokens per update, split evenly over
    the ranks; ``log_run`` is ``"<chapter>/<run>"`` for ``tb.open_run`` (rank 0 only), ``""`` for no log."""

    steps: int = 20
    global_batch: int = 16
    block_size: int = 32
    n_layer: int = 2
    n_head: int = 2
    n_embd: int = 64
    lr: float = 3e-3
    warmup_steps: int = 2
    grad_clip: float = 1.0
    seed: int = 0
    mode: str = "ddp"
    device: str = "cpu"  # "cpu", or "cuda": each rank on GPU LOCAL_RANK (torchrun sets it), with nccl
    log_run: str = ""
    every_rank_run: str = ""
    checkpoint_every: int = 0
    checkpoint_dir: str = ""
    resume: bool = False
    flush_every_step: bool = False  # put each step on disk at once (for a test that kills the run)
    weights_out: str = ""
    summary_out: str = ""

    def __post_init__(self) -> None:
        for name, minimum in {"steps": 1, "global_batch": 1, "warmup_steps": 0, "seed": 0,
                              "checkpoint_every": 0}.items():
            validate.check_whole(name, getattr(self, name), minimum)
        validate.check_number("lr", self.lr, 0.0, above=True)
        validate.check_number("grad_clip", self.grad_clip, 0.0, above=True)
        validate.check_choice("mode", self.mode, MODES)
        validate.check_choice("device", self.device, ("cpu", "cuda"))  # cuda: each rank takes GPU LOCAL_RANK
        self.gpt(vocab_size=1)  # block_size, n_layer, n_head, n_embd: GPTConfig's own checks
        if self.warmup_steps > self.steps:
            raise ValueError(f"warmup_steps={self.warmup_steps} is more than steps={self.steps}: the warm-up "
                             "must end by the last update; shorten the warm-up or train for more steps")
        for name in ("log_run", "every_rank_run"):
            value = getattr(self, name)
            if value and (value.count("/") != 1 or not all(value.split("/"))):
                raise ValueError(f"{name}={value!r} is not allowed: give '<chapter>/<run>', e.g. 'ch09/ddp' "
                                 "(or '' for no log)")
        if self.mode == "fsdp" and (self.checkpoint_every or self.resume):
            raise ValueError("this script saves whole-model checkpoints; an FSDP run would need sharded ones "
                             "(torch.distributed.checkpoint): run mode='fsdp' without checkpoint_every and resume")
        if (self.checkpoint_every or self.resume) and not self.checkpoint_dir:
            what = f"checkpoint_every={self.checkpoint_every}" if self.checkpoint_every else "resume"
            raise ValueError(f"{what} needs checkpoint_dir (--checkpoint-dir): say where the checkpoints go")

    def gpt(self, vocab_size: int) -> GPTConfig:
        return GPTConfig(vocab_size=vocab_size, block_size=self.block_size, n_layer=self.n_layer,
                         n_head=self.n_head, n_embd=self.n_embd, dropout=0.0)


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
    """The mean of a number over all ranks (every rank gets it): what rank 0 should log."""
    _, world_size = world()
    if world_size == 1:
        return float(value)
    total = torch.tensor([float(value)], dtype=torch.float64)
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return float(total) / world_size


def by_hand_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, batch: tuple[torch.Tensor, ...],
                 grad_clip: float) -> loop.StepStats:
    """One data-parallel update written out: this rank's backward, the all-reduce, clip, step."""
    optimizer.zero_grad(set_to_none=True)
    loss, _ = lm_loss(model, batch)
    loss.backward()
    average_gradients(model)  # from here on every rank holds the same gradient
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    return loop.StepStats(loss=float(loss.detach()), metrics={}, grad_norm=float(norm))


# --------------------------------------------------------------------------------------------- set-up


def rank_device(config: DistConfig) -> torch.device:
    """The CPU, or this rank's own GPU: ``cuda:LOCAL_RANK`` (one process per GPU of a machine)."""
    if config.device == "cpu":
        return torch.device("cpu")
    device = loop.resolve_device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}")  # says so if no GPU
    torch.cuda.set_device(device)
    return device


def _build(config: DistConfig, vocab_size: int, device: torch.device):
    """Model (the same seed on every rank), the wrapped model the step calls, optimizer and scheduler."""
    torch.manual_seed(config.seed)
    model = GPT(config.gpt(vocab_size)).to(device)
    wrapped: torch.nn.Module = model
    if config.mode == "ddp" and world()[1] > 1:
        ids = [device.index] if device.type == "cuda" else None
        wrapped = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
    elif config.mode == "fsdp":
        from torch.distributed.fsdp import fully_shard

        for block in model.transformer.h:
            fully_shard(block)  # each block's weights are gathered only while it computes
        fully_shard(model)
    optimizer = make_adamw(model, config.lr, weight_decay=0.1)
    scheduler = make_scheduler(optimizer, lr=config.lr, min_lr=config.lr / 10,
                               warmup_steps=config.warmup_steps, total_steps=config.steps)
    return model, wrapped, optimizer, scheduler


def _resume_point(config: DistConfig) -> str | None:
    """Rank 0 picks the newest readable checkpoint and tells every rank, so that all load the same file; none
    is an error (starting afresh would replace the run's log)."""
    if not config.resume:
        return None
    rank, world_size = world()
    choice = [str(ckpt.latest_checkpoint(config.checkpoint_dir) or "") if rank == 0 else ""]
    if world_size > 1:
        dist.broadcast_object_list(choice, src=0)
    if not choice[0]:
        raise ckpt.CheckpointNotFoundError(f"resume: no readable checkpoint in {config.checkpoint_dir}: run "
                                           "without --resume to start afresh")
    return choice[0]


#: The settings that decide the model's shape: a checkpoint with others cannot be resumed.
MODEL_FIELDS = ("block_size", "n_layer", "n_head", "n_embd")
_REMEDY = ("Resume with the settings it was written with, or start afresh: without --resume, or with another "
           "--checkpoint-dir.")


def _load_resume(config: DistConfig, path: str, model: torch.nn.Module, optimizer: Any, scheduler: Any) -> int:
    """Load the checkpoint every rank resumes from, once it is known to be this run's; return its step."""
    state = ckpt.read_checkpoint(path)
    saved = state.get("extra", {}).get("distributed")
    if saved is not None:
        ckpt.check_same(path, "model", {k: saved.get(k) for k in MODEL_FIELDS},
                        {k: getattr(config, k) for k in MODEL_FIELDS}, _REMEDY)
    ckpt.check_model_fits(path, state, model, _REMEDY)
    return int(ckpt.load_checkpoint(path, model=model, optimizer=optimizer, scheduler=scheduler,
                                    restore_rng=False)["step"])


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


# --------------------------------------------------------------------------------------------- the run


def _step(config: DistConfig, wrapped: torch.nn.Module, optimizer: torch.optim.Optimizer,
          batch: tuple[torch.Tensor, ...]) -> loop.StepStats:
    if config.mode == "by-hand":
        return by_hand_step(wrapped, optimizer, batch, config.grad_clip)
    return loop.train_step(wrapped, optimizer, [batch], lm_loss, grad_clip=config.grad_clip)


def _save(config: DistConfig, step: int, model: torch.nn.Module, optimizer: Any, scheduler: Any,
          writer: Any) -> None:
    """Rank 0 saves the state after update ``step`` (flushing its log first, as ``hooks.save_checkpoint``
    does); the others wait, so no rank runs ahead of a checkpoint that is still being written."""
    rank, world_size = world()
    if rank == 0:
        if writer is not None:
            writer.flush()
        path = ckpt.step_path(config.checkpoint_dir, step + 1)
        ckpt.save_checkpoint(path, model=model, step=step + 1, optimizer=optimizer, scheduler=scheduler,
                             extra={"distributed": asdict(config)}, include_rng=False)
        ckpt.prune_checkpoints(config.checkpoint_dir, 2)
    if world_size > 1:
        dist.barrier()


def _log(writer: Any, every: Any, step: int, loss: float, stats: loop.StepStats, lr: float,
         rate: float) -> None:
    if writer is not None:  # rank 0: numbers of all ranks together
        writer.add_step_scalars({"train/loss": loss, "train/grad_norm": stats.grad_norm, "train/lr": lr,
                                 "perf/tokens_per_s": rate}, step)
    if every is not None:  # the mistake: every rank logs the loss of its own rows
        every.add_scalar("train/loss", stats.loss, step)


def train_distributed(config: DistConfig) -> dict[str, Any]:
    """Train as this rank; return (on every rank) a summary: losses, throughput, what each rank holds."""
    from utils.pretrain import shakespeare_data

    rank, world_size = world()
    tokenizer, train_ids, _ = shakespeare_data()
    device = rank_device(config)
    model, wrapped, optimizer, scheduler = _build(config, tokenizer.vocab_size, device)
    resume_from = _resume_point(config)
    start = 0
    if resume_from is not None:  # every rank loads the file rank 0 saved, before any log is opened
        start = _load_resume(config, resume_from, model, optimizer, scheduler)
    batch_fn = random_windows(train_ids, config.block_size, config.global_batch, config.seed)
    losses, rates, started = {}, [], time.perf_counter()
    with contextlib.ExitStack() as stack:
        writer, every = _writers(config, stack, resume_from)
        for step in range(start, config.steps):
            tick = time.perf_counter()
            lr = optimizer.param_groups[0]["lr"]
            local = to_device(shard_rows(batch_fn(step), rank, world_size), device)
            stats = _step(config, wrapped, optimizer, local)
            scheduler.step()
            loss = mean_over_ranks(stats.loss)  # a collective: every rank calls it
            rate = config.global_batch * config.block_size / (time.perf_counter() - tick)
            losses[step], rates = loss, rates + [rate]
            _log(writer, every, step, loss, stats, lr, rate)
            if writer is not None and config.flush_every_step:
                writer.flush()
            if rank == 0:
                print(f"step {step} loss {loss:.4f}", flush=True)
            if config.checkpoint_every and hooks.due(config.checkpoint_every, step, config.steps - 1):
                _save(config, step, model, optimizer, scheduler, writer)
    summary = _summary(config, model, optimizer, losses, rates, start)
    summary["seconds"] = time.perf_counter() - started
    return summary


def _local_count(tensors) -> int:
    """Values this rank stores: a sharded tensor (DTensor) counts its local shard only."""
    return sum((t.to_local() if hasattr(t, "to_local") else t).numel() for t in tensors)


def _summary(config: DistConfig, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
             losses: dict[int, float], rates: list[float], start: int) -> dict[str, Any]:
    rank, world_size = world()
    states = [v for s in optimizer.state.values() for v in s.values() if torch.is_tensor(v) and v.ndim > 0]
    held = [(_local_count(model.parameters()), _local_count(states), os.getpid())]
    if world_size > 1:
        gathered: list[Any] = [None] * world_size
        dist.all_gather_object(gathered, held[0])
        held = gathered
    full = {name: (t.full_tensor() if hasattr(t, "full_tensor") else t).detach().cpu().clone()
            for name, t in model.state_dict().items()}  # a collective under FSDP
    if rank == 0 and config.weights_out:
        ckpt.atomic_torch_save(full, config.weights_out)
    timed = rates[1:] if len(rates) > 1 else rates  # the first step pays one-off costs
    return {"mode": config.mode, "world_size": world_size, "start_step": start, "steps": config.steps,
            "losses": {str(k): v for k, v in losses.items()},
            "tokens_per_s": float(torch.tensor(timed).median()) if timed else 0.0,
            "parameters": sum(t.numel() for t in full.values() if t is not full["lm_head.weight"]),
            "parameters_per_rank": [p for p, _, _ in held], "optimizer_values_per_rank": [o for _, o, _ in held],
            "pid_per_rank": [pid for _, _, pid in held]}  # which process wrote which event file


# --------------------------------------------------------------------------------------------- launching


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (for ``--master_port``)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def config_arguments(config: DistConfig) -> list[str]:
    """The command-line arguments of this script that reproduce ``config``."""
    arguments = []
    for name, value in asdict(config).items():
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            arguments += [flag] if value else []
        else:
            arguments += [flag, str(value)]
    return arguments


def launch_command(nproc: int, config: DistConfig, port: int | None = None) -> list[str]:
    """torchrun's command line for ``nproc`` ranks of this script on this machine (all on 127.0.0.1)."""
    return [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", str(nproc),
            "--master_addr", "127.0.0.1", "--master_port", str(port or free_port()),
            "-m", "utils.distributed", *config_arguments(config)]


def launch_env() -> dict[str, str]:
    """The environment of the launched ranks: one torch thread each (torchrun's default, said explicitly so
    that it does not print a banner), gloo on the loopback interface, this repository importable."""
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)}
    if sys.platform.startswith("linux"):
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")
    return env


def launch(nproc: int, config: DistConfig, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run ``nproc`` ranks with torchrun and wait; raise with the output's end if any rank failed."""
    done = subprocess.run(launch_command(nproc, config), env=launch_env(), capture_output=True, text=True,
                          timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"torchrun exited with {done.returncode}:\n{(done.stdout + done.stderr)[-3000:]}")
    return done


def kill_launch(process: subprocess.Popen) -> None:
    """SIGKILL a launch started with ``launch_command``: torchrun *and* every rank it started, each by its
    process id, as a lost machine stops them (killing torchrun alone leaves its ranks running on)."""
    import psutil  # installed with Jupyter's kernel

    ranks = psutil.Process(process.pid).children(recursive=True)
    process.kill()
    for rank in ranks:
        with contextlib.suppress(psutil.NoSuchProcess):
            rank.kill()
    process.wait(timeout=60)


def _arguments(argv: Sequence[str] | None) -> tuple[DistConfig, str]:
    parser = argparse.ArgumentParser(prog="python -m utils.distributed", description=__doc__.splitlines()[0])
    for name, value in asdict(DistConfig()).items():
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            parser.add_argument(flag, action="store_true")
        else:
            parser.add_argument(flag, type=type(value), default=value)
    parser.add_argument("--backend", default=None, help="default: gloo on the CPU, nccl with --device cuda")
    args = vars(parser.parse_args(argv))
    backend = args.pop("backend") or ("nccl" if args["device"] == "cuda" else "gloo")
    try:
        config = DistConfig(**args)
    except ValueError as exc:
        parser.error(validate.as_flags(str(exc), args))
    _check_surroundings(parser, config)
    return config, backend


def _check_surroundings(parser: argparse.ArgumentParser, config: DistConfig) -> None:
    """What the settings alone cannot tell: the ranks torchrun started, the folders written to."""
    ranks = os.environ.get("WORLD_SIZE", "1")
    if ranks.isdigit() and int(ranks) > 1 and config.global_batch % int(ranks):
        parser.error(f"argument --global-batch: {config.global_batch} rows do not split evenly over the "
                     f"{ranks} ranks torchrun started (WORLD_SIZE={ranks}): give a multiple of {ranks}")
    if config.checkpoint_dir and Path(config.checkpoint_dir).is_file():
        parser.error(f"argument --checkpoint-dir: {config.checkpoint_dir!r} is a file: give a folder")
    if config.log_run or config.every_rank_run:
        from utils.paths import runs_dir

        try:
            runs_dir()
        except ValueError as exc:
            parser.error(str(exc))


def main(argv: Sequence[str] | None = None) -> None:
    config, backend = _arguments(argv)
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
