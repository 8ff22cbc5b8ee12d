"""Checkpoints that survive a crash: atomic save, safe load, clear errors.

``save_checkpoint`` writes the whole training state (model, optimizer, scheduler, step, the random number
generators of Python, NumPy and torch, and any extra plain data) to a temporary file in the same folder,
flushes it to disk, then renames it over the target with ``os.replace``: a process killed mid-save leaves
the previous checkpoint untouched. ``load_checkpoint`` reads with ``torch.load(weights_only=True)`` (no
arbitrary code runs from a file), so everything saved is tensors, numbers, strings, lists and dicts only.
A missing or unreadable file raises ``CheckpointNotFoundError`` / ``CheckpointCorruptError`` naming the path
and what to do; a file of a newer format ``CheckpointFormatError``; one written for another model or with
other settings ``CheckpointMismatchError`` (``check_same``, and ``load_checkpoint`` on a shape mismatch).

A model sharded over ranks (FSDP) is saved sharded instead: ``save_sharded`` and ``load_sharded``, with
``torch.distributed.checkpoint``, one file per rank, loadable on any number of ranks.
"""

from __future__ import annotations

import os
import random
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

FORMAT_VERSION = 1
_STEP_FILE = re.compile(r"^step_(\d+)\.pt$")


class CheckpointError(Exception):
    """Base class of the errors of this module."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """No checkpoint at the given path."""


class CheckpointCorruptError(CheckpointError):
    """The file exists but is not a readable checkpoint (truncated, overwritten, or not one of ours)."""


class CheckpointFormatError(CheckpointError):
    """The file was written in a newer checkpoint format than this code reads."""


class CheckpointMismatchError(CheckpointError, ValueError):
    """The checkpoint is readable but belongs to another run: another model's shape, other settings."""


# --------------------------------------------------------------------------------------------- RNG state


