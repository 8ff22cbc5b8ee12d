"""Checkers of lab 9 (``labs/lab09_scaling.ipynb``): sharding a dataset over ranks as torch's
``DistributedSampler`` does, averaging the ranks' gradients as DDP's all-reduce does, the guard that lets
only global rank 0 write logs, and the all-reduce itself in real processes (run by ``utils.checks.ranks``).

Each checker compares the answer with a reference on inputs it builds itself, and names a mistake only
when the answer reproduces that mistake's output exactly on every input (see ``utils.checks``).
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch

from utils.checks import CheckFailed, call, checker, passed, ranks, unchanged
from utils.hooks import due

# --------------------------------------------------------------------------- lab09.shard_indices


def reference_shard(n: int, world_size: int, rank: int, drop_last: bool) -> list[int]:
    """``list(DistributedSampler(range(n), world_size, rank, shuffle=False, drop_last=drop_last))``."""
    if drop_last:
        total = n // world_size * world_size
        indices = list(range(total))
    else:
        total = math.ceil(n / world_size) * world_size
        indices = [i % n for i in range(total)] if n else []  # padded with the first indices, again
    return indices[rank:total:world_size]


def _contiguous(n, world_size, rank, drop_last):
    size = (n // world_size) if drop_last else math.ceil(n / world_size)
    padded = list(range(size * world_size)) if drop_last else [i % n for i in range(size * world_size)]
    return padded[rank * size:(rank + 1) * size]


_SHARD_FAULTS: list[tuple[Callable[..., list[int]], str]] = [
    (lambda n, w, r, d: list(range(n)),
     "every rank gets the whole dataset: the shards overlap, so each example is seen world_size times per "
     "epoch. Give rank r every world_size-th index, starting at r"),
    (_contiguous,
     "contiguous blocks: DistributedSampler interleaves the indices (rank r takes r, r + W, r + 2W, ...)"),
    (lambda n, w, r, d: list(range(n))[r:n // w * w if d else n:w],
     "no padding: with drop_last=False the ranks get different numbers of indices, and a rank that runs out "
     "first waits forever in the next all-reduce. Pad the list with indices from its start up to a multiple "
     "of world_size"),
    (lambda n, w, r, d: reference_shard(n, w, r, d) if d else
     (list(range(n)) + [n - 1] * (math.ceil(n / w) * w - n))[r::w],
     "pads by repeating the last index: DistributedSampler pads with the first indices again (0, 1, ...)"),
    (lambda n, w, r, d: reference_shard(n, w, r, d) if d else
     (list(range(n)) + list(range(n))[:math.ceil(n / w) * w - n])[r::w],
     "pads with indices[:padding], which is too short when the padding exceeds n (n=2 over 5 ranks needs 3 "
     "extra indices, and indices[:3] has only 2): DistributedSampler repeats the index list as many times as "
     "needed (0, 1, 0, 1, 0)"),
    (lambda n, w, r, d: reference_shard(n, w, r, False),
     "drop_last=True is ignored: it must drop the tail that does not fill every rank, not pad"),
    (lambda n, w, r, d: reference_shard(n, w, r, True),
     "drop_last=False must keep every index (pad instead); it drops the tail as drop_last=True does"),
    (lambda n, w, r, d: reference_shard(n, w, (r + 1) % w, d),
     "rank r starts at index r + 1: ranks count from 0, and rank 0 starts at index 0"),
]


def _as_indices(result: Any, what: str) -> list[int]:
    if result is None:
        raise CheckFailed(f"{what} returned None: did you forget the `return`?")
    try:
        values = np.asarray(result.detach() if hasattr(result, "detach") else list(result))
    except TypeError:
        raise CheckFailed(f"{what} returned {type(result).__name__}: return a list of indices") from None
    if values.ndim != 1 or (values.size and values.dtype.kind not in "iu"):
        raise CheckFailed(f"{what} returned {values.dtype} values of shape {values.shape}: return a flat "
                          "list of int indices")
    return [int(v) for v in values]


# (2, 5): the padding (3) exceeds n, so the index list is repeated more than once.
_SHARD_CASES = [(n, w, d) for n, w in ((10, 3), (12, 4), (11, 2), (3, 4), (7, 1), (9, 3), (2, 5))
                for d in (False, True)]


@checker("lab09.shard_indices")
def check_shard_indices(shard_indices: Callable[..., Any]) -> None:
    """``shard_indices(n, world_size, rank, drop_last)``: rank ``rank``'s indices of a dataset of ``n``
    examples, as ``DistributedSampler(..., shuffle=False)`` gives them."""
    answers = {}
    for n, w, d in _SHARD_CASES:
        for r in range(w):
            what = f"shard_indices(n={n}, world_size={w}, rank={r}, drop_last={d})"
            answers[n, w, r, d] = _as_indices(call(shard_indices, n, w, r, d), what)
    wrong = [case for case, got in answers.items() if got != reference_shard(*case)]
    if not wrong:
        passed("lab09.shard_indices")
        return
    for fault, diagnosis in _SHARD_FAULTS:
        if all(got == [int(i) for i in fault(*case)] for case, got in answers.items()):
            raise CheckFailed(diagnosis)
    n, w, r, d = wrong[0]
    shards = [answers[n, w, k, d] for k in range(w)]
    raise CheckFailed(f"with n={n}, world_size={w}, drop_last={d} your ranks get {shards}; DistributedSampler "
                      f"gives {[reference_shard(n, w, k, d) for k in range(w)]}")


# --------------------------------------------------------------------------- lab09.averaged_gradients


# The parameters each rank holds a gradient for. Three of them: their number is neither 2 nor every world
# size the check uses, so dividing by 2, or by the number of parameters, is told apart from the mean.
_SHAPES = {"w": (3, 4), "b": (4,), "ln": (3,)}
_WORLD_SIZES = (2, 3, 4)


def _grads(world_size: int, seed: int) -> list[dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    return [{name: torch.randn(shape, generator=generator) for name, shape in _SHAPES.items()}
            for _ in range(world_size)]


def _stacked(per_rank: list[dict[str, torch.Tensor]], name: str) -> torch.Tensor:
    return torch.stack([g[name] for g in per_rank])  # (W, ...)


def _running_pair_mean(per_rank, name):
    out = per_rank[0][name]
    for g in per_rank[1:]:
        out = (out + g[name]) / 2
    return out


_AVERAGE_FAULTS: list[tuple[Callable[[list, str], torch.Tensor], str]] = [
    (lambda p, n: _stacked(p, n).sum(0),
     "it returns the sum over the ranks: all_reduce sums, then divide by the number of ranks"),
    (lambda p, n: p[0][n],
     "it returns rank 0's gradient only: that is a broadcast, not an all-reduce. Average over all ranks"),
    (lambda p, n: p[-1][n], "it returns the last rank's gradient only: average over all ranks"),
    (lambda p, n: _stacked(p, n).sum(0) / len(p[0]),
     "it divides the sum by the number of parameters: divide by the number of ranks"),
    (lambda p, n: _stacked(p, n).sum(0) / 2,
     "it divides by 2 whatever the world size: right for 2 ranks only. Divide by the number of ranks, "
     "len(per_rank)"),
    (lambda p, n: (p[0][n] + p[1][n]) / 2,
     "it averages ranks 0 and 1 only: right for 2 ranks only. Sum over every rank, then divide by their "
     "number"),
    (lambda p, n: _stacked(p, n).median(0).values,
     "the median over the ranks: equal to the mean for 2 ranks, not for more. Use the mean"),
    (_running_pair_mean,
     "a running average (avg + g) / 2 rank after rank weighs the last rank most: sum every rank, then "
     "divide once"),
]


def _average_of(answer: Callable[..., Any], per_rank: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    copies = [{k: v.clone() for k, v in g.items()} for g in per_rank]
    what = f"averaged_gradients(<{len(per_rank)} ranks>)"
    result = call(answer, per_rank)
    if not all(unchanged(g[k], c[k]) for g, c in zip(per_rank, copies, strict=True) for k in g):
        raise CheckFailed(f"{what} changed the gradients it was given (an in-place += or /=): each rank's "
                          "gradient is that rank's; compute the mean into new tensors")
    if isinstance(result, (list, tuple)):
        raise CheckFailed(f"{what} returned a {type(result).__name__}: return one dict {{name: tensor}}, "
                          "the gradient every rank holds after the all-reduce")
    if not isinstance(result, dict) or set(result) != set(per_rank[0]):
        raise CheckFailed(f"{what} returned {type(result).__name__} with keys "
                          f"{sorted(result) if isinstance(result, dict) else '-'}: return a dict with the same "
                          f"parameter names {sorted(per_rank[0])}")
    out = {}
    for name, value in result.items():
        tensor = torch.as_tensor(value.detach() if hasattr(value, "detach") else value).double()
        if tensor.shape != per_rank[0][name].shape:
            raise CheckFailed(f"{what}[{name!r}] has shape {tuple(tensor.shape)}: keep each gradient's shape "
                              f"{tuple(per_rank[0][name].shape)} (average over the ranks, not over entries)")
        out[name] = tensor
    return out


@checker("lab09.averaged_gradients")
def check_averaged_gradients(averaged_gradients: Callable[..., Any]) -> None:
    """``averaged_gradients(per_rank)``: a list of W dicts ``{name: gradient}`` (one per rank) -> one dict
    ``{name: mean over the ranks}``, for 2, 3 and 4 ranks."""
    results = {w: (_grads(w, w), _average_of(averaged_gradients, _grads(w, w))) for w in _WORLD_SIZES}
    close = lambda got, want: torch.allclose(got, want.double(), rtol=1e-5, atol=1e-6)  # noqa: E731
    if all(close(got[n], _stacked(given, n).mean(0)) for given, got in results.values() for n in got):
        passed("lab09.averaged_gradients")
        return
    for fault, diagnosis in _AVERAGE_FAULTS:
        if all(close(got[n], fault(given, n)) for given, got in results.values() for n in got):
            raise CheckFailed(diagnosis)
    w = next(w for w, (given, got) in results.items()
             if not all(close(got[n], _stacked(given, n).mean(0)) for n in got))
    given, got = results[w]
    raise CheckFailed(f"with {w} ranks, entry [0, 0] of 'w' is {got['w'][0, 0].item():.5f}; the mean over the "
                      f"ranks is {_stacked(given, 'w').mean(0)[0, 0].item():.5f} (rank values "
                      f"{[round(g['w'][0, 0].item(), 5) for g in given]})")


# --------------------------------------------------------------------------- lab09.should_log


def reference_should_log(env: dict[str, str], step: int, log_every: int, last_step: int) -> bool:
    """Global rank 0 (``RANK``; a run without torchrun has none: it is rank 0), at ``hooks.due`` steps."""
    return int(env.get("RANK", "0")) == 0 and due(log_every, step, last_step)


def _machines(nodes: int, per_node: int) -> list[dict[str, str]]:
    """The environment torchrun gives each rank of ``nodes`` machines with ``per_node`` ranks each."""
    return [{"RANK": str(node * per_node + local), "LOCAL_RANK": str(local),
             "WORLD_SIZE": str(nodes * per_node), "LOCAL_WORLD_SIZE": str(per_node)}
            for node in range(nodes) for local in range(per_node)]


_LOG_CASES = [(env, step, every, 10) for env in (*_machines(2, 2), {}) for every in (3, 0) for step in range(11)]

_LOG_FAULTS: list[tuple[Callable[..., bool], str]] = [
    (lambda e, s, k, last: due(k, s, last),
     "every rank writes: each step's points are doubled, from different rows. Write on global rank 0 only"),
    (lambda e, s, k, last: int(e.get("LOCAL_RANK", "0")) == 0 and due(k, s, last),
     "it tests LOCAL_RANK: on several machines every machine has a local rank 0, so each machine writes. "
     "Test the global RANK"),
    (lambda e, s, k, last: e.get("RANK") == 0 and due(k, s, last),
     "nobody writes: environment variables are strings, and RANK is '0', never the number 0"),
    (lambda e, s, k, last: int(e.get("RANK", "0")) == 0,
     "rank 0 writes at every step: keep the logging rule, hooks.due(log_every, step, last_step)"),
    (lambda e, s, k, last: int(e.get("RANK", "0")) == 0 and k > 0 and (s % k == 0),
     "it never writes at the last step: hooks.due also logs the last step"),
    (lambda e, s, k, last: int(e.get("RANK", "0")) == 0 and k > 0 and s > 0 and (s % k == 0 or s == last),
     "it skips step 0: hooks.due logs step 0, the first point of every curve"),
    (lambda e, s, k, last: int(e.get("RANK", "0")) == int(e.get("WORLD_SIZE", "1")) - 1 and due(k, s, last),
     "the last rank writes: by convention rank 0 does (it always exists, whatever the world size)"),
]


# This process's own environment during the check: first without torchrun's variables, then as rank 1 of 2.
# An answer that reads os.environ instead of its env argument answers differently in the two.
_TORCHRUN_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE")
_PROCESS_ENVIRONMENTS = ({}, {"RANK": "1", "LOCAL_RANK": "1", "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2"})


@contextlib.contextmanager
def _process_environment(values: dict[str, str]) -> Iterator[None]:
    """Set torchrun's variables in ``os.environ`` to ``values`` (the others unset), restore them after."""
    saved = {name: os.environ.get(name) for name in _TORCHRUN_VARIABLES}
    try:
        for name in _TORCHRUN_VARIABLES:
            os.environ.pop(name, None)
        os.environ.update(values)
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _should_log_answers(should_log: Callable[..., Any]) -> dict[int, bool]:
    """The answer's decision for each of ``_LOG_CASES``, by index; ``CheckFailed`` if it raises or does not
    return a bool."""
    answers = {}
    for index, (env, step, every, last) in enumerate(_LOG_CASES):
        what = f"should_log({env}, step={step}, log_every={every}, last_step={last})"
        try:
            got = call(should_log, dict(env), step, every, last)
        except CheckFailed as failure:
            hint = (" (a run started without torchrun has no RANK variable: it is the only process, rank 0)"
                    if not env else " (log_every = 0 means never: hooks.due handles it)" if every == 0 else "")
            raise CheckFailed(f"{failure}{hint}") from failure.__cause__
        if not isinstance(got, (bool, np.bool_)):
            raise CheckFailed(f"{what} returned {got!r} ({type(got).__name__}): return True or False")
        answers[index] = bool(got)
    return answers


