"""Running a reader's function in real processes, as the ranks of one ``torch.distributed`` process group:
for the checkers whose answer must call a collective, which one process cannot check.

``run_in_ranks(job, args, world_sizes)`` starts, for each world size W, W fresh Python processes on this
machine (each runs ``main``), each with the environment chapter 9's ranks get
(``torchrun.launch_env``: one thread each, gloo on the loopback interface, this repository importable)
plus ``MASTER_ADDR=127.0.0.1``, ``MASTER_PORT``, ``RANK`` and ``WORLD_SIZE``. Each joins a gloo process
group, runs ``job(*args)`` and sends back what it returned, or the exception it raised. Every world runs at
once; a rank still running after ``timeout`` seconds is killed and reported as such, so an answer that hangs
(a collective that another rank never calls) cannot hang the check.

The reader's function is defined in a notebook cell (module ``__main__``): the child processes cannot import
it by name, so ``job`` and ``args`` travel by value with ``cloudpickle`` (pinned in ``constraints.txt``),
which pickles a ``__main__`` function's code and the globals it uses, and anything importable by name.

``failure_in_words`` says how a launch went wrong (a rank that hung, raised or died). ``run_gradients``
is the job of a gradient exercise: in each rank, one small GPT (the same weights everywhere) back-propagates
that rank's rows of one global batch, then the reader's function runs on it (lab 9, ``all_reduce_gradients``).
"""

from __future__ import annotations

import contextlib
import datetime
import os
import pickle
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from utils.checks import CheckFailed
from utils.evaluation import lm_loss
from utils.gpt import GPT, GPTConfig

#: Seconds a whole launch may take before its ranks are killed: start-up included, on a busy machine (five
#: processes that each import torch take 5 s on two idle cores, 30 s on two cores shared with others).
TIMEOUT_S = 120
#: Seconds one collective waits for the other ranks before it fails (``init_process_group(timeout=...)``).
COLLECTIVE_TIMEOUT_S = 20


@dataclass
class RankOutcome:
    """How one rank ended: ``value`` (what ``job`` returned), or ``error`` (``"TypeError: message"``, with
    ``lines``: the ``(file, line, function)`` of each frame of its traceback), or ``timed_out`` (killed after
    the launch's timeout), or neither (the process died: ``exit_code`` and the end of its ``output``)."""

    rank: int
    world_size: int
    value: Any = None
    error: str | None = None
    lines: tuple[tuple[str, int, str], ...] = ()
    timed_out: bool = False
    exit_code: int | None = None
    output: str = ""

    @property
    def finished(self) -> bool:
        return self.error is None and not self.timed_out and self.exit_code == 0


class NotSendable(ValueError):
    """The job or its arguments cannot be pickled to travel to the ranks."""


def _environment(rank: int, world_size: int, port: int) -> dict[str, str]:
    """What torchrun gives a rank. Worlds of 2 ranks play one machine of 2; any other world plays one rank
    per machine (``LOCAL_RANK`` 0, ``LOCAL_WORLD_SIZE`` 1), as on a cluster, so that an answer which takes
    the number of ranks from the local variables is caught."""
    from utils.torchrun import launch_env

    local_rank, local_size = (rank, world_size) if world_size == 2 else (0, 1)
    return {**launch_env(), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
            "WORLD_SIZE": str(world_size), "LOCAL_RANK": str(local_rank), "LOCAL_WORLD_SIZE": str(local_size)}


def _outcome(folder: Path, rank: int, world_size: int, process: subprocess.Popen,
             timed_out: bool) -> RankOutcome:
    log = folder / f"{world_size}-{rank}.log"
    output = log.read_text(encoding="utf-8", errors="replace")[-2000:] if log.is_file() else ""
    outcome = RankOutcome(rank, world_size, timed_out=timed_out, exit_code=process.returncode, output=output)
    result = folder / f"{world_size}-{rank}.pickle"
    if not timed_out and result.is_file():
        with result.open("rb") as file:
            sent = pickle.load(file)  # written by this module's own child, in a folder of this process
        outcome.value, outcome.error, outcome.lines = sent["value"], sent["error"], sent["lines"]
    return outcome


