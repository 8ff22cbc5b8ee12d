"""The real TensorBoard server, on 127.0.0.1, serves exactly what utils.tb wrote (both of its loaders)."""

from __future__ import annotations

import urllib.parse

import numpy as np
import pytest

from utils import tb
from utils.tb import showing

pytestmark = [pytest.mark.server, pytest.mark.slow]


def route(plugin: str, kind: str, run: str, tag: str) -> str:
    return f"/data/plugin/{plugin}/{kind}?{urllib.parse.urlencode({'run': run, 'tag': tag})}"


@pytest.mark.parametrize("load_fast", [False, True], ids=["python-loader", "rust-loader"])
def test_server_serves_what_utils_tb_wrote(tmp_path, tensorboard_server, load_fast):
    root = tmp_path / "runs"
    values = np.linspace(2.0, 0.5, 40) + np.random.default_rng(0).normal(scale=0.01, size=40)
    with tb.open_run("ch0", "served", root=root, hparams={"lr": 0.01}) as writer:
        for step, value in enumerate(values):
            writer.add_scalar("train/loss", value, step)
        writer.add_histogram("weights", np.arange(100.0), 3)
        writer.add_text("note", "served by TensorBoard", 5)
        writer.add_scalar("hparam/loss", values[-1], 39)
    written = tb.read_scalars(root / "ch0" / "served", ["train/loss"])

    server = tensorboard_server(root, load_fast)
    server.wait_until_ready("ch0/served", "train/loss")
    assert "ch0/served" in server.get_json("/data/runs")
    plugins = server.get_json("/data/plugins_listing")
    for plugin in ("scalars", "histograms", "text"):
        assert plugins[plugin]["enabled"], f"{plugin} dashboard disabled: {plugins[plugin]}"
    served = server.scalars("ch0/served", "train/loss")  # [[wall_time, step, value], ...]
    assert [int(step) for _, step, _ in served] == written.step.tolist()
    np.testing.assert_array_equal([value for _, _, value in served], written.value.to_numpy())
    np.testing.assert_allclose([w for w, _, _ in served], written.wall_time.to_numpy(), atol=1e-3)
    tags = server.get_json("/data/plugin/scalars/tags")
    assert set(tags["ch0/served"]) == {"train/loss", "hparam/loss"}
    # the histogram and the text, at the steps they were written: [[wall_time, step, buckets]] and
    # [{"step": ..., "text": <the text rendered as HTML>}]
    [[_, step, buckets]] = server.get_json(route("histograms", "histograms", "ch0/served", "weights"))
    assert step == 3 and sum(count for _, _, count in buckets) == 100
    [text] = server.get_json(route("text", "text", "ch0/served", "note/text_summary"))
    assert text["step"] == 5 and "served by TensorBoard" in text["text"]


def test_a_server_that_cannot_start_says_why_with_the_end_of_its_log(tmp_path):
    with pytest.raises(RuntimeError, match=r"(?s)exited with status \d+; the end of its log .*no_such_flag"):
        showing.start_server(tmp_path, tmp_path / "tensorboard.log", "--no_such_flag")


def test_the_server_listens_where_it_says_it_does(tmp_path):
    port, process = showing.start_server(tmp_path, tmp_path / "tensorboard.log")
    try:
        assert not showing.port_is_free(port) and showing.get_json(port, "/data/runs") == []
    finally:
        showing.stop_server(process)