@checker("lab09.should_log")
def check_should_log(should_log: Callable[..., Any]) -> None:
    """``should_log(env, step, log_every, last_step)``: whether this process writes at ``step``, given
    torchrun's environment variables ``env`` (a dict of strings; empty without torchrun)."""
    outcomes: list[dict[int, bool] | CheckFailed] = []
    for values in _PROCESS_ENVIRONMENTS:
        with _process_environment(values):
            try:
                outcomes.append(_should_log_answers(should_log))
            except CheckFailed as failure:
                outcomes.append(failure)
    answers, other = outcomes
    if isinstance(answers, CheckFailed) and isinstance(other, CheckFailed):
        raise answers
    if isinstance(answers, CheckFailed) or isinstance(other, CheckFailed) or answers != other:
        raise CheckFailed("it reads the process environment (os.environ) instead of the given `env`: the check "
                          "passes each simulated process's variables in env, and your answers changed when "
                          "only this process's own environment changed (no RANK, then RANK=1). Read RANK "
                          "from env")
    wrong = [i for i, got in answers.items() if got != reference_should_log(*_LOG_CASES[i])]
    if not wrong:
        passed("lab09.should_log")
        return
    for fault, diagnosis in _LOG_FAULTS:
        if all(answers[i] == bool(fault(*_LOG_CASES[i])) for i in answers):
            raise CheckFailed(diagnosis)
    env, step, every, last = _LOG_CASES[wrong[0]]
    raise CheckFailed(f"should_log({env}, step={step}, log_every={every}, last_step={last}) returned "
                      f"{answers[wrong[0]]}, expected {reference_should_log(env, step, every, last)}")


