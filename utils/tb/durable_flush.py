"""A flush that puts every logged event on disk: the one place ``utils.tb`` relies on tensorboardX's private
state.

Why it exists: tensorboardX's ``SummaryWriter.flush()`` flushes the event file but not the queue that its
writer thread drains (measured with tensorboardX 2.6.5: ``add_scalar`` then ``flush()`` left the file as it
was), so a crash right after a flush loses events. Closing the event file drains that queue; the writer then
has to go on in a new event file, which only tensorboardX's own state can arrange. What this module relies
on, all read by ``SummaryWriter._get_file_writer()``, which every ``add_*`` call makes:

- ``all_writers`` and ``file_writer``: the open ``FileWriter`` objects. Set to ``None``, the next call opens a
  new event file.
- ``_filename_suffix``: the end of that new file's name. tensorboardX names files by the second, so a file
  reopened within the same second would take the same name and overwrite the first.
- ``purge_step``: when not ``None``, a purge marker is written at the head of each new file. Written again, it
  would hide what the writer logged before, so it must stay in the run's first file only.

``tests/test_tb_durable_flush.py`` checks each of these against the installed tensorboardX and fails with a
message naming what changed.
"""

from __future__ import annotations

from typing import Any

from utils.tb.errors import TensorBoardXChangedError

#: Each attribute of a ``SummaryWriter`` that ``start_new_event_file`` reads or sets, and what it is for.
RELIED_ON = {
    "all_writers": "the open FileWriters by folder; None makes _get_file_writer open a new event file",
    "file_writer": "the default FileWriter; None together with all_writers",
    "_filename_suffix": "the suffix of the next event file's name, read by _get_file_writer",
    "purge_step": "a purge marker _get_file_writer writes at the head of each new event file unless None",
    "_get_file_writer": "opens a new event file when all_writers is None (every add_* call makes it)",
}


def missing_internals(writer: Any) -> list[str]:
    """The names in ``RELIED_ON`` that ``writer`` (a tensorboardX ``SummaryWriter``) lacks."""
    return [name for name in RELIED_ON if not hasattr(writer, name)]


def start_new_event_file(writer: Any, filename_suffix: str) -> bool:
    """Close ``writer``'s event files, which writes every queued event to disk, and make its next event open
    a new file in the same run, named with ``filename_suffix`` and without a purge marker.

    Returns False, and does nothing, when no event file is open (nothing was logged since the last call).
    Raises ``TensorBoardXChangedError`` when the installed tensorboardX lacks what this relies on.
    """
    missing = missing_internals(writer)
    if missing:
        import tensorboardX

        uses = "; ".join(f"{name}: {RELIED_ON[name]}" for name in missing)
        raise TensorBoardXChangedError(
            f"tensorboardX {tensorboardX.__version__}'s SummaryWriter has no {missing}, which a durable "
            f"flush relies on ({uses}). Install the tensorboardX version in requirements.txt, or rework "
            "utils/tb/durable_flush.py for this one.")
    if writer.all_writers is None:
        return False
    for file_writer in writer.all_writers.values():
        file_writer.close()  # waits until its writer thread has written every queued event
    writer.file_writer = writer.all_writers = None
    writer.purge_step = None
    writer._filename_suffix = filename_suffix
    return True
