"""utils.diagnose: each rule fires on the failure it describes, at the right tag and step; a healthy run gets no
finding; logs written by plain tensorboardX, TF2 ``tf.summary`` (Keras layout) and the book's own loop are
read; the command line's exit codes, ``--json`` and ``--rules``."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from tensorboardX import SummaryWriter

from utils import diagnose, tb
from utils.batches import epoch_batches
from utils.evaluation import classification_loss, evaluate
from utils.loop import TrainConfig, train

REPO = Path(__file__).resolve().parents[1]
STEPS = 400
RNG_SEED = 0


def _noise(n: int, scale: float, seed: int = RNG_SEED) -> np.ndarray:
    return 1.0 + scale * np.random.default_rng(seed).standard_normal(n)


def healthy_series() -> dict[str, dict[int, float]]:
    """Loss decaying towards 0.1, validation close above it, steady gradient norm, warmup then cosine decay,
    two layers whose update ratios are alike."""
    steps = np.arange(STEPS)
    loss = (0.1 + 2.2 * np.exp(-steps / 60)) * _noise(STEPS, 0.01)
    lr = np.where(steps < 50, 1e-3 * (steps + 1) / 50, 1e-3 * (0.1 + 0.9 * 0.5 * (1 + np.cos(
        np.pi * (steps - 50) / (STEPS - 50)))))
    series = {"train/loss": dict(zip(steps, loss, strict=True)), "train/lr": dict(zip(steps, lr, strict=True)),
              "train/grad_norm": dict(zip(steps, 1.5 * np.exp(-steps / 400) * _noise(STEPS, 0.05, 1), strict=True)),
              "val/loss": {int(s): 0.15 + 2.2 * np.exp(-s / 60) for s in steps[::10]}}
    for i, layer in enumerate(("layer0", "layer1")):
        series[f"update_ratio/{layer}.weight"] = dict(zip(steps[::10], 1e-3 * _noise(40, 0.2, 2 + i), strict=True))
    return series


def healthy_histograms() -> dict[str, dict[int, np.ndarray]]:
    """Weights that drift at every logged step; activations that keep their spread."""
    rng = np.random.default_rng(3)
    hists: dict[str, dict[int, np.ndarray]] = {}
    for layer in ("layer0", "layer1"):
        weights = rng.normal(0, 0.1, size=2000)
        hists[f"weights/{layer}.weight"] = {}
        for step in range(0, STEPS, 50):
            weights = weights + rng.normal(0, 1e-3, size=weights.shape)
            hists[f"weights/{layer}.weight"][step] = weights.copy()
        hists[f"activations/{layer}"] = {s: rng.normal(0, 1, size=2000) for s in range(0, STEPS, 50)}
    return hists


def write_run(path: Path, scalars: dict[str, dict[int, float]],
              histograms: dict[str, dict[int, np.ndarray]] | None = None, suffix: str = "") -> Path:
    """A run written by a plain tensorboardX SummaryWriter (not the book's RunWriter: NaN is allowed)."""
    with SummaryWriter(str(path), filename_suffix=suffix) as writer:
        for tag, points in scalars.items():
            for step, value in points.items():
                writer.add_scalar(tag, float(value), int(step))
        for tag, points in (histograms or {}).items():
            for step, values in points.items():
                writer.add_histogram(tag, values, int(step), bins=64)
    return path


def found(report: diagnose.RunReport) -> dict[tuple[str, str], int]:
    """``{(rule, tag): step}`` of a run's findings."""
    return {(f.rule, f.tag): f.step for f in report.findings}


def only_run(logdir: Path) -> diagnose.RunReport:
    reports = diagnose.diagnose(logdir)
    assert len(reports) == 1, [r.run for r in reports]
    return reports[0]


def test_healthy_run_gets_no_finding(tmp_path):
    write_run(tmp_path / "healthy", healthy_series(), healthy_histograms())
    report = only_run(tmp_path)
    assert report.findings == []
    assert report.roles["loss"] == "train/loss" and report.roles["val_loss"] == "val/loss"


def test_divergence_first_step_above_its_start(tmp_path):
    series = healthy_series()
    series["train/loss"] = {s: 2.0 if s < 130 else 7.0 * 1.01 ** (s - 130) for s in range(STEPS)}
    write_run(tmp_path / "diverged", series)
    assert found(only_run(tmp_path))[("divergence", "train/loss")] == 130


def test_nan_and_inf_first_steps_and_divergence(tmp_path):
    series = healthy_series()
    series["train/loss"] = {s: (series["train/loss"][s] if s < 50 else math.nan) for s in range(STEPS)}
    series["train/grad_norm"] = {s: (1.0 if s < 48 else math.inf) for s in range(STEPS)}
    write_run(tmp_path / "nan", series)
    findings = found(only_run(tmp_path))
    assert findings[("non_finite", "train/loss")] == 50
    assert findings[("non_finite", "train/grad_norm")] == 48
    assert findings[("divergence", "train/loss")] == 50


def test_nan_written_by_the_books_writer(tmp_path):
    with tb.open_run("ch", "nan", root=tmp_path, allow_non_finite=True) as writer:
        for step in range(20):
            writer.add_scalar("train/loss", 1.0 / (step - 11) if step != 11 else math.nan, step)
    report = only_run(tmp_path)
    assert found(report)[("non_finite", "train/loss")] == 11
    assert any(f.severity == "error" for f in report.findings)


def test_plateau_reports_where_the_loss_stopped_improving(tmp_path):
    series = healthy_series()
    series["train/loss"] = {s: 2.3 - 1.3 * s / 99 if s < 100 else 0.8 * (1 + 1e-3 * (-1) ** s)
                            for s in range(STEPS)}
    write_run(tmp_path / "plateau", series)
    assert found(only_run(tmp_path))[("plateau", "train/loss")] == 100


def test_overfitting_reports_where_the_gap_opened(tmp_path):
    series = healthy_series()
    series["val/loss"] = {s: 2.0 - s / 120 if s <= 120 else 1.0 + 0.5 * (s - 120) / 280
                          for s in range(0, STEPS, 10)}
    write_run(tmp_path / "overfit", series)
    assert found(only_run(tmp_path))[("overfitting", "val/loss")] == 120


def test_a_run_stopped_early_after_its_best_evaluation_is_not_overfitting(tmp_path):
    """Early stopping with patience <= guard ends a run a few evaluations after its best one: the rise it
    logged is what stopped it. One evaluation more than the guard, and the same curve is overfitting."""
    patience = int(diagnose.RULES["overfitting"].guard)
    for name, evaluations_after_best in (("stopped", patience), ("went_on", patience + 1)):
        series = healthy_series()
        last = 120 + 10 * evaluations_after_best
        series["val/loss"] = {s: 2.0 - s / 120 if s <= 120 else 1.0 + 0.1 * (s - 120) / 10
                              for s in range(0, last + 1, 10)}
        series["train/loss"] = {s: v for s, v in series["train/loss"].items() if s <= last}
        write_run(tmp_path / name / "run", series)
    assert ("overfitting", "val/loss") not in found(only_run(tmp_path / "stopped"))
    assert found(only_run(tmp_path / "went_on"))[("overfitting", "val/loss")] == 120


def test_validation_that_never_improves_is_no_progress(tmp_path):
    """Shuffled labels: the training loss creeps down, the validation loss stays at chance level."""
    series = healthy_series()
    series["val/loss"] = {s: 2.30 + 0.01 * math.sin(s) for s in range(0, STEPS, 10)}
    write_run(tmp_path / "shuffled" / "run", series)
    write_run(tmp_path / "healthy" / "run", healthy_series())
    assert found(only_run(tmp_path / "shuffled"))[("no_validation_progress", "val/loss")] == 0
    assert ("no_validation_progress", "val/loss") not in found(only_run(tmp_path / "healthy"))


def test_validation_rising_with_the_training_loss_is_not_overfitting(tmp_path):
    series = healthy_series()
    series["val/loss"] = {s: 2.0 - s / 120 if s <= 120 else 1.0 + 0.5 * (s - 120) / 280
                          for s in range(0, STEPS, 10)}
    series["train/loss"] = {s: 2.0 - s / 120 if s <= 120 else 1.0 + 0.1 * (s - 120) / 280 for s in range(STEPS)}
    write_run(tmp_path / "shifted", series)
    assert ("overfitting", "val/loss") not in found(only_run(tmp_path))


def test_exploding_gradient_norm_first_spike(tmp_path):
    series = healthy_series()
    series["train/grad_norm"] = {s: v * (40.0 if s >= 150 else 1.0) for s, v in
                                 series["train/grad_norm"].items()}
    write_run(tmp_path / "exploding", series)
    assert found(only_run(tmp_path))[("exploding_gradients", "train/grad_norm")] == 150


def test_vanishing_gradient_norm_while_the_loss_stays_high(tmp_path):
    series = healthy_series()
    series["train/loss"] = {s: 2.3 * (1 + 1e-3 * (-1) ** s) for s in range(STEPS)}
    series["train/grad_norm"] = {s: 1.0 if s < 100 else 1e-5 for s in range(STEPS)}
    write_run(tmp_path / "vanishing", series)
    assert found(only_run(tmp_path))[("vanishing_gradients", "train/grad_norm")] == 100


def test_small_gradients_of_a_converged_run_are_not_vanishing(tmp_path):
    series = healthy_series()
    series["train/loss"] = {s: 2.3 * math.exp(-s / 20) + 1e-6 for s in range(STEPS)}
    series["train/grad_norm"] = {s: 1.0 * math.exp(-s / 20) + 1e-7 for s in range(STEPS)}
    write_run(tmp_path / "converged", series)
    assert ("vanishing_gradients", "train/grad_norm") not in found(only_run(tmp_path))


def test_stalled_layer_from_update_ratios(tmp_path):
    series = healthy_series()
    for i in range(2, 4):
        series[f"update_ratio/layer{i}.weight"] = dict(series["update_ratio/layer1.weight"])
    series["update_ratio/layer0.weight"] = {s: (v if s < 100 else 1e-8) for s, v in
                                            series["update_ratio/layer0.weight"].items()}
    write_run(tmp_path / "stalled", series)
    findings = found(only_run(tmp_path))
    assert findings[("stalled_layer", "update_ratio/layer0.weight")] == 100
    assert [key for key in findings if key[0] == "stalled_layer"] == [
        ("stalled_layer", "update_ratio/layer0.weight")]


def test_dead_layer_whose_weights_stop_changing(tmp_path):
    hists = healthy_histograms()
    frozen = hists["weights/layer0.weight"]
    for step in range(150, STEPS, 50):
        frozen[step] = frozen[100]
    write_run(tmp_path / "dead", healthy_series(), hists)
    findings = found(only_run(tmp_path))
    assert findings[("dead_layer", "weights/layer0.weight")] == 100
    assert ("dead_layer", "weights/layer1.weight") not in findings


def test_weights_equal_at_one_interval_only_are_not_dead(tmp_path):
    hists = healthy_histograms()
    hists["weights/layer0.weight"][350] = hists["weights/layer0.weight"][300]
    write_run(tmp_path / "coincidence", healthy_series(), hists)
    assert only_run(tmp_path).findings == []


def test_collapsed_activations(tmp_path):
    hists = healthy_histograms()
    for step in range(200, STEPS, 50):
        hists["activations/layer1"][step] = 0.5 + 1e-6 * np.random.default_rng(step).normal(size=2000)
    write_run(tmp_path / "collapsed", healthy_series(), hists)
    assert found(only_run(tmp_path))[("collapsed_histogram", "activations/layer1")] == 200


def test_learning_rate_that_never_warmed_up(tmp_path):
    series = healthy_series()
    long = 1200  # the learning-rate notes concern runs of 1,000 updates or more
    series["train/lr"] = {s: 1e-3 * 0.5 * (1 + math.cos(math.pi * s / long)) for s in range(long)}
    write_run(tmp_path / "no_warmup", series)
    report = only_run(tmp_path)
    assert found(report) == {("lr_never_warmed_up", "train/lr"): 0}
    assert report.findings[0].severity == "note"


def test_learning_rate_that_never_decayed(tmp_path):
    series = healthy_series()
    series["train/lr"] = {s: 1e-3 * min(1.0, (s + 1) / 50) for s in range(1200)}
    write_run(tmp_path / "no_decay", series)
    assert found(only_run(tmp_path)) == {("lr_never_decayed", "train/lr"): 49}


def test_constant_rate_of_a_short_run_is_no_finding(tmp_path):
    series = healthy_series()
    series["train/lr"] = dict.fromkeys(range(STEPS), 1e-3)  # 400 updates at a constant rate: by design
    write_run(tmp_path / "short", series)
    assert only_run(tmp_path).findings == []


def test_keras_layout_and_tf2_tensor_scalars(tmp_path):
    import tensorflow as tf

    train_loss = [2.0 * 0.8**e for e in range(30)]
    val_loss = [2.0 - e / 10 if e <= 10 else 1.0 + 0.05 * (e - 10) for e in range(30)]
    for folder, values in (("train", train_loss), ("validation", val_loss)):
        with tf.summary.create_file_writer(str(tmp_path / "keras" / folder)).as_default():
            for epoch, value in enumerate(values):
                tf.summary.scalar("epoch_loss", value, step=epoch)
    report = only_run(tmp_path)
    assert report.run == "keras"
    assert report.roles["loss"] == "epoch_loss" and report.roles["val_loss"] == "validation/epoch_loss"
    assert found(report)[("overfitting", "validation/epoch_loss")] == 10


def test_resumed_run_keeps_the_last_value_of_a_repeated_step(tmp_path):
    series = healthy_series()
    interrupted = {tag: {s: v for s, v in points.items() if s < 300} for tag, points in series.items()}
    interrupted["train/loss"].update(dict.fromkeys(range(200, 300), 9.0))  # rewritten after the resume
    write_run(tmp_path / "resumed", interrupted, suffix=".1")
    write_run(tmp_path / "resumed", {tag: {s: v for s, v in points.items() if s >= 200}
                                     for tag, points in series.items()}, suffix=".2")
    report = only_run(tmp_path)
    assert report.findings == [], report.findings


def test_unrecognised_tags_are_listed(tmp_path):
    write_run(tmp_path / "custom", {"knn/accuracy": {0: 0.5, 1: 0.6}})
    report = only_run(tmp_path)
    assert report.findings == []
    assert "knn/accuracy" in report.notice and "train/loss" in report.notice


def test_alternative_tag_names(tmp_path):
    write_run(tmp_path / "plain", {"loss": {s: 2.0 if s < 30 else 9.0 for s in range(60)},
                                   "val_loss": {s: 2.0 for s in range(0, 60, 5)}})
    report = only_run(tmp_path)
    assert report.roles["loss"] == "loss" and report.roles["val_loss"] == "val_loss"
    assert found(report)[("divergence", "loss")] == 30


def test_no_runs_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(tb.RunNotFoundError, match="no event file"):
        diagnose.diagnose(tmp_path / "empty")


def test_every_threshold_lives_in_the_rules_table():
    # that each check reads its numbers from RULES: tests/test_diagnose_rules_table.py changes them and
    # watches the verdicts change; here, that --rules prints every rule with its numbers
    for rule in diagnose.RULES.values():
        assert rule.severity in {"error", "warning", "note"} and rule.meaning and rule.remedy
    text = diagnose.format_rules()
    for rule in diagnose.RULES.values():
        assert f"{rule.name} [{rule.severity}] threshold={rule.threshold:g} window={rule.window}" in text


def _toy_run(root: Path, name: str, lr: float) -> Path:
    torch.manual_seed(0)
    x = torch.randn(64, 5)
    y = (x[:, 0] + x[:, 1] > 0).long()
    model = torch.nn.Sequential(torch.nn.Linear(5, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2))
    config = TrainConfig(max_steps=40, lr=lr, min_lr=lr, grad_clip=None, eval_every=5, histogram_every=10,
                         update_ratio_every=5, progress=False)
    with tb.open_run("loop", name, root=root, allow_non_finite=True) as writer:
        train(model, torch.optim.SGD(model.parameters(), lr=lr), config, batch_fn=epoch_batches(x, y, 16), writer=writer,
              eval_fn=lambda m: evaluate(m, [(x, y)], classification_loss))
    return root / "loop" / name


def test_runs_of_the_books_loop(tmp_path):
    _toy_run(tmp_path, "healthy", 0.5)
    _toy_run(tmp_path, "lr_too_high", 50.0)
    reports = {r.run: r for r in diagnose.diagnose(tmp_path / "loop")}
    assert reports["healthy"].findings == [], reports["healthy"].findings
    assert ("divergence", "train/loss") in found(reports["lr_too_high"])


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "utils.diagnose", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=300)


