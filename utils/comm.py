"""What data parallelism sends, counted and timed: the script chapter 9 launches after its training runs.

- ``log_and_allreduce``: a DDP communication hook that notes every bucket DDP all-reduces in a
  ``BucketLog`` (its index, its bytes, the parameters in it), then all-reduces it as DDP does without one.
- ``count_allreduces``: one update of DDP with gradient accumulation over k micro-batches, with and without
  ``no_sync``: k all-reduces of every bucket, or one.
- ``overlap``: one DDP update under ``torch.profiler``: when each bucket's all-reduce was launched, against
  the backward pass's operators. A bucket is sent as soon as its gradients are complete, while the backward
  pass still computes the gradients of earlier layers.
- ``allreduce_seconds``: the time of ``all_reduce`` on float32 tensors of several sizes, for the
  bandwidth a ring all-reduce reaches (``ring_bytes_per_rank``).

Started by torchrun (``utils.torchrun.launch_module``), every rank runs ``main``; rank 0 writes the
measurements as JSON::

    python -m torch.distributed.run --nproc_per_node 2 ... -m utils.comm --out comm.json
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook
from torch.nn.parallel import DistributedDataParallel

from utils import loop, validate
from utils.distributed import DistConfig, shard_rows, world
from utils.evaluation import lm_loss
from utils.gpt import GPT
from utils.optim import make_adamw

#: DDP's bucket size in MiB for the demonstrations: the chapter's model (about 0.4 MiB of gradients) would
#: fit one default bucket whole; small buckets show how DDP splits a larger model.
BUCKET_MB = 0.1
#: float32 values per all-reduce timed: 4 KiB to 64 MiB
SIZES = tuple(4**e for e in range(5, 13))


def ring_bytes_per_rank(nbytes: float, world_size: int) -> float:
    """Bytes each rank sends in a ring all-reduce of ``nbytes``. The tensor is cut
    into N chunks; a reduce-scatter passes N - 1 chunks around the ring (each rank
    then holds one chunk of the sum), an all-gather N - 1 more (each rank then holds
    every chunk of the sum): 2(N-1)/N of the tensor, whatever N."""
    return 2 * (world_size - 1) / world_size * nbytes


class BucketLog:
    """What DDP all-reduced: one entry per bucket sent (``note``), filled by
    ``log_and_allreduce``."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.names = {id(p): name for name, p in model.named_parameters()}
        self.calls: list[dict[str, Any]] = []

    def note(self, bucket: dist.GradBucket) -> None:
        buffer = bucket.buffer()  # the bucket's gradients, flattened into one tensor
        self.calls.append({
            "bucket": bucket.index(),
            "bytes": buffer.numel() * buffer.element_size(),
            "parameters": [self.names[id(p)] for p in bucket.parameters()],
        })


# no annotations: DDP checks them against its own classes, and this module's are strings
def log_and_allreduce(log, bucket):  # noqa: ANN001, ANN201
    """A DDP communication hook, ``ddp.register_comm_hook(log, log_and_allreduce)``:
    note the bucket, then hand it to torch's ``allreduce_hook``, which does what DDP
    does without a hook (sum over the ranks, divided by their number)."""
    log.note(bucket)
    return allreduce_hook(None, bucket)  # None: the default process group


def wrapped(config: DistConfig, bucket_mb: float) -> tuple[GPT, DistributedDataParallel, BucketLog]:
    """The chapter's GPT (the same on every rank), in DDP with ``bucket_mb`` buckets and a ``BucketLog``."""
    torch.manual_seed(config.seed)
    model = GPT(config.model)
    ddp = DistributedDataParallel(model, bucket_cap_mb=bucket_mb)
    log = BucketLog(model)
    ddp.register_comm_hook(log, log_and_allreduce)
    return model, ddp, log


