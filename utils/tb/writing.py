"""Writing runs: ``open_run(chapter, run)`` yields a ``RunWriter`` (a tensorboardX
``SummaryWriter``) on its own directory ``runs/<chapter>/<run>``, with hyper-parameters
recorded in the run itself, and flushes and closes it on exit, even when the block
raises."""

from __future__ import annotations

import itertools
import math
import os
import re
import shutil
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import numpy as np
from tensorboardX import SummaryWriter

from utils.paths import runs_dir
from utils.tb import durable_flush
from utils.tb.errors import LogDirNotWritableError, NonFiniteScalarError, RunInUseError

_NAME = re.compile(r"^[\w.=+-]+$")
_OPEN_RUN_DIRS: set[Path] = set()
_writer_serial = itertools.count()


def _to_numpy(values: Any) -> np.ndarray:
    """A torch tensor (any dtype, any device, bf16 included), TF tensor, list or scalar
    -> float64 array."""
    # torch: bf16 has no numpy dtype, so cast on the torch side first
    if hasattr(values, "detach"):
        values = values.detach().float().cpu().numpy()
    # TensorFlow eager tensor
    elif hasattr(values, "numpy") and not isinstance(values, np.ndarray):
        values = values.numpy()
    return np.asarray(values, dtype=np.float64)


class RunWriter(SummaryWriter):
    """A tensorboardX ``SummaryWriter`` that refuses non-finite scalars, takes tensors
    of any framework and flushes for real.

    ``add_scalar`` raises ``NonFiniteScalarError`` for NaN or inf (after flushing what
    was already logged), unless the writer was created with ``allow_non_finite=True``
    (for chapters that log a divergence on purpose). ``add_histogram`` defaults to 64
    equal-width bins: the tensorboardX default ('tensorflow', about 1,500 exponential
    buckets) costs about 85 ms per million values on a 2-core CPU.
    """

    def __init__(self, logdir: str | Path, *, allow_non_finite: bool = False, **kwargs: Any) -> None:
        super().__init__(logdir=str(logdir), **kwargs)
        self.allow_non_finite = allow_non_finite
        self._base_suffix = kwargs.get("filename_suffix", "")
        self._file_serial = 0

    def flush(self) -> None:
        """Write every event logged so far to disk before returning, so that a crash
        right after it (as before a checkpoint) loses nothing.

        tensorboardX's own ``flush`` leaves queued events unwritten; this one closes the
        event file instead (see ``utils.tb.durable_flush``) and logging goes on in a new
        event file of the same run, named to sort after it. Both TensorBoard loaders
        read a run's files as one.
        """
        next_suffix = f"{self._base_suffix}.{self._file_serial + 1:06d}"
        if durable_flush.start_new_event_file(self, next_suffix):
            self._file_serial += 1

    def add_scalar(self, tag: str, scalar_value: Any, global_step: int | None = None,
                   walltime: float | None = None, **kwargs: Any) -> None:
        super().add_scalar(tag, self._checked(tag, scalar_value, global_step), global_step, walltime, **kwargs)

    def add_step_scalars(self, values: Mapping[str, Any], global_step: int) -> None:
        """Several scalars of one step, written as one event: each tag reads back
        exactly as ``add_scalar`` would have written it, but the step costs one trip
        through tensorboardX's queue instead of one per tag (about 0.15 ms each on a
        2-core CPU: the queue is a ``multiprocessing.Queue``). The training loop writes
        its per-update scalars this way. Non-finite values are refused as by
        ``add_scalar``, before anything of the step is written."""
        from tensorboardX.proto.summary_pb2 import Summary
        from tensorboardX.summary import scalar

        checked = {tag: self._checked(tag, value, global_step)
                   for tag, value in values.items()}
        # tensorboardX's own scalar summaries, tags cleaned as add_scalar cleans them
        if checked:
            parts = [part for tag, value in checked.items()
                     for part in scalar(tag, value).value]
            self._get_file_writer().add_summary(Summary(value=parts), global_step)

    def _checked(self, tag: str, scalar_value: Any, global_step: int | None) -> float:
        """The one number in ``scalar_value``; raises for several numbers, or for a
        non-finite one unless the writer allows it (after flushing what was already
        logged)."""
        array = _to_numpy(scalar_value)
        if array.size != 1:
            raise ValueError(f"add_scalar({tag!r}) needs one number, got shape {array.shape}; "
                             "log a mean (`.mean()`) or use add_histogram for many values")
        value = float(array.reshape(-1)[0])
        if not math.isfinite(value) and not self.allow_non_finite:
            self.flush()
            raise NonFiniteScalarError(
                f"{tag!r} is {value} at step {global_step}. The values logged before it are saved in "
                f"{self.logdir}. A NaN or inf loss usually means the learning rate is too high or the inputs "
                "are not normalised: lower the learning rate, clip gradients, check the data. To log it "
                "anyway, open the run with allow_non_finite=True.")
        return value

    def add_histogram(self, tag: str, values: Any, global_step: int | None = None, bins: Any = 64,
                      walltime: float | None = None, max_bins: int | None = None) -> None:
        array = _to_numpy(values)
        if not np.all(np.isfinite(array)):
            raise NonFiniteScalarError(f"histogram {tag!r} at step {global_step} contains NaN or inf values")
        super().add_histogram(tag, array, global_step, bins=bins, walltime=walltime, max_bins=max_bins)

    def add_hparams_here(self, hparams: Mapping[str, Any]) -> None:
        """Record hyper-parameters in *this* run (``add_hparams`` would create a child
        run), as a session start: the HParams dashboard lists the run with these values.

        No experiment summary: TensorBoard takes the first one it finds under the folder
        it serves and shows only its columns, so tensorboardX's one per run hides every
        other run's hyper-parameters. Without any, the dashboard builds its columns from
        all the runs it serves: the union of their hyper-parameters, and every scalar
        tag they log as a metric.
        """
        from tensorboardX.summary import hparams as hparams_summaries

        clean = {k: (v if isinstance(v, (bool, int, float, str)) else str(v)) for k, v in hparams.items()}
        _experiment, session_start, session_end = hparams_summaries(clean, {})
        for summary in (session_start, session_end):
            self._get_file_writer().add_summary(summary)


