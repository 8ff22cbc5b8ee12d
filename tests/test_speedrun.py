"""benchmarks.speedrun on a stand-in nanoGPT checkout (tests.test_benchmarks.FAKE_NANOGPT), in --quick mode:
the side-by-side table, the ablation, the TensorBoard runs, and the pieces (schedules, optimizers, the loop
that stops at its target with the evaluations off the clock)."""

from __future__ import annotations

import json
import math
import time

import pytest
import torch

from benchmarks import speedrun
from benchmarks import speedrun_runs as runs
from tests.test_benchmarks import FAKE_NANOGPT
from utils.gpt import GPT, GPTConfig


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    checkout = tmp_path_factory.mktemp("nanogpt")
    (checkout / "model.py").write_text(FAKE_NANOGPT)
    out_dir, root = tmp_path_factory.mktemp("results"), tmp_path_factory.mktemp("runs")
    threads = torch.get_num_threads()
    speedrun.main(["--nanogpt", str(checkout), "--quick", "--threads", "1", "--repeats", "2",
                   "--ablation", "adamw-only", "batch-24", "--out-dir", str(out_dir), "--runs-root", str(root)])
    assert torch.get_num_threads() == threads, "the benchmark must restore the caller's thread count"
    return json.loads((out_dir / "speedrun.json").read_text()), root


def test_speedrun_side_by_side_alternates_and_records_the_target(quick):
    result, _ = quick
    assert result["benchmark"] == "speedrun" and "--quick" in result["command"]
    assert [pair["order"] for pair in result["pairs"]] == [["nanogpt", "book"], ["book", "nanogpt"]]
    first = result["pairs"][0]["nanogpt"]
    assert result["target"] == first["val_loss"] and first["steps"] == 30
    for pair in result["pairs"]:
        book = pair["book"]
        assert book["steps"] <= 20 and book["tokens"] == book["steps"] * book["settings"]["batch"] * 64
        assert book["reached"] == (book["val_loss"] <= result["target"])
        assert math.isclose(pair["speedup"], pair["nanogpt"]["train_s"] / book["train_s"])


def test_speedrun_tables_and_ablation_rows(quick):
    result, _ = quick
    side, ablation = result["tables"]
    assert [row[0] for row in side["rows"]] == ["nanogpt", "speedrun"]
    assert [row["recipe"] for row in result["ablation"]] == ["adamw-only", "batch-24"]
    adamw, batch = result["ablation"]
    assert adamw["settings"]["muon_lr"] is None and batch["settings"]["batch"] == 24
    assert len(ablation["rows"]) == 2 and all(len(row) == len(ablation["columns"]) for row in ablation["rows"])


def test_speedrun_logs_one_tensorboard_run_per_recipe(quick):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, root = quick
    names = sorted(path.name for path in (root / "speedrun").iterdir())
    assert names == ["adamw-only", "batch-24", "nanogpt", "speedrun"]
    events = EventAccumulator(str(root / "speedrun" / "speedrun")).Reload()
    assert {"val/loss", "train/loss", "val/loss_vs_train_ms", "val/loss_vs_tokens"} <= set(events.Tags()["scalars"])
    points = events.Scalars("val/loss")
    assert [p.step for p in points] == sorted(p.step for p in points) and points[0].step == 5


def test_nanogpts_schedule_is_its_train_py_formula():
    assert runs.nanogpt_lr(runs.NANOGPT, 0) == pytest.approx(1e-3 / 101)
    assert runs.nanogpt_lr(runs.NANOGPT, 100) == pytest.approx(1e-3)
    assert runs.nanogpt_lr(runs.NANOGPT, 2000) == pytest.approx(1e-4)
    assert runs.nanogpt_lr(runs.NANOGPT, 1050) == pytest.approx(1e-4 + 0.5 * 9e-4)
    recipe = runs.Recipe("r", steps=100, warmup=10, lr=3e-3, min_lr=3e-4)
    assert runs.book_multiplier(recipe, 9) == 1.0 and runs.book_multiplier(recipe, 100) == pytest.approx(0.1)


def test_muon_takes_the_blocks_matrices_and_adamw_the_rest():
    model = GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=16, bias=False))
    adamw, muon = runs.book_optimizer(model, runs.Recipe("r", muon_lr=0.02)).optimizers
    assert isinstance(muon, torch.optim.Muon) and isinstance(adamw, torch.optim.AdamW)
    in_muon = {id(p) for group in muon.param_groups for p in group["params"]}
    names = {name for name, p in model.named_parameters() if id(p) in in_muon}
    assert names == {n for n, p in model.named_parameters() if n.startswith("transformer.h.") and p.ndim == 2}
    in_adamw = [p for group in adamw.param_groups for p in group["params"]]
    assert len(in_adamw) + len(in_muon) == len(list(model.parameters()))
    (only,) = runs.book_optimizer(model, runs.Recipe("r", adamw="fused")).optimizers
    assert only.param_groups[0]["fused"] is True


def test_run_stops_at_the_target_and_keeps_evaluations_off_the_clock(monkeypatch):
    losses = iter([3.0, 2.5, 2.0, 1.5])

    def slow_evaluation(model, batches):
        time.sleep(0.05)
        return next(losses)

    monkeypatch.setattr(runs, "evaluate", slow_evaluation)
    side = runs.Side(model=None, step=lambda batch: 1.0, set_lr=lambda step: None)
    outcome = runs.run_to_target(side, runs.Recipe("r", steps=100), lambda i: None, [], eval_every=10, target=2.2)
    assert isinstance(outcome, runs.Outcome) and outcome.reached and outcome.steps == 30
    assert [point[0] for point in outcome.curve] == [10, 20, 30] and outcome.train_s < 0.05


def test_speedrun_refuses_a_folder_without_model_py(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        speedrun.main(["--nanogpt", str(tmp_path), "--quick"])
    assert exit_info.value.code == 2 and "has no model.py" in capsys.readouterr().err
