"""Showing runs: ``show(logdir)`` embeds live TensorBoard in JupyterLab or Colab, reusing the server already
running for that folder or starting one on a free port of 127.0.0.1, and draws the static plots instead when
executed headless (the book build, CI).

For programs that drive a server themselves (the screenshots, the tests): ``start_server`` on a port the
system picks,
``wait_for_server`` until it answers what they need, ``get_json`` of a route, ``stop_server``.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from utils.tb.errors import RunNotFoundError
from utils.tb.plotting import plot_scalars
from utils.tb.reading import list_runs

HOST = "127.0.0.1"  # never 0.0.0.0: the logs stay on this machine
T = TypeVar("T")


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


def start_server(logdir: str | Path, log_path: str | Path, *options: str) -> tuple[int, subprocess.Popen]:
    """``tensorboard --logdir LOGDIR --host 127.0.0.1 --port 0 OPTIONS...``: this environment's tensorboard
    whatever PATH says, its output into ``log_path``, in a process group of its own (``stop_server`` stops
    everything it started). Port 0: the operating system picks a free port as the server binds, so no other
    program can take it in between, as it could a port chosen beforehand while the server starts. Returns
    ``(port, process)`` once the server has said where it listens; see ``wait_for_server`` for its data."""
    tensorboard = Path(sys.executable).with_name("tensorboard")
    with open(log_path, "wb") as log:  # the server keeps its own handle
        process = subprocess.Popen(
            [str(tensorboard), "--logdir", str(Path(logdir).resolve()), "--host", HOST, "--port", "0",
             *options], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    return listening_port(process, log_path), process


SERVING_LINE = re.compile(rb"TensorBoard \S+ at http://[^/]+:(\d+)/")  # what tensorboard prints once bound


def listening_port(process: subprocess.Popen, log_path: str | Path, timeout_s: float = 120) -> int:
    """The port a server started with ``--port 0`` listens on, read from its serving line in its log."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = SERVING_LINE.search(Path(log_path).read_bytes())
        if found:
            return int(found.group(1))
        if process.poll() is not None:
            raise RuntimeError(exit_message(process, log_path))
        time.sleep(0.2)
    stop_server(process)
    raise RuntimeError(f"tensorboard did not start serving within {timeout_s:.0f} s (a very busy machine?); "
                       f"{log_tail(log_path)}")


def log_tail(log_path: str | Path, lines: int = 15) -> str:
    """The end of a server's log, for an error message (the log may be in a folder removed afterwards)."""
    try:
        text = Path(log_path).read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return f"its log {log_path} cannot be read"
    return f"the end of its log {log_path}:\n" + "\n".join(text)


def exit_message(process: subprocess.Popen, log_path: str | Path) -> str:
    return f"tensorboard exited with status {process.returncode}; {log_tail(log_path)}"


def get_json(port: int, route: str) -> Any:
    """GET ``http://127.0.0.1:PORT/ROUTE`` and decode its JSON body."""
    with urllib.request.urlopen(f"http://{HOST}:{port}{route}", timeout=10) as response:
        return json.loads(response.read())


def wait_for_server(process: subprocess.Popen, ready: Callable[[], T | None], timeout_s: float,
                    log_path: str | Path) -> T | None:
    """Call ``ready()`` (which asks the server what it needs, e.g. ``get_json(port, "/data/runs")``) until it
    returns something other than None, and return that; None once ``timeout_s`` have passed. A server that
    does not answer yet counts as not ready; one that has exited raises ``RuntimeError`` naming its log."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(exit_message(process, log_path))
        try:
            found = ready()
        except (urllib.error.URLError, ConnectionError, TimeoutError, json.JSONDecodeError):
            found = None  # still starting: refused, or an answer cut short
        if found is not None:
            return found
        time.sleep(0.5)
    return None


def stop_server(process: subprocess.Popen) -> int:
    """Stop a server ``start_server`` started, its whole process group (SIGTERM, then SIGKILL after 15 s);
    return its exit status. Stopping it again does nothing."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=15)
    return process.returncode


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
    if port is not None and not port_is_free(port):
        raise ValueError(f"port {port} of {HOST} is taken (`make tensorboard` holds 6006): call show() "
                         "without port= to use a free one")
    # port 0: the system picks a free one as the server binds (start_server says why); tensorboard's
    # notebook reads the port the server then records
    notebook.start(f"--logdir {shlex.quote(str(logdir))} --host {HOST} --port {port or 0}")


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