def _wait(processes: dict[tuple[int, int], subprocess.Popen], timeout: float) -> set[tuple[int, int]]:
    """Wait for every process, at most ``timeout`` seconds in all; kill (by its id) each one still running
    then. Returns the keys of those killed."""
    deadline = time.monotonic() + timeout
    killed = set()
    for key, process in processes.items():
        try:
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            killed.add(key)
    return killed


def run_in_ranks(job: Callable[..., Any], args: tuple, world_sizes: Iterable[int],
                 timeout: float = TIMEOUT_S) -> dict[int, list[RankOutcome]]:
    """``{W: [outcome of rank 0, ..., rank W - 1]}``: ``job(*args)`` run in each rank of a gloo process group
    of W processes, for each W of ``world_sizes``, all at once. ``job`` and ``args`` must be picklable by
    ``cloudpickle``; what ``job`` returns, by ``pickle``."""
    import cloudpickle  # imported here: only a check that launches ranks needs it

    processes: dict[tuple[int, int], subprocess.Popen] = {}
    with tempfile.TemporaryDirectory(prefix="book-ranks-") as name:
        folder = Path(name)
        try:
            (folder / "job.pickle").write_bytes(cloudpickle.dumps((job, args)))
        except Exception as exc:  # an open file, a lock, a generator... among what the function uses
            raise NotSendable(f"the check cannot send your function to the ranks ({type(exc).__name__}: "
                              f"{exc}): it may use modules and other functions, not open files, locks or "
                              "threads") from exc
        # Each world meets at a store this process holds, on a port the system picks as it binds (port 0):
        # no port is chosen beforehand, so two checks at once cannot collide.
        stores = {w: dist.TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False,
                                   timeout=datetime.timedelta(seconds=timeout)) for w in world_sizes}
        try:
            for w, store in stores.items():
                for rank in range(w):
                    with (folder / f"{w}-{rank}.log").open("w") as log:
                        processes[w, rank] = subprocess.Popen(
                            [sys.executable, "-c", _RANK_MAIN, str(folder)],
                            env=_environment(rank, w, store.port), stdin=subprocess.DEVNULL, stdout=log,
                            stderr=subprocess.STDOUT)
            killed = _wait(processes, timeout)
        finally:
            _wait(processes, 0)  # an interrupted check leaves no rank running
        return {w: [_outcome(folder, r, w, processes[w, r], (w, r) in killed) for r in range(w)]
                for w in stores}


# --------------------------------------------------------------------------------------------- in words


_LEFT_BEHIND = ("Connection reset", "Connection closed", "Broken pipe")  # gloo's words when a peer has gone
_MISMATCH = ("size doesn't match", "size does not match")  # gloo's words for two shapes in one collective


def _in_words(outcome: RankOutcome, name: str) -> str:
    """What one rank's exception means, in words; ``name``: the reader's function."""
    error = outcome.error or ""
    if error.startswith("NotImplementedError"):
        return f"{name} is not implemented yet. Hint: {error.partition(': ')[2]}"
    if "ReduceOp.AVG" in error:
        return ("this torch's gloo, the CPU backend, has no ReduceOp.AVG (NCCL has): all-reduce with the "
                "default, a sum, then divide by the world size")
    if "process group twice" in error:
        return (f"{name} calls init_process_group: the check has already joined each rank to its process "
                "group, as chapter 9's script does before it trains. Use the group; do not start one")
    own = [f"line {line} in {function}" for file, line, function in outcome.lines
           if not (f"{os.sep}torch{os.sep}" in file or f"checks{os.sep}" in file)]
    where = f" ({own[-1]})" if own else ""
    return f"with {outcome.world_size} ranks, rank {outcome.rank}: {name} raised {error}{where}"


