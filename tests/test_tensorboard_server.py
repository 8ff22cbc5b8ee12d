"""The real TensorBoard server, on 127.0.0.1, serves exactly what utils.tb wrote (both of its loaders)."""

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
from pathlib import Path

import numpy as np
import pytest

from utils import tb

pytestmark = [pytest.mark.server, pytest.mark.slow]

STARTUP_TIMEOUT_S = 90


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get_json(port: int, route: str):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{route}", timeout=10) as response:
        return json.loads(response.read())


class TensorBoardServer:
    """``tensorboard --logdir LOGDIR --host 127.0.0.1 --port PORT``, stopped by its PID."""

    def __init__(self, logdir: Path, load_fast: bool, log_path: Path) -> None:
        self.port = free_port()
        tensorboard = Path(sys.executable).with_name("tensorboard")
        self.log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [str(tensorboard), "--logdir", str(logdir), "--host", "127.0.0.1", "--port", str(self.port),
             f"--load_fast={'true' if load_fast else 'false'}", "--reload_interval", "1"],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)

    def wait_until_ready(self, run: str, tag: str) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"tensorboard exited with {self.process.returncode}; see {self.log.name}")
            try:
                if run in get_json(self.port, "/data/runs") and self.scalars(run, tag):
                    return
            except (urllib.error.URLError, ConnectionError, TimeoutError, json.JSONDecodeError):
                pass
            time.sleep(0.5)
        raise TimeoutError(f"tensorboard did not serve {run}/{tag} within {STARTUP_TIMEOUT_S} s")

    def scalars(self, run: str, tag: str) -> list[list[float]]:
        query = urllib.parse.urlencode({"run": run, "tag": tag})
        return get_json(self.port, f"/data/plugin/scalars/scalars?{query}")

    def stop(self) -> None:
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=15)
        self.log.close()


@pytest.mark.parametrize("load_fast", [False, True], ids=["python-loader", "rust-loader"])
def test_server_serves_what_utils_tb_wrote(tmp_path, load_fast):
    root = tmp_path / "runs"
    values = np.linspace(2.0, 0.5, 40) + np.random.default_rng(0).normal(scale=0.01, size=40)
    with tb.open_run("ch0", "served", root=root, hparams={"lr": 0.01}, hparam_metrics=["hparam/loss"]) as writer:
        for step, value in enumerate(values):
            writer.add_scalar("train/loss", value, step)
        writer.add_histogram("weights", np.arange(100.0), 0)
        writer.add_text("note", "served", 0)
        writer.add_scalar("hparam/loss", values[-1], 39)
    written = tb.read_scalars(root / "ch0" / "served", ["train/loss"])

    server = TensorBoardServer(root, load_fast, tmp_path / "tensorboard.log")
    try:
        server.wait_until_ready("ch0/served", "train/loss")
        assert "ch0/served" in get_json(server.port, "/data/runs")
        plugins = get_json(server.port, "/data/plugins_listing")
        for plugin in ("scalars", "histograms", "text"):
            assert plugins[plugin]["enabled"], f"{plugin} dashboard disabled: {plugins[plugin]}"
        served = server.scalars("ch0/served", "train/loss")  # [[wall_time, step, value], ...]
        assert [int(step) for _, step, _ in served] == written.step.tolist()
        np.testing.assert_array_equal([value for _, _, value in served], written.value.to_numpy())
        np.testing.assert_allclose([w for w, _, _ in served], written.wall_time.to_numpy(), atol=1e-3)
        tags = get_json(server.port, "/data/plugin/scalars/tags")
        assert set(tags["ch0/served"]) == {"train/loss", "hparam/loss"}
    finally:
        server.stop()
    assert server.process.returncode is not None
