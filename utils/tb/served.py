"""What a reader's TensorBoard shows: a real ``tensorboard`` server on 127.0.0.1, asked
over HTTP.

``tb.reading`` reads event files with TensorBoard's classic ``EventAccumulator``, which
is not what the server runs. The server reads with one of two loaders: the Rust
``tensorboard-data-server`` (the default, ``load_fast=True``) or its Python
``plugin_event_accumulator`` (``--load_fast=false``). They sample long series
differently and handle a resumed run differently, so a claim about what TensorBoard
*shows* is checked here, on both.

    with served.serving(logdir, load_fast=False) as server:
        points = server.wait_until_settled("ch07/long", "train/loss")  # step, value...
        experiment = server.hparams_experiment()  # the HParams dashboard's columns
"""

from __future__ import annotations

import json
import tempfile
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd

from utils.tb import showing

STARTUP_TIMEOUT_S = 90
RELOAD_INTERVAL_S = 1
STATUSES = ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"]


class Server:
    """``tensorboard --logdir LOGDIR --host 127.0.0.1 --port PORT --load_fast=...`` on a
    free port. Start it with ``serving`` (which stops it); read through
    ``settled_scalars``: the server loads event files in the background, a reload every
    ``RELOAD_INTERVAL_S`` seconds."""

    def __init__(self, logdir: str | Path, *, load_fast: bool, log_path: str | Path,
                 options: tuple = ()) -> None:
        self.load_fast, self.log_path = load_fast, Path(log_path)
        fast = f"--load_fast={'true' if load_fast else 'false'}"
        self.port, self.process = showing.start_server(
            logdir, log_path, fast, "--reload_interval", str(RELOAD_INTERVAL_S), *options)

    @property
    def loader(self) -> str:
        return "Rust (load_fast=true)" if self.load_fast else "Python (load_fast=false)"

    def get_json(self, route: str) -> Any:
        return showing.get_json(self.port, route)

    def runs(self) -> list[str]:
        return self.get_json("/data/runs")

    def scalars(self, run: str, tag: str) -> pd.DataFrame:
        """The points the Scalars dashboard draws for ``run``/``tag``: columns step,
        value, wall_time."""
        query = urllib.parse.urlencode({"run": run, "tag": tag})
        served = self.get_json(f"/data/plugin/scalars/scalars?{query}")
        frame = pd.DataFrame(served, columns=["wall_time", "step", "value"])
        return frame.astype({"step": int})[["step", "value", "wall_time"]]

    def image_steps(self, run: str, tag: str) -> list[int]:
        """The steps of the images the Images dashboard can show for ``run``/``tag``."""
        query = urllib.parse.urlencode({"run": run, "tag": tag})
        images = self.get_json(f"/data/plugin/images/images?{query}")
        return [int(image["step"]) for image in images]

    def _hparams(self, route: str, request: dict) -> Any:
        query = urllib.parse.urlencode({"request": json.dumps(request)})
        return self.get_json(f"/data/plugin/hparams/{route}?{query}")

    def hparams_experiment(self) -> dict[str, list[str]]:
        """The HParams dashboard's columns: ``{"hparams": [names], "metrics": [tags]}``
        (a metric of a sub-run is ``"group/tag"``)."""
        request = {"experimentName": "", "includeMetrics": True}
        experiment = self._hparams("experiment", request)
        hparams = [info["name"] for info in experiment.get("hparamInfos", [])]
        metrics = [_metric_name(info["name"]) for info in experiment.get("metricInfos", [])]
        return {"hparams": sorted(hparams), "metrics": sorted(metrics)}

    def session_groups(self) -> pd.DataFrame:
        """One row per session (run) the HParams dashboard lists: its name, its
        hparams' values and its metrics' last values, as the table view shows them."""
        request = {"experimentName": "", "allowedStatuses": STATUSES, "startIndex": 0,
                   "sliceSize": 10_000, "includeMetrics": True}
        rows = []
        for group in self._hparams("session_groups", request).get("sessionGroups", []):
            row: dict[str, Any] = {"session": group["name"], **group.get("hparams", {})}
            for metric in group.get("metricValues", []):
                row[_metric_name(metric["name"])] = metric.get("value")
            rows.append(row)
        return pd.DataFrame(rows)

    def wait_until_settled(self, run: str, tag: str,
                           timeout_s: float = STARTUP_TIMEOUT_S) -> pd.DataFrame:
        """``settled_scalars`` of one series."""
        return self.settled_scalars([(run, tag)], timeout_s)[run, tag]

    def settled_scalars(self, series: list[tuple[str, str]],
                        timeout_s: float = STARTUP_TIMEOUT_S) -> dict[tuple, pd.DataFrame]:
        """``{(run, tag): scalars(run, tag)}`` once the server lists every run and tag
        of ``series`` and two answers a reload apart agree (it loads event files in the
        background). Raises ``TimeoutError``, with the runs it lists and the end of its
        log, when that does not happen within ``timeout_s``."""
        previous: list[dict] = []

        def settled() -> dict | None:
            listed = self.get_json("/data/plugin/scalars/tags")  # {run: {tag: ...}}
            if any(tag not in listed.get(run, {}) for run, tag in series):
                return None
            answers = {(run, tag): self.scalars(run, tag) for run, tag in series}
            same = bool(previous) and all(
                answers[key].equals(previous[-1][key]) for key in answers)
            previous.append(answers)
            if not same:
                time.sleep(RELOAD_INTERVAL_S + 0.5)
            return answers if same else None

        found = showing.wait_for_server(self.process, settled, timeout_s, self.log_path)
        if found is None:
            raise TimeoutError(
                f"tensorboard ({self.loader}) did not settle on {series} within "
                f"{timeout_s} s; the runs it lists: {self._runs_or_error()}; the end of "
                f"its log:\n{self._log_tail()}")
        return found

    def _runs_or_error(self) -> str:
        try:
            return ", ".join(self.runs()) or "none"
        except OSError as exc:
            return f"(no answer: {exc})"

    def _log_tail(self, lines: int = 12) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> int:
        """Stop the server (again: a no-op) and return its exit status."""
        return showing.stop_server(self.process)


def _metric_name(name: dict) -> str:
    group, tag = name.get("group", ""), name["tag"]
    return f"{group}/{tag}" if group else tag


@contextmanager
def serving(logdir: str | Path, *, load_fast: bool = True, options: tuple = (),
            log_path: str | Path | None = None) -> Iterator[Server]:
    """A real TensorBoard server over ``logdir`` with the Rust (``load_fast=True``) or
    the Python loader, and extra command-line ``options``; stopped, with its whole
    process group, when the block ends. Its output goes to ``log_path`` (a temporary
    file by default)."""
    with tempfile.TemporaryDirectory(prefix="tensorboard-") as scratch:
        log = log_path or Path(scratch) / "tensorboard.log"
        server = Server(logdir, load_fast=load_fast, options=options, log_path=log)
        try:
            yield server
        finally:
            server.stop()
