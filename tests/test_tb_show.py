"""tb.show: live, it never takes port 6006 from `make tensorboard`: it reuses the server
already serving the same folder, or starts one on a free port of 127.0.0.1."""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from utils import tb
from utils.tb import showing

MAKE_TENSORBOARD_PORT = 6006


@pytest.fixture()
def port_6006_held() -> Iterator[None]:
    """127.0.0.1:6006 taken, as by `make tensorboard` (already taken by another program: fine too)."""
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", MAKE_TENSORBOARD_PORT))
            sock.listen(1)
        except OSError:
            pass  # someone else holds it: just as good
        yield


@pytest.fixture()
def live(monkeypatch, tmp_path) -> Iterator[Path]:
    """A live notebook session (as JupyterLab sets it) and a run to show; yields the folder of runs, and
    stops every server that the test started for it."""
    monkeypatch.delenv("BOOK_HEADLESS", raising=False)
    monkeypatch.setenv("JPY_SESSION_NAME", "test")
    monkeypatch.setenv("TENSORBOARD_BINARY", str(Path(sys.executable).with_name("tensorboard")))
    with tb.open_run("ch", "shown", root=tmp_path / "runs") as writer:
        writer.add_scalar("loss", 1.0, 0)
    assert tb.is_live_notebook()
    yield tmp_path / "runs"
    while (server := showing.running_server(tmp_path / "runs")) is not None:
        _stop(server, tmp_path / "runs")


def _stop(server, logdir: Path) -> None:
    """SIGTERM to a server this test started through ``show``, then wait until it no longer serves."""
    os.kill(server.pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and showing.running_server(logdir) == server:
        time.sleep(0.2)
    if showing.running_server(logdir) == server:
        os.kill(server.pid, signal.SIGKILL)
        time.sleep(1)


def test_port_helpers_see_a_held_port(port_6006_held):
    assert not showing.port_is_free(MAKE_TENSORBOARD_PORT)


def test_an_explicit_port_that_is_taken_is_refused_with_advice(port_6006_held, live):
    with pytest.raises(ValueError, match="without port= to use a free one"):
        tb.show(live, port=MAKE_TENSORBOARD_PORT)


@pytest.mark.server
@pytest.mark.slow
def test_live_show_starts_on_a_free_port_then_reuses_that_server(port_6006_held, live, capsys):
    tb.show(live)
    server = showing.running_server(live)
    assert server is not None, f"no TensorBoard server for {live}: {capsys.readouterr().out}"
    assert server.port != MAKE_TENSORBOARD_PORT
    with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/data/runs", timeout=10) as response:
        assert json.loads(response.read()) == ["ch/shown"]
    capsys.readouterr()
    tb.show(live)  # again: the same server, no second one
    shown = capsys.readouterr().out
    assert f"port {server.port}, pid {server.pid}" in shown, shown
    assert showing.running_server(live).pid == server.pid
    _stop(server, live)
    assert showing.running_server(live) is None  # a stopped server is not offered for reuse