def failure_in_words(outcomes: dict[int, list[RankOutcome]], name: str) -> str | None:
    """What went wrong in ``run_in_ranks``'s ``outcomes``, in words: a rank that hung, raised (its own
    exception rather than the ones it caused in the ranks left waiting) or died; None when every rank
    returned. ``name``: the reader's function."""
    every = [outcome for world in outcomes.values() for outcome in world]
    mismatch = next((o for o in every if any(text in o.output + (o.error or "") for text in _MISMATCH)), None)
    if mismatch:
        return (f"with {mismatch.world_size} ranks, the ranks all-reduced tensors of different sizes at the same "
                "time (gloo stopped the run): every rank must visit the parameters in the same order, so that "
                "each collective gets the same parameter on every rank")
    stuck = [o for o in every if o.timed_out or "Timed out" in (o.error or "")]
    if stuck:
        seconds = TIMEOUT_S if stuck[0].timed_out else COLLECTIVE_TIMEOUT_S
        return (f"with {stuck[0].world_size} ranks, rank {stuck[0].rank} was still waiting in {name} after "
                f"{seconds} s and was stopped: it waits for a collective (or a message) that another rank "
                "never joins. Every rank must call the same collectives, in the same order, on tensors of the "
                "same shapes")
    errors = [o for o in every if o.error]
    first = next((o for o in errors if not any(text in o.error for text in _LEFT_BEHIND)), None)
    if first:
        return _in_words(first, name)
    if errors:
        left = errors[0]
        said = next(text for text in _LEFT_BEHIND if text in left.error)
        return (f"with {left.world_size} ranks, rank {left.rank} was left waiting in a collective that another "
                f"rank never called: that rank had returned, and gloo reported \"{said}\". Every rank must "
                "call the same collectives in the same order (none inside `if rank == 0`)")
    dead = next((o for o in every if not o.finished), None)
    if dead:
        return (f"with {dead.world_size} ranks, rank {dead.rank} stopped (exit code {dead.exit_code}) before "
                f"it could report; its last output:\n{dead.output[-800:]}")
    return None


# --------------------------------------------------------------------------------------------- in a rank


def _run_job(folder: Path) -> dict[str, Any]:
    """Join the process group of this rank's environment, run the job, say how it went."""
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world_size,
                          is_master=False, timeout=datetime.timedelta(seconds=TIMEOUT_S))
    dist.init_process_group("gloo", store=store, rank=rank, world_size=world_size,
                            timeout=datetime.timedelta(seconds=COLLECTIVE_TIMEOUT_S))
    try:
        with (folder / "job.pickle").open("rb") as file:
            job, args = pickle.load(file)
        return {"value": job(*args), "error": None, "lines": ()}
    except Exception as exc:  # the reader's code may raise anything: send it back in words
        frames = tuple((f.filename, f.lineno or 0, f.name) for f in traceback.extract_tb(exc.__traceback__))
        return {"value": None, "error": f"{type(exc).__name__}: {exc}", "lines": frames}
    finally:
        with contextlib.suppress(Exception):
            dist.destroy_process_group()


#: What each rank's ``python -c`` runs (see ``run_in_ranks``).
_RANK_MAIN = "import sys; from utils.checks.ranks import main; main(sys.argv[1:])"


def main(argv: list[str]) -> None:
    """The entry point of one rank, ``[FOLDER]``: the launch's folder (see ``run_in_ranks``)."""
    folder = Path(argv[0])
    sent = _run_job(folder)
    name = f"{os.environ['WORLD_SIZE']}-{os.environ['RANK']}.pickle"
    try:
        payload = pickle.dumps(sent)
    except Exception as exc:  # what the job returned cannot travel back
        payload = pickle.dumps({"value": None, "error": f"{type(exc).__name__}: {exc}", "lines": ()})
    (folder / name).write_bytes(payload)


# --------------------------------------------------------------------------------------------- gradients


# Each rank builds this GPT (the same weights everywhere) and back-propagates its own contiguous rows of one
# global batch of 6 windows (as ``distributed.shard_rows`` takes them), which splits evenly over 2 and 3 ranks.
_RANK_CONFIG = GPTConfig(vocab_size=13, block_size=8, n_layer=1, n_head=2, n_embd=8)
_RANK_ROWS = 6