def run_path(chapter: str, run: str, root: str | Path | None = None) -> Path:
    """``<root>/<chapter>/<run>``, ``root`` defaulting to ``utils.paths.runs_dir()``;
    names are checked."""
    for label, name in (("chapter", chapter), ("run", run)):
        if not _NAME.match(name) or name in {".", ".."}:
            raise ValueError(f"{label} name {name!r} must be letters, digits, '_', '-', '.', '=' or '+' "
                             "(no slashes): it becomes a folder name")
    return Path(root if root is not None else runs_dir()) / chapter / run


def _prepare_dir(path: Path, on_exists: str) -> None:
    if on_exists not in ("replace", "append", "error"):
        raise ValueError(f"on_exists must be 'replace', 'append' or 'error', got {on_exists!r}")
    if on_exists == "error" and path.is_dir() and any(path.iterdir()):
        raise FileExistsError(f"run directory {path} already holds files; choose another run name, "
                              "or open it with on_exists='replace' or 'append'")
    try:
        if on_exists == "replace" and path.is_dir():
            shutil.rmtree(path)
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise LogDirNotWritableError(
            f"cannot write TensorBoard logs to {path}: {exc.strerror or exc}. Point the book at a writable "
            "folder with the environment variable BOOK_RUNS_DIR (or pass root=...).") from exc


@contextmanager
def open_run(chapter: str, run: str, *, hparams: Mapping[str, Any] | None = None,
             on_exists: Literal["replace", "append", "error"] = "replace",
             purge_step: int | None = None, root: str | Path | None = None, flush_secs: int = 10,
             allow_non_finite: bool = False) -> Iterator[RunWriter]:
    """Open ``runs/<chapter>/<run>`` for writing and yield a ``RunWriter``; flush and
    close it on exit.

    on_exists: what to do with an earlier run of the same name: ``"replace"`` (default: re-executing a
        notebook replaces its runs instead of piling up copies), ``"append"`` (resume; pass ``purge_step``
        = the first step to be written again) or ``"error"``.
    hparams: recorded in this run for the HParams dashboard (see ``add_hparams_here``).
    The event file name carries the process id and a per-process serial number, so two writers that open the
    same directory within one second (tensorboardX names files by the second) never overwrite each other;
    both are zero-padded, so that a later writer's file sorts after an earlier one's.
    """
    path = run_path(chapter, run, root).resolve()
    if path in _OPEN_RUN_DIRS:
        raise RunInUseError(f"{path} is already open in this process; close that writer first (leave its "
                            "`with` block) or use another run name")
    _prepare_dir(path, on_exists)
    # zero-padded: the loaders order a run's files by name, and ".10" would sort before
    # ".9"
    suffix = f".{os.getpid():07d}.{next(_writer_serial):06d}"
    writer = RunWriter(path, purge_step=purge_step, flush_secs=flush_secs, filename_suffix=suffix,
                       allow_non_finite=allow_non_finite)
    _OPEN_RUN_DIRS.add(path)
    try:
        if hparams:
            writer.add_hparams_here(hparams)
        yield writer
    finally:
        _OPEN_RUN_DIRS.discard(path)
        writer.close()