# --------------------------------------------------------------------------- lab09.all_reduce_gradients


def _close(got: torch.Tensor, want: torch.Tensor) -> bool:
    return got.shape == want.shape and torch.allclose(got.double(), want.double(), rtol=1e-4, atol=1e-7)


# Each fault: what every rank's gradient of every parameter is when the answer has it, from (what the ranks
# sent, the whole batch's gradients, world size, rank, parameter name).
_RANK_FAULTS: list[tuple[Callable[..., torch.Tensor], str]] = [
    (lambda s, m, w, r, n: w * m[n],
     "the gradients are W times the whole batch's (twice with 2 ranks, 3 times with 3): all_reduce sums over "
     "the ranks; divide the sum by the world size"),
    (lambda s, m, w, r, n: w / 2 * m[n],
     "it divides by a hard-coded 2: right with 2 ranks, 1.5 times too large with 3. Divide by the world size, "
     "which the process group knows"),
    (lambda s, m, w, r, n: m[n] if w == 2 else w * m[n],
     "it divides by the ranks of one machine (LOCAL_WORLD_SIZE): right with 2 ranks on one machine, 3 times too "
     "large with 3 ranks on 3 machines. Divide by the world size of the process group, all machines together"),
    (lambda s, m, w, r, n: m[n] / w,
     "the gradients are 1/W of the whole batch's: divided by the world size twice (an all-reduce with "
     "ReduceOp.AVG has divided already)"),
    (lambda s, m, w, r, n: s[w, 0].own[n],
     "every rank holds rank 0's own gradient: that is a broadcast, which copies one rank's gradient. "
     "all_reduce combines every rank's"),
]