def rng_state() -> dict[str, Any]:
    """The state of Python's ``random``, NumPy's global generator and torch's CPU (and CUDA) generators, as
    tensors, numbers and lists only, so that ``torch.load(weights_only=True)`` can read it back."""
    version, internal, gauss_next = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": {"version": version, "state": torch.tensor(internal, dtype=torch.int64),
                   "gauss_next": gauss_next},
        "numpy": {"kind": str(kind), "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what ``rng_state`` returned."""
    python = state["python"]
    random.setstate((python["version"], tuple(int(v) for v in python["state"].tolist()), python["gauss_next"]))
    numpy = state["numpy"]
    np.random.set_state((numpy["kind"], numpy["keys"].numpy().astype(np.uint32), numpy["pos"],
                         numpy["has_gauss"], numpy["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# --------------------------------------------------------------------------------------------- save / load


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    """``torch.save(obj, path)`` made atomic: write ``<path>.tmp-<pid>`` in the same folder, fsync, then
    ``os.replace`` it over ``path`` (atomic on POSIX and Windows within one file system). On any error the
    temporary file is removed and ``path`` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as handle:
            torch.save(obj, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    try:  # make the rename itself durable (POSIX only)
        fd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return path
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
    return path


def save_checkpoint(path: str | Path, *, model: torch.nn.Module, step: int,
                    optimizer: torch.optim.Optimizer | None = None, scheduler: Any = None,
                    extra: dict[str, Any] | None = None, include_rng: bool = True) -> Path:
    """Save the training state to ``path`` atomically and return the path.

    step: the number of completed optimizer updates (= the first step a resumed run will execute).
    extra: plain data to keep with it (configs as dicts, the best validation loss, a tokenizer's dict...).
    """
    state: dict[str, Any] = {"format_version": FORMAT_VERSION, "step": int(step), "model": model.state_dict()}
    if optimizer is not None:
        state["optimizer"] = optimizer.state_dict()
    if scheduler is not None:
        state["scheduler"] = scheduler.state_dict()
    if include_rng:
        state["rng"] = rng_state()
    state["extra"] = dict(extra or {})
    return atomic_torch_save(state, path)


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """``torch.load(path, weights_only=True)``, tensors placed on ``map_location`` (the CPU by default:
    ``load_state_dict`` then copies them to wherever the model and the optimizer live), with clear errors for
    a missing or corrupt file."""
    path = Path(path)
    if not path.is_file():
        folder = path.parent
        others = sorted(p.name for p in folder.glob("*.pt")) if folder.is_dir() else []
        raise CheckpointNotFoundError(
            f"no checkpoint at {path}. " + (f"Checkpoints in {folder}: {others}. " if others else
                                            f"{folder} holds no .pt file. ")
            + "Train first (or pass the path of an existing checkpoint).")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        raise CheckpointCorruptError(
            f"cannot read checkpoint {path} ({path.stat().st_size} bytes): {type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:200] if str(exc) else ''}. The file is truncated or not a checkpoint "
            "written by utils.checkpoint; delete it and resume from the previous one "
            "(utils.checkpoint.latest_checkpoint lists them newest first and skips unreadable files).") from exc
    if not isinstance(state, dict) or "model" not in state or "step" not in state:
        raise CheckpointCorruptError(f"{path} is a torch file but not a training checkpoint (expected a dict with "
                                     f"'model' and 'step', found {type(state).__name__}"
                                     f"{' with keys ' + str(sorted(state)) if isinstance(state, dict) else ''})")
    version = state.get("format_version", 1)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointFormatError(
            f"{path} has checkpoint format {version!r}, newer than the {FORMAT_VERSION} this code reads: it was "
            "written by a newer version of the book. Update the repository (git pull) to resume from it, or "
            "start afresh without it.")
    return state


def load_checkpoint(path: str | Path, *, model: torch.nn.Module | None = None,
                    optimizer: torch.optim.Optimizer | None = None, scheduler: Any = None,
                    restore_rng: bool = True) -> dict[str, Any]:
    """Load ``path`` (weights_only) into the given objects and return the whole state dict
    (``step``, ``extra``, ...). Objects passed as ``None`` are left alone."""
    state = read_checkpoint(path)
    if model is not None:
        check_model_fits(path, state, model)
        model.load_state_dict(state["model"])
    if optimizer is not None:
        if "optimizer" not in state:
            raise CheckpointError(f"{path} holds no optimizer state (a weights-only checkpoint): it can "
                                  "initialise a model but not resume its training")
        optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None and "scheduler" in state:
        scheduler.load_state_dict(state["scheduler"])
    if restore_rng and "rng" in state:
        set_rng_state(state["rng"])
    return state


# --------------------------------------------------------------------------------------------- does it fit?

_START_AFRESH = "Resume with the settings it was written with, or start afresh (with another checkpoint folder)."


def _short(value: Any, limit: int = 48) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit - 3]}..."


def check_same(path: str | Path, what: str, saved: Any, current: Any, remedy: str = _START_AFRESH) -> None:
    """Raise ``CheckpointMismatchError`` when the ``what`` (e.g. "model settings", "tokenizer") recorded in
    checkpoint ``path`` differs from this run's, naming each differing field with both values."""
    if saved == current:
        return
    if isinstance(saved, dict) and isinstance(current, dict):
        differ = [f"{key} {_short(saved.get(key))} there, {_short(current.get(key))} here"
                  for key in sorted({*saved, *current}) if saved.get(key) != current.get(key)]
    else:
        differ = [f"{_short(saved)} there, {_short(current)} here"]
    raise CheckpointMismatchError(f"{path} was written with another {what} ({'; '.join(differ)}): this run "
                                  f"cannot continue from it. {remedy}")


def check_model_fits(path: str | Path, state: dict[str, Any], model: torch.nn.Module,
                     remedy: str = _START_AFRESH) -> None:
    """Raise ``CheckpointMismatchError`` when the weights in ``state`` do not fit ``model``: a parameter
    missing on either side, or of another shape (``load_state_dict`` would fail with a long error)."""
    saved = {name: tuple(t.shape) for name, t in state["model"].items() if torch.is_tensor(t)}
    here = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    problems = [f"{name} is {saved[name]} there, {here[name]} here"
                for name in here if name in saved and saved[name] != here[name]]
    problems += [f"{name} is missing there" for name in here if name not in saved]
    problems += [f"{name} is not in this model" for name in saved if name not in here]
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise CheckpointMismatchError(f"{path} holds the weights of another model: {'; '.join(problems[:3])}"
                                      f"{more}. {remedy}")


# --------------------------------------------------------------------------------------------- a folder of them


def step_path(directory: str | Path, step: int) -> Path:
    """``<directory>/step_<step, 6 digits>.pt``: names that sort by step."""
    return Path(directory) / f"step_{step:06d}.pt"


def list_checkpoints(directory: str | Path) -> list[Path]:
    """The ``step_*.pt`` files of ``directory``, oldest step first (temporary files are ignored)."""
    folder = Path(directory)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _STEP_FILE.match(p.name))]
    return [p for _, p in sorted(found)]


def latest_checkpoint(directory: str | Path) -> Path | None:
    """The newest *readable* ``step_*.pt`` of ``directory``, or ``None``. A corrupt newest file is skipped
    (with a warning) in favour of the one before it."""
    import warnings

    for path in reversed(list_checkpoints(directory)):
        try:
            read_checkpoint(path)
        except CheckpointCorruptError as exc:
            warnings.warn(str(exc), stacklevel=2)
            continue
        return path
    return None


def prune_checkpoints(directory: str | Path, keep: int) -> list[Path]:
    """Delete all but the newest ``keep`` step checkpoints; return the deleted paths."""
    if keep < 1:
        raise ValueError(f"keep must be >= 1, got {keep}")
    old = list_checkpoints(directory)[:-keep]
    for path in old:
        path.unlink(missing_ok=True)
    return old


# --------------------------------------------------------------------------------------------- sharded

SHARDED_INDEX = ".metadata"  # what torch.distributed.checkpoint writes last: which file holds which slice


def save_sharded(model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                 folder: str | Path) -> None:
    """Save a sharded (FSDP) model and its AdamW states with
    ``torch.distributed.checkpoint`` (DCP), called on every rank: each rank writes
    the slices it holds, ``__<rank>_0.distcp``, all at once, and rank 0 writes
    ``.metadata``, the index of which file holds which slice of which tensor. No
    rank gathers the whole model, which at scale would not fit in one process."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    # this rank's shards (DTensors), keyed by parameter name
    weights, states = get_state_dict(model, optimizer)
    dcp.save({"model": weights, "optimizer": states}, checkpoint_id=str(folder))


def load_sharded(model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                 folder: str | Path) -> None:
    """Load what ``save_sharded`` wrote into ``model`` and ``optimizer``, on any
    number of ranks: each process reads, from every rank's file, the slices its own
    tensors cover (in one process, all of them: the checkpoint is resharded as it
    loads). Called on every rank, or in one process."""
    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    if not (Path(folder) / SHARDED_INDEX).is_file():
        raise CheckpointNotFoundError(
            f"{folder} holds no sharded checkpoint (no {SHARDED_INDEX}, which "
            "torch.distributed.checkpoint writes last): give the folder save_sharded "
            "wrote, of a run that finished saving it")
    # the layout to fill, AdamW's states created
    weights, states = get_state_dict(model, optimizer)
    state = {"model": weights, "optimizer": states}
    one_process = not dist.is_initialized()
    with warnings.catch_warnings():
        # DCP warns that it loads "in a single process" when it does: that is the intent
        warnings.filterwarnings("ignore", "torch.distributed is disabled")
        dcp.load(state, checkpoint_id=str(folder), no_dist=one_process)
    set_state_dict(model, optimizer, model_state_dict=state["model"],
                   optim_state_dict=state["optimizer"])