def test_command_line_exit_codes_json_and_rules(tmp_path):
    write_run(tmp_path / "ok" / "healthy", healthy_series())
    bad = healthy_series()
    bad["train/loss"][7] = math.nan
    write_run(tmp_path / "bad" / "nan", bad)
    healthy = _cli(str(tmp_path / "ok"), "--json")
    assert healthy.returncode == 0, healthy.stderr
    assert json.loads(healthy.stdout) == [{"run": "healthy", "findings": [], "notice": None,
                                           "roles": {"loss": "train/loss", "val_loss": "val/loss",
                                                     "grad_norm": "train/grad_norm", "lr": "train/lr"}}]
    broken = _cli(str(tmp_path / "bad"))
    assert broken.returncode == 1
    assert "non_finite" in broken.stdout and "train/loss" in broken.stdout and "step 7" in broken.stdout
    rules = _cli("--rules")
    assert rules.returncode == 0 and all(name in rules.stdout for name in diagnose.RULES)
    empty = _cli(str(tmp_path / "missing"))
    assert empty.returncode == 2 and "no event file" in empty.stderr


def test_a_fast_first_drop_is_not_divergence(tmp_path):
    write_run(tmp_path / "keras_like", {"epoch_loss": {0: 1.975, 1: 0.57, 2: 0.45, 3: 0.41, 4: 0.39}})
    assert only_run(tmp_path).findings == []


