"""Guards for what a refactor of ``utils.tb`` breaks without a sound: each test fails on a one-line change
that the rest of the suite let through (named in its docstring).

- ``RunWriter`` flushes what was logged before it raises on a non-finite value (checked while the writer is
  still open: closing it flushes anyway, which hid a missing flush);
- ``RunWriter`` refuses a histogram holding inf, not only NaN;
- the read cache notices an event file that grew in place, and one rewritten with the same size;
- ``assert_logged`` rejects a step that appears twice, and a resumed segment (``open_segment``) purges the
  steps it writes again, so that none appears twice.
"""

from __future__ import annotations

import math
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from tensorboardX import SummaryWriter

from utils import checkpoint as ckpt
from utils import tb
from utils.loop import open_segment


@pytest.fixture()
def root(tmp_path):
    return tmp_path / "runs"


def _on_disk(run: Path, tag: str) -> list[int]:
    return tb.read_scalars(run, [tag]).step.tolist()


# --------------------------------------------------------------------------------------------- non-finite values


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_what_was_logged_is_on_disk_when_add_scalar_refuses_a_non_finite_value(root, bad):
    with tb.open_run("ch", "nan", root=root, flush_secs=600) as writer:
        run = Path(writer.logdir)
        for step in range(3):
            writer.add_scalar("loss", 1.0 / (step + 1), step)
        with pytest.raises(tb.NonFiniteScalarError):
            writer.add_scalar("loss", bad, 3)
        assert _on_disk(run, "loss") == [0, 1, 2]  # before the writer closes: the raise flushed them


def test_what_was_logged_is_on_disk_when_step_scalars_refuse_a_non_finite_value(root):
    with tb.open_run("ch", "nan_step", root=root, flush_secs=600) as writer:
        run = Path(writer.logdir)
        writer.add_step_scalars({"loss": 1.0, "lr": 0.1}, 0)
        with pytest.raises(tb.NonFiniteScalarError):
            writer.add_step_scalars({"loss": -math.inf, "lr": 0.1}, 1)
        assert _on_disk(run, "loss") == [0] and _on_disk(run, "lr") == [0]


@pytest.mark.parametrize("bad", [math.inf, -math.inf, math.nan])
def test_a_histogram_with_a_non_finite_value_is_refused(root, bad):
    values = torch.linspace(-1, 1, 50)
    values[17] = bad
    with tb.open_run("ch", "hist", root=root) as writer:
        writer.add_histogram("w", np.linspace(-1, 1, 50), 0)
        with pytest.raises(tb.NonFiniteScalarError, match="'w' at step 1"):
            writer.add_histogram("w", values, 1)
    assert tb.read_histograms(root / "ch" / "hist", "w").step.tolist() == [0]


# --------------------------------------------------------------------------------------------- the read cache


def _records(path: Path) -> list[bytes]:
    """The TFRecord frames of an event file: 8-byte length, 4-byte CRC, data, 4-byte CRC each."""
    data, frames, at = path.read_bytes(), [], 0
    while at < len(data):
        (length,) = struct.unpack("<Q", data[at:at + 8])
        end = at + 12 + length + 4
        frames.append(data[at:end])
        at = end
    return frames


def _one_event_file(folder: Path, values: list[float]) -> Path:
    """A plain tensorboardX event file with ``values`` at steps 0, 1, ... (no purge marker)."""
    with SummaryWriter(str(folder)) as writer:
        for step, value in enumerate(values):
            writer.add_scalar("x", value, step, walltime=1000.0 + step)
    (path,) = folder.glob("events.out.tfevents.*")
    return path


def test_the_read_cache_notices_a_file_that_grew_in_place(tmp_path):
    """Events appended to the same file (as a writer that flushes its buffer does) are read, even where the
    file's modification time did not change (a file system with coarse timestamps): its size did."""
    frames = _records(_one_event_file(tmp_path / "source", [1.0, 2.0, 3.0, 4.0]))
    assert len(frames) == 5  # the file-version record, then one per step
    run = tmp_path / "run"
    run.mkdir()
    path = run / "events.out.tfevents.1000.host.0000001.000000"
    path.write_bytes(b"".join(frames[:3]))
    assert tb.read_scalars(run).value.tolist() == [1.0, 2.0]
    stamp = path.stat().st_mtime_ns
    with open(path, "ab") as handle:
        handle.write(b"".join(frames[3:]))
    os.utime(path, ns=(stamp, stamp))
    assert path.stat().st_mtime_ns == stamp
    assert tb.read_scalars(run).value.tolist() == [1.0, 2.0, 3.0, 4.0]


