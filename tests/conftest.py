"""Fixtures shared by the test modules: a real TensorBoard server on 127.0.0.1. And, with ``CI=true``, a
skipped test fails the session."""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from utils.tb import showing

STARTUP_TIMEOUT_S = 90


class TensorBoardServer:
    """``tensorboard --logdir LOGDIR --host 127.0.0.1 --port PORT`` on a free port, stopped by its PID
    (``utils.tb.showing.start_server``)."""

    def __init__(self, logdir: Path, load_fast: bool, log_path: Path) -> None:
        self.log_path = log_path
        self.port, self.process = showing.start_server(
            logdir, log_path, f"--load_fast={'true' if load_fast else 'false'}", "--reload_interval", "1")

    def get_json(self, route: str):
        return showing.get_json(self.port, route)

    def wait_until_ready(self, run: str, tag: str) -> None:
        def serves_the_tag() -> bool | None:
            return (run in self.get_json("/data/runs") and bool(self.scalars(run, tag))) or None

        if showing.wait_for_server(self.process, serves_the_tag, STARTUP_TIMEOUT_S, self.log_path) is None:
            raise TimeoutError(f"tensorboard did not serve {run}/{tag} within {STARTUP_TIMEOUT_S} s")

    def scalars(self, run: str, tag: str) -> list[list[float]]:
        """The scalars route: ``[[wall_time, step, value], ...]``."""
        query = urllib.parse.urlencode({"run": run, "tag": tag})
        return self.get_json(f"/data/plugin/scalars/scalars?{query}")

    def stop(self) -> int:
        """Stop the server (again: a no-op) and return its exit status."""
        return showing.stop_server(self.process)


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


# --------------------------------------------------------------------------------------------- CI: no skips

_skipped: list[str] = []


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("true", "1")


def pytest_runtest_logreport(report) -> None:
    if report.skipped and not hasattr(report, "wasxfail"):
        _skipped.append(report.nodeid)


def pytest_terminal_summary(terminalreporter) -> None:
    if _in_ci() and _skipped:
        terminalreporter.write_line(f"CI=true: {len(_skipped)} skipped test(s) fail the run (a skip hides a broken "
                                    f"install or a check that no longer runs): {', '.join(_skipped[:20])}", red=True)


def pytest_sessionfinish(session, exitstatus) -> None:
    """With ``CI=true`` a skipped test fails the session: every package the tests import is pinned, so a skip
    means something that should run did not."""
    if _in_ci() and _skipped and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
