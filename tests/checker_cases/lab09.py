"""Answers to lab 9: DistributedSampler's shards, the all-reduce average, and the rank-0 logging guard."""

from __future__ import annotations

import functools
import math
import os

import numpy as np
import torch
from torch.utils.data import DistributedSampler

from tests.checker_cases import Cases, Wrong
from utils.hooks import due

# ---------------------------------------------------------------- lab09.shard_indices: right


def with_torchs_sampler(n, world_size, rank, drop_last):
    sampler = DistributedSampler(range(n), num_replicas=world_size, rank=rank, shuffle=False,
                                 drop_last=drop_last)
    return list(sampler)


def by_arithmetic(n, world_size, rank, drop_last):
    per_rank = n // world_size if drop_last else math.ceil(n / world_size)
    return [(rank + k * world_size) % n for k in range(per_rank)]


def numpy_padded(n, world_size, rank, drop_last):
    indices = np.arange(n)
    if drop_last:
        indices = indices[: n // world_size * world_size]
    else:
        indices = np.resize(indices, math.ceil(n / world_size) * world_size)  # repeats from the start
    return indices[rank::world_size]


# ---------------------------------------------------------------- lab09.shard_indices: wrong


def whole_dataset(n, world_size, rank, drop_last):
    return list(range(n))


def contiguous_blocks(n, world_size, rank, drop_last):
    size = n // world_size if drop_last else math.ceil(n / world_size)
    padded = [i % n for i in range(size * world_size)]
    return padded[rank * size:(rank + 1) * size]


def no_padding(n, world_size, rank, drop_last):
    end = n // world_size * world_size if drop_last else n
    return list(range(rank, end, world_size))


def pads_with_the_last(n, world_size, rank, drop_last):
    if drop_last:
        return list(range(rank, n // world_size * world_size, world_size))
    total = math.ceil(n / world_size) * world_size
    padded = list(range(n)) + [n - 1] * (total - n)
    return padded[rank::world_size]


def always_pads(n, world_size, rank, drop_last):
    return by_arithmetic(n, world_size, rank, False)


def always_drops(n, world_size, rank, drop_last):
    return list(range(rank, n // world_size * world_size, world_size))


def pads_with_a_slice(n, world_size, rank, drop_last):
    """Pads with indices[:padding]: too short when the padding exceeds n (n=2 over 5 ranks needs 3)."""
    indices = list(range(n))
    if drop_last:
        indices = indices[: n // world_size * world_size]
    else:
        indices = indices + indices[: math.ceil(n / world_size) * world_size - n]
    return indices[rank::world_size]


def ranks_from_one(n, world_size, rank, drop_last):
    return by_arithmetic(n, world_size, (rank + 1) % world_size, drop_last)


def returns_a_count(n, world_size, rank, drop_last):
    return len(by_arithmetic(n, world_size, rank, drop_last))


def shuffled_differently_per_rank(n, world_size, rank, drop_last):
    """Each rank shuffles with its own seed: shards overlap and miss examples."""
    order = np.random.default_rng(rank).permutation(n).tolist()
    per_rank = n // world_size if drop_last else math.ceil(n / world_size)
    return order[:per_rank]


# ---------------------------------------------------------------- lab09.averaged_gradients: right


def stack_and_mean(per_rank):
    return {name: torch.stack([g[name] for g in per_rank]).mean(0) for name in per_rank[0]}


def loop_sum_then_divide(per_rank):
    out = {}
    for name in per_rank[0]:
        total = torch.zeros_like(per_rank[0][name])
        for grads in per_rank:
            total = total + grads[name]
        out[name] = total / len(per_rank)
    return out


def numpy_mean(per_rank):
    return {name: torch.from_numpy(np.mean([g[name].numpy() for g in per_rank], axis=0))
            for name in per_rank[0]}


# ---------------------------------------------------------------- lab09.averaged_gradients: wrong


def sums(per_rank):
    return {name: functools.reduce(torch.add, [g[name] for g in per_rank]) for name in per_rank[0]}


def rank_zero_only(per_rank):
    return {name: value.clone() for name, value in per_rank[0].items()}


def last_rank_only(per_rank):
    return dict(per_rank[-1])


def divides_by_parameter_count(per_rank):
    return {name: sum(g[name] for g in per_rank) / len(per_rank[0]) for name in per_rank[0]}


def divides_by_two(per_rank):
    return {name: sum(g[name] for g in per_rank) / 2 for name in per_rank[0]}


def first_two_ranks(per_rank):
    return {name: (per_rank[0][name] + per_rank[1][name]) / 2 for name in per_rank[0]}


def median_over_ranks(per_rank):
    return {name: torch.stack([g[name] for g in per_rank]).median(0).values for name in per_rank[0]}


def running_pairwise_mean(per_rank):
    out = dict(per_rank[0])
    for grads in per_rank[1:]:
        out = {name: (out[name] + grads[name]) / 2 for name in out}
    return out


def accumulates_into_rank_zero(per_rank):
    """An all-reduce done in place into the first rank's tensors."""
    for grads in per_rank[1:]:
        for name in grads:
            per_rank[0][name] += grads[name]
    for name in per_rank[0]:
        per_rank[0][name] /= len(per_rank)
    return per_rank[0]


def one_dict_per_rank(per_rank):
    mean = stack_and_mean(per_rank)
    return [mean for _ in per_rank]


def averages_entries(per_rank):
    return {name: torch.stack([g[name] for g in per_rank]).mean() for name in per_rank[0]}


# ---------------------------------------------------------------- lab09.should_log: right


def global_rank_zero(env, step, log_every, last_step):
    return int(env.get("RANK", 0)) == 0 and due(log_every, step, last_step)


def written_out(env, step, log_every, last_step):
    if env.get("RANK", "0") != "0" or log_every <= 0:
        return False
    return step % log_every == 0 or step == last_step


def with_defaults_first(env, step, log_every, last_step):
    rank = env["RANK"] if "RANK" in env else "0"
    due_now = log_every > 0 and (step == last_step or not step % log_every)
    return bool(due_now and int(rank) == 0)


# ---------------------------------------------------------------- lab09.should_log: wrong


def every_rank(env, step, log_every, last_step):
    return due(log_every, step, last_step)


def local_rank_zero(env, step, log_every, last_step):
    return env.get("LOCAL_RANK", "0") == "0" and due(log_every, step, last_step)


def compares_with_int(env, step, log_every, last_step):
    return env.get("RANK") == 0 and due(log_every, step, last_step)


def needs_torchrun(env, step, log_every, last_step):
    return int(env["RANK"]) == 0 and due(log_every, step, last_step)


def every_step(env, step, log_every, last_step):
    return int(env.get("RANK", "0")) == 0


def forgets_the_last_step(env, step, log_every, last_step):
    return int(env.get("RANK", "0")) == 0 and log_every > 0 and step % log_every == 0


def skips_step_zero(env, step, log_every, last_step):
    return int(env.get("RANK", "0")) == 0 and step > 0 and due(log_every, step, last_step)


def divides_by_zero(env, step, log_every, last_step):
    return int(env.get("RANK", "0")) == 0 and (step % log_every == 0 or step == last_step)


def last_rank(env, step, log_every, last_step):
    last = int(env.get("WORLD_SIZE", "1")) - 1
    return int(env.get("RANK", "0")) == last and due(log_every, step, last_step)


def reads_os_environ(env, step, log_every, last_step):
    """Ignores its env argument and reads this process's environment."""
    return int(os.environ.get("RANK", "0")) == 0 and due(log_every, step, last_step)


def env_then_os_environ(env, step, log_every, last_step):
    """Falls back on this process's environment when env has no RANK."""
    rank = env.get("RANK", os.environ.get("RANK", "0"))
    return int(rank) == 0 and due(log_every, step, last_step)


def returns_a_string(env, step, log_every, last_step):
    return "yes" if global_rank_zero(env, step, log_every, last_step) else ""


CASES = {
    "lab09.shard_indices": Cases(
        correct=[with_torchs_sampler, by_arithmetic, numpy_padded],
        wrong=[
            Wrong(whole_dataset, "every rank gets the whole dataset"),
            Wrong(contiguous_blocks, "contiguous blocks"),
            Wrong(no_padding, "no padding"),
            Wrong(pads_with_the_last, "repeating the last index"),
            Wrong(always_pads, "drop_last=True is ignored"),
            Wrong(always_drops, "drop_last=False must keep every index"),
            Wrong(ranks_from_one, "ranks count from 0"),
            Wrong(pads_with_a_slice, "the padding exceeds n"),
            Wrong(returns_a_count, "return a list of indices"),
            Wrong(shuffled_differently_per_rank, "DistributedSampler gives"),
        ],
    ),
    "lab09.averaged_gradients": Cases(
        correct=[stack_and_mean, loop_sum_then_divide, numpy_mean],
        wrong=[
            Wrong(sums, "returns the sum over the ranks"),
            Wrong(rank_zero_only, "rank 0's gradient only"),
            Wrong(last_rank_only, "the last rank's gradient only"),
            Wrong(divides_by_parameter_count, "number of parameters"),
            Wrong(divides_by_two, "divides by 2 whatever the world size"),
            Wrong(first_two_ranks, "averages ranks 0 and 1 only"),
            Wrong(median_over_ranks, "the median over the ranks"),
            Wrong(running_pairwise_mean, "a running average"),
            Wrong(accumulates_into_rank_zero, "changed the gradients it was given"),
            Wrong(one_dict_per_rank, "return one dict"),
            Wrong(averages_entries, "keep each gradient's shape"),
        ],
    ),
    "lab09.should_log": Cases(
        correct=[global_rank_zero, written_out, with_defaults_first],
        wrong=[
            Wrong(every_rank, "every rank writes"),
            Wrong(local_rank_zero, "it tests LOCAL_RANK"),
            Wrong(compares_with_int, "nobody writes"),
            Wrong(needs_torchrun, "a run started without torchrun has no RANK"),
            Wrong(every_step, "rank 0 writes at every step"),
            Wrong(forgets_the_last_step, "never writes at the last step"),
            Wrong(skips_step_zero, "skips step 0"),
            Wrong(divides_by_zero, "log_every = 0 means never"),
            Wrong(last_rank, "the last rank writes"),
            Wrong(reads_os_environ, "reads the process environment"),
            Wrong(env_then_os_environ, "reads the process environment"),
            Wrong(returns_a_string, "return True or False"),
        ],
    ),
}
