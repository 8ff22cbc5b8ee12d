"""Event files checked record by record, as TensorBoard frames them (TFRecord): an 8-byte little-endian data
length, the masked CRC-32C of those 8 bytes, the data, and the data's masked CRC-32C.

TensorBoard's loader reads a damaged file up to the damage and quietly drops the rest (it logs a warning
nobody sees), so a log cut short by a killed writer, or a file that is not a log at all, looks like a
shorter run. ``check_event_file`` says so instead, naming the file and the byte where the damage starts.
It checks every record's length and the checksum of that length, which catch a cut or a file of other
bytes, but not the data's checksum: TensorBoard's CRC-32C is pure Python here, seconds per megabyte.
"""

from __future__ import annotations

import io
import struct
from pathlib import Path

from utils.tb.errors import CorruptEventFileError

_HEADER = 12  # length (8 bytes) + its masked CRC (4 bytes)
_FOOTER = 4  # the data's masked CRC


def framing_problem(path: str | Path) -> str | None:
    """What is wrong with the record framing of event file ``path``, or ``None`` when every record is whole."""
    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c

    size = Path(path).stat().st_size
    if size == 0:
        return "it is empty (0 bytes), not even the record a writer starts a file with"
    offset = 0
    with open(path, "rb") as handle:
        while offset < size:
            header = handle.read(_HEADER)
            if len(header) < _HEADER:
                return (f"its last record is incomplete: {size - offset} bytes from byte {offset}, fewer than "
                        "a record header")
            length, length_crc = struct.unpack("<QI", header)
            if masked_crc32c(header[:8]) != length_crc:
                return (f"the record at byte {offset} has a damaged header (the checksum of its length does "
                        "not match): the file is corrupt, or not a TensorBoard event file")
            if offset + _HEADER + length + _FOOTER > size:
                return (f"its last record is incomplete: the record at byte {offset} needs "
                        f"{_HEADER + length + _FOOTER} bytes and the file ends {size - offset} bytes after it")
            offset = handle.seek(length + _FOOTER, io.SEEK_CUR)
    return None


def check_event_file(path: str | Path) -> None:
    """Raise ``CorruptEventFileError`` naming ``path``, the damage and what to do, unless every record of the
    event file is whole."""
    problem = framing_problem(path)
    if problem is not None:
        raise CorruptEventFileError(
            f"{path} cannot be read as a TensorBoard event file: {problem}. A writer killed mid-write, a copy "
            "cut short or a file of other bytes does this; TensorBoard would silently show only what comes "
            "before the damage. Move the file out of the log folder (or re-run what wrote it), then try again.")
