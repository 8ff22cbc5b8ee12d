"""utils.tb.durable_flush against the installed tensorboardX: the private state a durable flush relies on is
still there and still does what it did. When tensorboardX changes it, these tests fail and say what changed."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import tensorboardX

from utils import tb
from utils.tb import durable_flush


def changed(what: str) -> str:
    return (f"tensorboardX {tensorboardX.__version__} changed SummaryWriter: {what}. RunWriter.flush relies on "
            "it (see utils/tb/durable_flush.py): rework it, or drop it if tensorboardX's own flush() now "
            "writes the events still queued.")


def read_events(path: Path) -> list:
    from tensorboard.backend.event_processing.event_file_loader import LegacyEventFileLoader

    return list(LegacyEventFileLoader(str(path)).Load())


def scalar_steps(events: list) -> list[int]:
    return [event.step for event in events if event.HasField("summary")]


def purge_markers(events: list) -> list[int]:
    return [event.step for event in events if event.HasField("session_log")]


def test_summary_writer_still_has_what_a_durable_flush_relies_on(tmp_path):
    writer = tensorboardX.SummaryWriter(str(tmp_path))
    try:
        missing = durable_flush.missing_internals(writer)
    finally:
        writer.close()
    assert not missing, changed(f"it has no {missing} any more")


def test_closing_the_file_writes_queued_events_and_the_next_file_takes_the_suffix(tmp_path):
    writer = tensorboardX.SummaryWriter(str(tmp_path), purge_step=0, filename_suffix=".first", flush_secs=120)
    writer.add_scalar("x", 1.0, 0)
    assert durable_flush.start_new_event_file(writer, ".second"), changed("all_writers is None while open")
    [first] = tmp_path.glob("*.first")
    assert scalar_steps(read_events(first)) == [0], changed("closing its FileWriters leaves events unwritten")
    assert purge_markers(read_events(first)) == [0], changed("purge_step no longer writes a purge marker")
    writer.add_scalar("x", 2.0, 1)
    writer.close()
    seconds = list(tmp_path.glob("*.second"))
    assert len(seconds) == 1, changed(f"a new event file is not named with _filename_suffix: "
                                      f"{sorted(p.name for p in tmp_path.iterdir())}")
    assert scalar_steps(read_events(seconds[0])) == [1], changed("events after a reopen go elsewhere")
    assert purge_markers(read_events(seconds[0])) == [], changed("a purge marker is written with purge_step None")
    assert not durable_flush.start_new_event_file(writer, ".third")  # closed: nothing left to write


def test_a_changed_tensorboardx_gets_a_clear_error_not_an_attribute_error():
    without_suffix = SimpleNamespace(all_writers=None, file_writer=None, purge_step=None,
                                     _get_file_writer=lambda: None)
    with pytest.raises(tb.TensorBoardXChangedError, match=r"no \['_filename_suffix'\].*durable_flush\.py"):
        durable_flush.start_new_event_file(without_suffix, ".0001")