def _kept_own(sent: dict[tuple[int, int], ranks.RankGradients]) -> str:
    """Why each rank still holds its own gradient: a return value, the weights averaged, or no collective."""
    returned = next((g.returned for g in sent.values() if g.returned), None)
    if returned:
        return (f"it returned a {returned} and left every parameter's .grad as it was: replace the gradients "
                "on the parameters themselves (the optimizer reads .grad, not what the function returns)")

    def reduced(w, n, got):  # the mean over the ranks of their weights, or their sum
        mean = torch.stack([sent[w, k].weights[n] for k in range(w)]).mean(0)
        return _close(got, mean) or _close(got, w * mean)

    if all(reduced(w, n, g.weights_after[n]) for (w, _), g in sent.items() for n in g.weights):
        return ("it all-reduced the weights (p.data, or the parameters themselves), not the gradients: each "
                "rank kept its own gradient. (The check gave each rank slightly different weights to see this; "
                "in DDP they are equal, and averaging them changes nothing.) Reduce each parameter's .grad")
    return ("each rank still holds its own gradient, of its own rows only: no collective changed .grad. "
            "All-reduce each parameter's gradient itself, in place: a reduced copy never reaches .grad")


_Sent = dict[tuple[int, int], ranks.RankGradients]  # {(world size, rank): what that rank sent back}


