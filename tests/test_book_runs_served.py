"""Every run the book's notebooks wrote shows in a real TensorBoard: the server on 127.0.0.1, over the whole
``runs/`` tree that ``make book`` wrote, lists each run, and serves each run's scalars as TensorBoard's own
Python loader reads them (same tags; same last step and value of every tag, the last as the Rust loader keeps
it when a resumed run wrote a step twice).

``make test`` builds the book (executing every notebook) before pytest starts, so ``runs/`` holds every
chapter's runs here; run ``make book`` first when running this file alone.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import pytest

from utils import paths, tb
from utils.tb import reading

pytestmark = [pytest.mark.server, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
# Every numbered chapter writes under runs/chNN (CONTRIBUTING.md).
CHAPTERS_WITH_RUNS = sorted(f"ch{p.name[:2]}" for p in ROOT.glob("book/[0-9][0-9]_*.ipynb"))
READY_TIMEOUT_S = 120


def book_runs() -> tuple[Path, dict[str, Path]]:
    root = paths.runs_dir()
    runs = {p.relative_to(root).as_posix(): p for p in tb.list_runs(root)} if root.is_dir() else {}
    if not runs:
        pytest.fail(f"no runs under {root}: run `make book` first (make test does), which executes the "
                    "notebooks that write them")
    return root, runs


def wait_for_runs(server, expected: set[str]) -> set[str]:
    deadline = time.monotonic() + READY_TIMEOUT_S
    served: set[str] = set()
    while time.monotonic() < deadline:
        try:
            served = set(server.get_json("/data/runs"))
        except OSError:
            served = set()
        if expected <= served:
            return served
        time.sleep(1)
    return served


def test_every_chapter_wrote_runs():
    _, runs = book_runs()
    chapters = {name.split("/")[0] for name in runs}
    missing = [chapter for chapter in CHAPTERS_WITH_RUNS if chapter not in chapters]
    assert not missing, f"no runs from {missing} under runs/ (did `make book` execute those chapters?)"


def test_the_server_serves_every_run_of_the_book(tensorboard_server):
    root, runs = book_runs()
    server = tensorboard_server(root)
    served = wait_for_runs(server, set(runs))
    assert set(runs) <= served, f"runs TensorBoard did not list: {sorted(set(runs) - served)}"
    tags_by_run = server.get_json("/data/plugin/scalars/tags")
    problems = []
    for name, path in sorted(runs.items()):
        written = tb.read_scalars(path)
        expected_tags = set(written["tag"])
        if set(tags_by_run.get(name, {})) != expected_tags:
            problems.append(f"{name}: served tags {sorted(tags_by_run.get(name, {}))}, "
                            f"written {sorted(expected_tags)}")
            continue
        accumulator = reading.accumulator(path)
        for tag, points in written.groupby("tag"):
            last_step, last_value = points.iloc[-1][["step", "value"]]
            if tag in accumulator.Tags()["scalars"]:  # a resumed run: what the Rust loader keeps of it
                last = reading.as_served(accumulator.Scalars(tag))[-1]
                last_step, last_value = last.step, last.value
            _, step, served_value = server.scalars(name, tag)[-1]
            value = float(served_value)  # the server writes NaN and infinities as strings
            same = step == last_step and (math.isclose(value, last_value, rel_tol=1e-6, abs_tol=1e-12)
                                          or (math.isnan(value) and math.isnan(last_value)))
            if not same:
                problems.append(f"{name} {tag}: served last point ({step}, {value}), "
                                f"written ({last_step}, {last_value})")
    assert not problems, "\n".join(problems)


# What chapters 6 and 7 tell the reader to find in the HParams dashboard: hyper-parameter columns, metric
# columns, and the runs listed as rows (chapter 6: every classification run; its lora-r* sweep with rank,
# alpha, lr and seed; chapter 7: the learning-rate sweep).
CH06_HPARAMS = {"strategy", "examples", "lr", "seed", "pretrained", "rank", "alpha"}
CH06_METRICS = {"val/accuracy", "val/macro_f1", "params/trainable", "memory/total_mib"}
CH07_HPARAMS = {"lr", "hidden", "optimizer"}
CH07_METRICS = {"hparam/best_val_loss", "hparam/accuracy"}


@pytest.mark.parametrize("served_folder", ["", "ch06", "ch07"], ids=["runs", "runs-ch06", "runs-ch07"])
def test_hparams_dashboard_shows_the_columns_the_chapters_describe(served_folder):
    """Served from the whole tree (``make tensorboard``) or from one chapter's folder, the dashboard's
    columns are the union of every run's: one run's columns never hide another's (no experiment summary)."""
    from utils.tb import served

    root, runs = book_runs()
    wanted_hparams, wanted_metrics = set(), set()
    if served_folder in ("", "ch06"):
        wanted_hparams |= CH06_HPARAMS
        wanted_metrics |= CH06_METRICS
    if served_folder in ("", "ch07"):
        wanted_hparams |= CH07_HPARAMS
        wanted_metrics |= CH07_METRICS
    prefix = f"{served_folder}/" if served_folder else ""
    lora_runs = sorted(name for name in runs if name.startswith("ch06/lora-r"))
    sweep_runs = sorted(name for name in runs if name.startswith("ch07/sweep-lr="))
    assert lora_runs and sweep_runs, "chapters 6 and 7 wrote no sweep: run `make book` first"
    with served.serving(root / served_folder, load_fast=True) as server:
        last = (lora_runs if served_folder != "ch07" else sweep_runs)[-1].removeprefix(prefix)
        server.wait_until_settled(last, "train/loss", timeout_s=READY_TIMEOUT_S)
        experiment = server.hparams_experiment()
        sessions = server.session_groups().set_index("session")
    assert wanted_hparams <= set(experiment["hparams"]), experiment["hparams"]
    assert wanted_metrics <= set(experiment["metrics"]), experiment["metrics"]
    rows = [name.removeprefix(prefix) for name in (lora_runs if served_folder != "ch07" else sweep_runs)]
    assert set(rows) <= set(sessions.index)
    if served_folder != "ch07":
        lora = sessions.loc[[name.removeprefix(prefix) for name in lora_runs]]
        assert lora["rank"].notna().all() and lora["seed"].nunique() == 3
        assert lora["val/accuracy"].between(0, 1).all()
