"""Showing runs: ``show(logdir)`` embeds live TensorBoard in JupyterLab or Colab, reusing the server already
running for that folder or starting one on a free port of 127.0.0.1, and draws the static plots instead when
executed headless (the book build, CI)."""

from __future__ import annotations

import os
import shlex
import socket
import sys
from collections.abc import Sequence
from pathlib import Path

from utils.tb.errors import RunNotFoundError
from utils.tb.plotting import plot_scalars
from utils.tb.reading import list_runs

HOST = "127.0.0.1"  # never 0.0.0.0: the logs stay on this machine


def is_live_notebook() -> bool:
    """True in an interactive JupyterLab/Notebook or Colab session; False when executed headless
    (nbmake, the book build, nbclient) or when ``BOOK_HEADLESS=1``."""
    if os.environ.get("BOOK_HEADLESS") == "1":
        return False
    return "google.colab" in sys.modules or "JPY_SESSION_NAME" in os.environ


def port_is_free(port: int) -> bool:
    """Whether a server could listen on ``127.0.0.1:port`` now."""
    with socket.socket() as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A port of 127.0.0.1 that no server listens on, chosen by the operating system."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def _is_serving(pid: int, port: int) -> bool:
    """Whether process ``pid`` exists and something accepts connections on ``127.0.0.1:port`` (a server that
    was stopped may stay a zombie process until its parent waits for it, but its port is closed)."""
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        pass
    try:
        with socket.create_connection((HOST, port), timeout=1):
            return True
    except OSError:
        return False


def running_server(logdir: str | Path):
    """The newest TensorBoard server of this machine that serves exactly ``logdir`` (given to it as an
    absolute path, as ``show`` does), as a ``tensorboard.manager.TensorBoardInfo`` (``.port``, ``.pid``), or
    None. Servers that stopped without removing their record are skipped."""
    from tensorboard import manager

    wanted = Path(logdir).resolve()
    for info in sorted(manager.get_all(), key=lambda info: info.start_time, reverse=True):
        served = Path(info.logdir) if info.logdir else None
        if served is not None and served.is_absolute() and served.resolve() == wanted and \
                _is_serving(info.pid, info.port):
            return info
    return None


def _show_live(logdir: Path, port: int | None) -> None:
    from tensorboard import notebook

    server = running_server(logdir)
    if server is not None and port in (None, server.port):
        notebook.display(port=server.port)
        return
    if port is None:
        port = free_port()
    elif not port_is_free(port):
        raise ValueError(f"port {port} of {HOST} is taken (`make tensorboard` holds 6006): call show() "
                         "without port= to use a free one")
    notebook.start(f"--logdir {shlex.quote(str(logdir))} --host {HOST} --port {port}")


def show(logdir: str | Path, tags: Sequence[str] | None = None, port: int | None = None,
         smoothing: float = 0.6):
    """Show the runs under ``logdir``: live TensorBoard embedded in JupyterLab or Colab; when executed
    headless (CI, the book build) the static equivalent, ``plot_scalars`` of every run found.

    Live, the server already serving ``logdir`` is reused; otherwise a new one starts on ``port``, or on a
    free port of 127.0.0.1 when ``port`` is None (6006 may be held by ``make tensorboard``), and
    ``tensorboard.notebook`` waits for it to answer (about 10 s). Headless, it never waits on a server.
    Returns the Figure when it plots, else None.
    """
    logdir = Path(logdir)
    if is_live_notebook():
        _show_live(logdir.resolve(), port)
        return None
    runs = list_runs(logdir)
    if not runs:
        raise RunNotFoundError(f"no runs under {logdir}: nothing has been logged there yet")
    labels = {str(p.relative_to(logdir)) if p != logdir else p.name: p for p in runs}
    return plot_scalars(labels, tags, smoothing=smoothing)
