"""Reference solutions of lab 9 (``labs/lab09_scaling.ipynb``); see ``lab00_first_run.py``."""

import math

import torch
import torch.distributed as dist

from utils import hooks


def shard_indices(n, world_size, rank, drop_last):
    if drop_last:  # drop the tail that would not fill every rank
        total = n // world_size * world_size
        indices = list(range(total))
    else:  # pad with the first indices again, up to a multiple of world_size
        total = math.ceil(n / world_size) * world_size
        indices = [i % n for i in range(total)]
    return indices[rank:total:world_size]  # interleaved: rank, rank + W, rank + 2W, ...


def averaged_gradients(per_rank):
    names = per_rank[0].keys()
    return {name: torch.stack([grads[name] for grads in per_rank]).mean(dim=0) for name in names}


def should_log(env, step, log_every, last_step):
    rank = int(env.get("RANK", "0"))  # environment variables are strings; no torchrun: rank 0
    return rank == 0 and hooks.due(log_every, step, last_step)


def all_reduce_gradients(model):
    world_size = dist.get_world_size()
    for parameter in model.parameters():
        if parameter.grad is not None:
            dist.all_reduce(parameter.grad)  # a sum over the ranks, in place, on every rank
            parameter.grad /= world_size
