"""Fixtures shared by the test modules: a real TensorBoard server on 127.0.0.1."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

STARTUP_TIMEOUT_S = 90
TENSORBOARD = Path(sys.executable).with_name("tensorboard")  # the venv's, whatever PATH says


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get_json(port: int, route: str):
    """GET ``http://127.0.0.1:PORT/ROUTE`` and decode its JSON body."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{route}", timeout=10) as response:
        return json.loads(response.read())


class TensorBoardServer:
    """``tensorboard --logdir LOGDIR --host 127.0.0.1 --port PORT`` on a free port, stopped by its PID."""

    def __init__(self, logdir: Path, load_fast: bool, log_path: Path) -> None:
        self.port = _free_port()
        self.log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [str(TENSORBOARD), "--logdir", str(logdir), "--host", "127.0.0.1", "--port", str(self.port),
             f"--load_fast={'true' if load_fast else 'false'}", "--reload_interval", "1"],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)

    def get_json(self, route: str):
        return _get_json(self.port, route)

    def wait_until_ready(self, run: str, tag: str) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"tensorboard exited with {self.process.returncode}; see {self.log.name}")
            try:
                if run in self.get_json("/data/runs") and self.scalars(run, tag):
                    return
            except (urllib.error.URLError, ConnectionError, TimeoutError, json.JSONDecodeError):
                pass
            time.sleep(0.5)
        raise TimeoutError(f"tensorboard did not serve {run}/{tag} within {STARTUP_TIMEOUT_S} s")

    def scalars(self, run: str, tag: str) -> list[list[float]]:
        """The scalars route: ``[[wall_time, step, value], ...]``."""
        query = urllib.parse.urlencode({"run": run, "tag": tag})
        return self.get_json(f"/data/plugin/scalars/scalars?{query}")

    def stop(self) -> int:
        """Stop the server (again: a no-op) and return its exit status."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=15)
        self.log.close()
        return self.process.returncode


@pytest.fixture()
def tensorboard_server(tmp_path) -> Iterator[Callable[..., TensorBoardServer]]:
    """A function ``(logdir, load_fast=True) -> TensorBoardServer`` that starts a real TensorBoard server on a
    free port of 127.0.0.1; every server it started is stopped when the test ends, passed or failed."""
    started: list[TensorBoardServer] = []

    def start(logdir: Path, load_fast: bool = True) -> TensorBoardServer:
        log = tmp_path / f"tensorboard-{len(started)}-{'rust' if load_fast else 'python'}.log"
        started.append(TensorBoardServer(logdir, load_fast, log))
        return started[-1]

    yield start
    for server in started:
        server.stop()