def micro_batches(config: DistConfig, k: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """This rank's rows of ``k`` global batches of random tokens (a fixed draw: counting needs no text)."""
    generator = torch.Generator().manual_seed(config.seed)
    rank, world_size = world()
    shape = (config.global_batch, config.model.block_size)
    batches = [(torch.randint(config.model.vocab_size, shape, generator=generator),) * 2 for _ in range(k)]
    return [shard_rows(b, rank, world_size) for b in batches]


def two_updates(config: DistConfig, k: int, use_no_sync: bool,
               bucket_mb: float = BUCKET_MB) -> dict:
    """Two ``loop.train_step`` updates of DDP, each over ``k`` micro-batches: the
    buckets each sent, and the weights after both. DDP's first update sends every
    gradient in one bucket (it does not know their order yet); after it, DDP rebuilds
    its buckets, of ``bucket_mb`` each, in the order the gradients became ready."""
    model, ddp, log = wrapped(config, bucket_mb)
    optimizer = make_adamw(model, config.training.lr)
    no_sync = ddp.no_sync if use_no_sync else contextlib.nullcontext
    sent = []
    for _ in range(2):
        log.calls = []
        loop.train_step(model, optimizer, micro_batches(config, k),
                        lambda m, b: lm_loss(ddp, b),  # forward through DDP
                        grad_clip=config.training.grad_clip, no_sync=no_sync)
        sent.append(log.calls)
    return {"calls": sent, "weights": copy.deepcopy(model.state_dict()), "ddp": ddp,
            "model": model, "optimizer": optimizer}


def count_allreduces(config: DistConfig, k: int) -> dict[str, Any]:
    """Buckets all-reduced in an update over ``k`` micro-batches (the second: DDP's buckets rebuilt), with
    and without ``no_sync``, and the largest difference between the weights the two runs leave."""
    held, each = two_updates(config, k, True), two_updates(config, k, False)
    gap = max((held["weights"][n] - each["weights"][n]).abs().max().item() for n in each["weights"])
    return {"micro_batches": k, "with_no_sync": len(held["calls"][1]), "without": len(each["calls"][1]),
            "weight_gap": gap}


def overlap(config: DistConfig) -> dict[str, Any]:
    """A third DDP update, under ``torch.profiler``: when the backward pass ran, and when each bucket's
    all-reduce was launched (``c10d::allreduce_``) and finished on gloo's own threads (``gloo:all_reduce``),
    in microseconds from the backward pass's start."""
    from torch.profiler import ProfilerActivity, profile

    run = two_updates(config, 1, True)
    ddp, model, optimizer = run["ddp"], run["model"], run["optimizer"]
    with profile(activities=[ProfilerActivity.CPU]) as profiled:
        loop.train_step(model, optimizer, micro_batches(config, 1), lambda m, b: lm_loss(ddp, b))
    events = profiled.events()
    backward = [e.time_range for e in events if e.name.startswith("autograd::engine::evaluate_function")]
    start = min(r.start for r in backward)
    launched = sorted(e.time_range.start - start for e in events if e.name == "c10d::allreduce_")
    done = sorted(e.time_range.end - start for e in events if e.name == "gloo:all_reduce")
    return {"backward_us": max(r.end for r in backward) - start, "launched_us": launched, "done_us": done}


def buckets(config: DistConfig, bucket_mb: float) -> list[list[dict[str, Any]]]:
    """The buckets sent by each of two updates without accumulation, in the order DDP sent them."""
    return two_updates(config, 1, True, bucket_mb)["calls"]


def allreduce_seconds(sizes: Sequence[int] = SIZES, repeats: int = 10) -> dict[int, float]:
    """The median time of ``all_reduce`` (a sum) of a float32 tensor of each size, in seconds, over
    ``repeats`` after one untimed; every rank starts each call together (a barrier)."""
    seconds = {}
    for size in sizes:
        tensor = torch.ones(size)
        times = []
        for _ in range(repeats + 1):
            dist.barrier()
            tick = time.perf_counter()
            dist.all_reduce(tensor)
            times.append(time.perf_counter() - tick)
        seconds[size] = float(torch.tensor(times[1:]).median())
    return seconds


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m utils.comm --out FILE [--bandwidth]``, on every rank: rank 0 writes the JSON."""
    parser = argparse.ArgumentParser(prog="python -m utils.comm", description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="the JSON file rank 0 writes")
    parser.add_argument("--bandwidth", action="store_true", help="time all_reduce only, at --sizes")
    parser.add_argument("--sizes", type=validate.whole_numbers(1), default=list(SIZES),
                        help="float32 values per all-reduce timed, comma-separated")
    args = parser.parse_args(argv)
    if not Path(args.out).resolve().parent.is_dir():
        parser.error(f"argument --out: {args.out!r} is not in an existing folder: create the folder first")
    if "WORLD_SIZE" not in os.environ:  # torchrun sets it, with RANK, MASTER_ADDR and MASTER_PORT
        parser.error("it runs as the ranks torchrun starts, e.g. python -m torch.distributed.run "
                     "--nproc_per_node 2 -m utils.comm --out comm.json (utils.torchrun.launch_module)")
    dist.init_process_group("gloo")
    try:
        config = DistConfig()
        if args.bandwidth:
            result: dict[str, Any] = {"seconds": allreduce_seconds(args.sizes)}
        else:
            result = {"buckets_default": buckets(config, 25), "buckets": buckets(config, BUCKET_MB),
                      "no_sync": count_allreduces(config, 4), "overlap": overlap(config)}
        if dist.get_rank() == 0:
            result["world_size"] = dist.get_world_size()
            Path(args.out).write_text(json.dumps(result, indent=1))
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