def test_the_read_cache_notices_a_file_rewritten_with_the_same_size(tmp_path):
    """A file replaced by one of the same name and size but other values (its modification time changed)."""
    first = _one_event_file(tmp_path / "a", [1.0, 2.0])
    second = _one_event_file(tmp_path / "b", [5.0, 6.0])
    assert first.stat().st_size == second.stat().st_size
    run = tmp_path / "run"
    run.mkdir()
    path = run / "events.out.tfevents.1000.host.0000001.000000"
    path.write_bytes(first.read_bytes())
    os.utime(path, ns=(1_000_000_000, 1_000_000_000))
    assert tb.read_scalars(run).value.tolist() == [1.0, 2.0]
    path.write_bytes(second.read_bytes())
    os.utime(path, ns=(2_000_000_000, 2_000_000_000))
    assert tb.read_scalars(run).value.tolist() == [5.0, 6.0]


# --------------------------------------------------------------------------------------------- a step twice


def _twice(root: Path) -> Path:
    """Steps 0-4, then a second writer without a purge (as a resume that forgot it) writes steps 3-5 again."""
    with tb.open_run("ch", "twice", root=root, purge_step=0) as writer:
        for step in range(5):
            writer.add_scalar("loss", float(step), step)
            writer.add_histogram("w", np.arange(4.0) + step, step)
            writer.add_text("note", f"first {step}", step)
    with tb.open_run("ch", "twice", root=root, on_exists="append") as writer:
        for step in range(3, 6):
            writer.add_scalar("loss", 10.0 + step, step)
            writer.add_histogram("w", np.arange(4.0) - step, step)
    return root / "ch" / "twice"


def test_assert_logged_rejects_a_step_that_appears_twice(root):
    run = _twice(root)
    steps = tb.read_scalars(run, ["loss"]).step.tolist()
    assert steps == [0, 1, 2, 3, 3, 4, 4, 5]  # what the reader shows: 3 and 4 twice
    with pytest.raises(AssertionError, match=r"'loss'.*expected steps \[0, 1, 2, 3, 4, 5\], found 8 points"):
        tb.assert_logged(run, {"loss": list(range(6))})
    with pytest.raises(AssertionError, match="expected 6 points, found 8"):
        tb.assert_logged(run, {"loss": 6})
    with pytest.raises(AssertionError, match="'w'"):
        tb.assert_logged(run, {"w": list(range(6))})
    tb.assert_logged(run, {"loss": steps, "note": list(range(5))})  # what is there is accepted


def test_a_resumed_segment_purges_the_steps_it_writes_again(tmp_path):
    """``open_segment(resume_from=...)`` opens the run with the checkpoint's step as ``purge_step``: steps
    logged after the checkpoint by the interrupted segment are replaced, not doubled (counted here with
    ``read_scalars`` itself, not through ``assert_logged``)."""
    model = torch.nn.Linear(2, 1)
    checkpoint = ckpt.save_checkpoint(tmp_path / "step_000003.pt", model=model, step=3)
    runs = tmp_path / "runs"
    with open_segment("ch", "seg", root=runs) as writer:
        for step in range(5):  # interrupted after step 4, its last checkpoint at step 3
            writer.add_scalar("loss", float(step), step)
    with open_segment("ch", "seg", resume_from=checkpoint, root=runs) as writer:
        for step in range(3, 6):
            writer.add_scalar("loss", 10.0 + step, step)
    frame = tb.read_scalars(runs / "ch" / "seg", ["loss"])
    assert frame.step.tolist() == [0, 1, 2, 3, 4, 5]
    assert frame.value.tolist() == [0.0, 1.0, 2.0, 13.0, 14.0, 15.0]