def _rank_model_and_batch() -> tuple[GPT, tuple[torch.Tensor, torch.Tensor]]:
    with torch.random.fork_rng():  # leaves the caller's random state (the reader's kernel) as it was
        torch.manual_seed(0)
        model = GPT(_RANK_CONFIG)
    generator = torch.Generator().manual_seed(1)
    shape = (2, _RANK_ROWS, _RANK_CONFIG.block_size)  # inputs and targets
    batch = torch.randint(_RANK_CONFIG.vocab_size, shape, generator=generator)
    return model, (batch[0], batch[1])


def _gradients(model: GPT, rows: tuple[torch.Tensor, torch.Tensor]) -> dict[str, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    lm_loss(model, rows)[0].backward()
    return {name: p.grad.detach().clone() for name, p in model.named_parameters()}


def whole_batch_gradients() -> dict[str, torch.Tensor]:
    """``{name: gradient}`` of the whole global batch, in one process: what every rank must end up with."""
    model, batch = _rank_model_and_batch()
    return _gradients(model, batch)


@dataclass
class RankGradients:
    """What one rank holds before and after the answer ran: its own rows' gradients, its weights (moved by a
    different amount on each rank, so that averaging them shows), and what the answer returned."""

    own: dict[str, torch.Tensor]
    weights: dict[str, torch.Tensor]
    grads: dict[str, torch.Tensor | None]
    weights_after: dict[str, torch.Tensor]
    returned: str | None


def gradients_in_rank(answer: Callable[..., Any]) -> RankGradients:
    """The job of each rank (``run_in_ranks``): this rank's gradient of its rows, then the answer."""
    rank, world_size = dist.get_rank(), dist.get_world_size()
    model, batch = _rank_model_and_batch()
    size = _RANK_ROWS // world_size
    own = _gradients(model, tuple(t[rank * size:(rank + 1) * size] for t in batch))
    with torch.no_grad():  # in DDP the weights are equal on every rank; here they differ, harmlessly
        for parameter in model.parameters():
            parameter.add_(0.01 * (rank + 1))
    weights = {name: p.detach().clone() for name, p in model.named_parameters()}
    returned = answer(model)
    grads = {name: None if p.grad is None else p.grad.detach().clone() for name, p in model.named_parameters()}
    after = {name: p.detach().clone() for name, p in model.named_parameters()}
    return RankGradients(own, weights, grads, after, None if returned is None else type(returned).__name__)


def run_gradients(answer: Callable[..., Any],
                  world_sizes: Iterable[int]) -> dict[tuple[int, int], RankGradients]:
    """``{(W, rank): RankGradients}`` of ``answer`` (a function of the model) run in real ranks, W from
    ``world_sizes``; ``CheckFailed`` saying what went wrong when a rank did not return."""
    name = getattr(answer, "__qualname__", "the answer")
    try:
        outcomes = run_in_ranks(gradients_in_rank, (answer,), world_sizes)
    except NotSendable as exc:
        raise CheckFailed(str(exc)) from None
    failure = failure_in_words(outcomes, name)
    if failure:
        raise CheckFailed(failure)
    return {(w, o.rank): o.value for w, world in outcomes.items() for o in world}


def gradient_gaps(answer: Callable[..., Any], world_size: int = 2) -> list[dict[str, float]]:
    """Per rank of ``world_size`` real processes, the largest difference from the whole batch's gradient,
    over every entry of every parameter: of its own rows' gradient (``"own"``), and after the answer
    (``"averaged"``)."""
    sent = run_gradients(answer, (world_size,))
    whole = whole_batch_gradients()

    def gap(grads):
        return max((grads[n] - whole[n]).abs().max().item() for n in whole)

    return [{"own": gap(sent[world_size, r].own), "averaged": gap(sent[world_size, r].grads)}
            for r in range(world_size)]
