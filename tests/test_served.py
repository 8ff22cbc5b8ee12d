"""What the real TensorBoard server shows, with each of its loaders, asked over HTTP (``utils.tb.served``):
resumed runs, a series longer than the sampling keeps, and the HParams dashboard's columns. These are the
facts chapter 7 teaches; ``tb.reading`` is checked against the default (Rust) loader where it claims to
read as the server does."""

from __future__ import annotations

import time
import urllib.parse

import pytest

from utils import tb
from utils.tb import served

pytestmark = [pytest.mark.server, pytest.mark.slow]

LOADERS = {"rust": True, "python": False}


def _first(step: int) -> float:
    return 1.0 / (step + 1)


def _resumed(step: int) -> float:  # the resumed segment logs other values, so a stale point shows
    return 0.5 / (step + 1)


def _write_resumed(root, name: str, *, first_marker: bool, purge: int | None, resume_to: int = 100) -> None:
    """Steps 0-99, then a second writer (a resumed process) writing steps 42 to ``resume_to - 1`` again."""
    with tb.open_run("r", name, root=root, purge_step=0 if first_marker else None) as writer:
        for step in range(100):
            writer.add_scalar("loss", _first(step), step)
    time.sleep(1.1)  # a later second, as a new process would open it
    with tb.open_run("r", name, root=root, on_exists="append", purge_step=purge) as writer:
        for step in range(42, resume_to):
            writer.add_scalar("loss", _resumed(step), step)
            writer.add_text("note", f"resumed {step}", step)


@pytest.fixture(scope="module")
def resumed_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("served")
    _write_resumed(root, "no-purge", first_marker=False, purge=None)
    _write_resumed(root, "purge-only-on-resume", first_marker=False, purge=42)
    _write_resumed(root, "marker-on-both", first_marker=True, purge=42)
    _write_resumed(root, "short-resume", first_marker=False, purge=None, resume_to=61)
    return root / "r"


# (run, loader) -> (points served, how many of them are stale values from before the resume)
EXPECTED = {
    ("no-purge", "rust"): (100, 0), ("no-purge", "python"): (158, 58),
    ("purge-only-on-resume", "rust"): (100, 0), ("purge-only-on-resume", "python"): (158, 58),
    ("marker-on-both", "rust"): (100, 0), ("marker-on-both", "python"): (100, 0),
    ("short-resume", "rust"): (61, 0), ("short-resume", "python"): (119, 58),
}


@pytest.mark.parametrize("loader", LOADERS)
def test_a_resumed_run_as_each_loader_serves_it(resumed_root, loader):
    with served.serving(resumed_root, load_fast=LOADERS[loader]) as server:
        for run in ("no-purge", "purge-only-on-resume", "marker-on-both", "short-resume"):
            points = server.wait_until_settled(run, "loss")
            stale = sum(1 for step, value in zip(points.step, points.value, strict=True)
                        if step >= 42 and value == pytest.approx(_first(step), rel=1e-6))
            assert (len(points), stale) == EXPECTED[run, loader], f"{run} with the {loader} loader"


def test_tb_reading_reads_text_as_the_rust_loader_serves_it(resumed_root):
    """Text is a tensor summary: a step that arrives again drops every later one (``_tensor_events``)."""
    ours = tb.read_text(resumed_root / "short-resume", "note/text_summary")
    with served.serving(resumed_root, load_fast=True) as server:
        server.wait_until_settled("short-resume", "loss")
        query = urllib.parse.urlencode({"run": "short-resume", "tag": "note/text_summary"})
        shown = server.get_json(f"/data/plugin/text/text?{query}")
    assert ours.step.tolist() == [entry["step"] for entry in shown] == list(range(42, 61))


@pytest.mark.parametrize("loader", LOADERS)
def test_hparams_columns_are_the_union_of_every_run(tmp_path, loader):
    """Each ``open_run(..., hparams=...)`` writes a session start and no experiment summary, so the
    dashboard's columns are every run's hyper-parameters and every scalar they log, whichever run the server
    reads first."""
    root = tmp_path / "runs"
    sweeps = {"lora-r4": {"strategy": "lora", "rank": 4, "alpha": 8.0}, "head": {"strategy": "head"},
              "full": {"strategy": "full", "lr": 3e-4}}
    for name, hparams in sweeps.items():
        with tb.open_run("sweep", name, root=root, hparams=hparams) as writer:
            writer.add_scalar("val/accuracy", 0.5 + 0.1 * len(hparams), 9)
    with tb.open_run("other", "run", root=root, hparams={"batch": 16}) as writer:
        writer.add_scalar("hparam/val_loss", 1.25, 3)
    with served.serving(root, load_fast=LOADERS[loader]) as server:
        server.wait_until_settled("other/run", "hparam/val_loss")
        experiment = server.hparams_experiment()
        sessions = server.session_groups().set_index("session")
    assert experiment == {"hparams": ["alpha", "batch", "lr", "rank", "strategy"],
                          "metrics": ["hparam/val_loss", "val/accuracy"]}
    assert sorted(sessions.index) == ["other/run", "sweep/full", "sweep/head", "sweep/lora-r4"]
    assert sessions.loc["sweep/lora-r4", "rank"] == 4 and sessions.loc["sweep/lora-r4", "alpha"] == 8.0
    assert sessions.loc["sweep/full", "val/accuracy"] == pytest.approx(0.7)


def test_tensorboardx_add_hparams_hides_the_other_runs_columns(tmp_path):
    """The mistake the book avoids: plain ``add_hparams`` writes an experiment summary per call, and the
    server shows the columns of the first one it finds."""
    from tensorboardX import SummaryWriter

    root = tmp_path / "runs"
    with SummaryWriter(str(root / "a")) as writer:
        writer.add_hparams({"lr": 0.1}, {"hparam/loss": 1.0}, name="session")
    with SummaryWriter(str(root / "b")) as writer:
        writer.add_hparams({"rank": 4}, {"hparam/accuracy": 0.5}, name="session")
    with served.serving(root, load_fast=True) as server:
        server.wait_until_settled("b/session", "hparam/accuracy")
        experiment = server.hparams_experiment()
    assert experiment["hparams"] in (["lr"], ["rank"])  # one run's, never both


def test_serving_a_folder_that_is_not_there_says_so(tmp_path):
    with served.serving(tmp_path / "missing", load_fast=True) as server, pytest.raises(TimeoutError, match="did not settle"):
        server.wait_until_settled("run", "loss", timeout_s=3)