def _missing_gradient(sent: _Sent, whole: dict[str, torch.Tensor]) -> str | None:
    for (w, r), g in sent.items():
        for n, grad in g.grads.items():
            if grad is None or grad.shape != whole[n].shape:
                held = ("no gradient (.grad is None)" if grad is None
                        else f"a gradient of shape {tuple(grad.shape)}")
                return (f"with {w} ranks, rank {r}'s {n!r} has {held} after it: replace each gradient by its "
                        f"mean over the ranks, of the same shape {tuple(whole[n].shape)}")
    return None


def _gradient_fault(sent: _Sent, whole: dict[str, torch.Tensor]) -> str | None:
    """The fault of the gradients the ranks hold after the answer; None when every rank holds the whole
    batch's gradient and its weights are untouched."""
    missing = _missing_gradient(sent, whole)
    if missing:
        return missing

    def everywhere(target):
        return all(_close(g.grads[n], target(w, r, n)) for (w, r), g in sent.items() for n in whole)

    if everywhere(lambda w, r, n: whole[n]):
        moved = [n for g in sent.values() for n in g.weights
                 if not torch.equal(g.weights[n], g.weights_after[n])]
        return None if not moved else (f"the gradients are right, but it changed the weights ({moved[0]!r}): "
                                       "average the gradients only; the optimizer's step changes the weights")
    if everywhere(lambda w, r, n: sent[w, r].own[n]):
        return _kept_own(sent)
    if all(_close(g.grads[n], whole[n]) for (w, r), g in sent.items() for n in whole if r == 0):
        return ("only rank 0 holds the mean; the other ranks' gradients differ from it: a reduce sends the "
                "result to one rank, an all-reduce to every rank, and every rank's optimizer needs it")
    for fault, diagnosis in _RANK_FAULTS:
        if everywhere(lambda w, r, n, fault=fault: fault(sent, whole, w, r, n)):
            return diagnosis
    averaged = [n for n in whole if all(_close(g.grads[n], whole[n]) for g in sent.values())]
    kept = [n for n in whole if all(_close(g.grads[n], g.own[n]) for g in sent.values())]
    if averaged and len(averaged) + len(kept) == len(whole):
        return (f"only {len(averaged)} of the model's {len(whole)} parameters hold the mean; the others ("
                f"{', '.join(map(repr, kept[:3]))}{', ...' if len(kept) > 3 else ''}) still hold each rank's "
                "own gradient: average the gradient of every parameter of the model")
    (w, r), n = next(((w, r), n) for (w, r), g in sent.items() for n in whole
                     if not _close(g.grads[n], whole[n]))
    start = lambda t: [round(v, 6) for v in t.flatten()[:3].tolist()]  # noqa: E731
    return (f"with {w} ranks, rank {r}'s gradient of {n!r} starts {start(sent[w, r].grads[n])}; the whole "
            f"batch's starts {start(whole[n])} (that rank's own rows': {start(sent[w, r].own[n])})")


# 3 ranks as well as 2: they tell a hard-coded 2 from the world size; the 3 play 3 machines
# (ranks._environment), which tells one machine's ranks from the world's.
_RANK_WORLDS = (2, 3)


@checker("lab09.all_reduce_gradients")
def check_all_reduce_gradients(all_reduce_gradients: Callable[..., Any]) -> None:
    """``all_reduce_gradients(model)``, run in each rank of 2 and of 3 real processes (gloo on 127.0.0.1):
    after it, every rank's ``.grad`` must be the whole global batch's gradient, its weights unchanged."""
    sent = ranks.run_gradients(all_reduce_gradients, _RANK_WORLDS)
    fault = _gradient_fault(sent, ranks.whole_batch_gradients())
    if fault:
        raise CheckFailed(fault)
    passed("lab09.all_reduce_gradients")
