"""Where the book reads and writes: the repository root, ``runs/`` for TensorBoard logs, ``checkpoints/``.

Notebooks execute with their own folder as the working directory (nbmake, Jupyter Book), so paths are
resolved from the repository root, found by walking up from the working directory. On Colab, where there is
no repository, the working directory stands in for it. ``BOOK_RUNS_DIR`` and ``BOOK_CHECKPOINTS_DIR``
override both (tests use them to write into temporary folders).
"""

from __future__ import annotations

import os
from pathlib import Path

#: Files that together mark the book's repository root.
_ROOT_MARKERS = ("_toc.yml", "_config.yml")


def repo_root(start: Path | None = None) -> Path | None:
    """The nearest folder at or above ``start`` (default: the working directory) holding ``_toc.yml`` and
    ``_config.yml``, or ``None`` outside the repository (e.g. on Colab)."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if all((folder / marker).is_file() for marker in _ROOT_MARKERS):
            return folder
    return None


def _base() -> Path:
    return repo_root() or Path.cwd()


def _override(variable: str) -> Path | None:
    """The folder in environment variable ``variable``, or ``None`` when unset or empty; a ``ValueError``
    naming the variable when it points at something that is not a folder."""
    raw = os.environ.get(variable, "").strip()
    if not raw:
        return None
    path = Path(raw).expanduser().resolve()
    if path.exists() and not path.is_dir():
        raise ValueError(f"{variable}={raw!r} is not allowed: it points at a file, not a folder. Point it at a "
                         "folder (created when missing), or unset it to use the repository's own.")
    return path


def runs_dir() -> Path:
    """The root of all TensorBoard logs: ``$BOOK_RUNS_DIR``, else ``<repo>/runs``. Not created here."""
    return _override("BOOK_RUNS_DIR") or _base() / "runs"


def checkpoints_dir() -> Path:
    """The folder for model checkpoints: ``$BOOK_CHECKPOINTS_DIR``, else ``<repo>/checkpoints``. Not created."""
    return _override("BOOK_CHECKPOINTS_DIR") or _base() / "checkpoints"
