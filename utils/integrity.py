"""Files the book ships, checked before use: the SHA-256 of a file against the one recorded for it."""

from __future__ import annotations

import hashlib
from pathlib import Path


class IntegrityError(ValueError):
    """A file's SHA-256 is not the one recorded for it: modified, truncated, or another file."""


def sha256_file(path: str | Path) -> str:
    """The hex SHA-256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_sha256(path: str | Path, expected: str, remedy: str) -> str:
    """Return the file's SHA-256 if it is ``expected``; otherwise raise ``IntegrityError`` naming both
    hashes and ``remedy`` (what to do: restore the file, regenerate it...)."""
    actual = sha256_file(path)
    if actual != expected.lower():
        raise IntegrityError(f"{path} has SHA-256 {actual}, but {expected} was recorded for it: the file was "
                             f"modified or truncated, or is another file. {remedy}")
    return actual