def test_a_gradient_scalers_skipped_updates_are_a_note_not_an_error(tmp_path):
    """A real fp16 GradScaler whose first scale is far too high: its first updates overflow, are skipped and
    the scale halved; the gradient norm logged there is inf. That is the scaler working, not a fault."""
    torch.manual_seed(0)
    x = torch.randn(64, 5)
    y = (x[:, 0] > 0).long()
    model = torch.nn.Sequential(torch.nn.Linear(5, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**70)  # overflows fp16 gradients at first
    with tb.open_run("amp", "scaled", root=tmp_path, allow_non_finite=True) as writer:
        for step in range(120):
            with torch.autocast("cpu", dtype=torch.float16):
                loss = torch.nn.functional.cross_entropy(model(x), y)
            optimizer.zero_grad()
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), float("inf"))
            scaler.step(optimizer)
            scaler.update()
            writer.add_step_scalars({"train/loss": loss.item(), "train/grad_norm": norm.item(),
                                     "train/loss_scale": scaler.get_scale()}, step)
    [report] = diagnose.diagnose(tmp_path / "amp")
    grad = tb.read_scalars(tmp_path / "amp" / "scaled", ["train/grad_norm"]).value
    assert (~np.isfinite(grad)).sum() >= 3  # the scaler did skip updates
    assert {f.rule for f in report.findings} == {"scaler_skipped_steps"}, report.findings
    assert all(f.severity == "note" for f in report.findings)
