"""The zoo of ``tests/zoo.py`` and the scoring of ``benchmarks/diagnose_zoo.py``: the scores counted right
on a hand-made set of findings; a small part of the zoo (one seed) built as labelled, with every run it
labels on disk (the Keras ones in Keras's own layout), and no error-severity finding on any of its healthy
runs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from benchmarks import diagnose_zoo
from tests import book_runs, zoo
from utils import diagnose, tb


def finding(rule: str, severity: str = "warning", tag: str = "train/loss", step: int = 0) -> diagnose.Finding:
    return diagnose.Finding(rule, severity, tag, step, 1.0, "", "")


LABELS = {"book/h1": "healthy", "book/h2": "healthy", "tutorial/high": "lr_too_high", "book/nan": "non_finite",
          "hf/over": "overfitting", "split/over": "overfitting", "book/shuffled": "shuffled_labels"}
FINDINGS = {
    "book/h1": [],
    "book/h2": [finding("plateau"), finding("plateau", tag="val/loss")],  # one run: plateau counts once
    "tutorial/high": [finding("divergence", "error"), finding("dead_units")],
    "book/nan": [finding("non_finite", "error"), finding("divergence", "error")],
    "hf/over": [finding("overfitting", tag="eval/loss")],
    "split/over": [finding("plateau")],  # missed: overfitting's only rule did not fire
    "book/shuffled": [finding("no_validation_progress", tag="val/loss")],
}
RULES = ["non_finite", "divergence", "plateau", "overfitting", "no_validation_progress", "dead_units"]
# the scoring's own table, fixed here (tests/book_runs.FAULT_NAMES, which the benchmark uses, may change)
FAULT_NAMES = {"non_finite": {"non_finite"}, "lr_too_high": {"divergence"}, "overfitting": {"overfitting"},
               "shuffled_labels": {"no_validation_progress"}}


@pytest.fixture(scope="module")
def scored():
    return diagnose_zoo.score(LABELS, FINDINGS, RULES, FAULT_NAMES)


def test_rule_scores_count_runs_by_what_each_rule_may_name(scored):
    counts = {rule: (s["tp"], s["fp"], s["fn"]) for rule, s in scored["rules"].items()}
    assert counts == {
        "non_finite": (1, 0, 0),
        "divergence": (1, 1, 0),  # names lr_too_high; may not name non_finite
        "plateau": (0, 2, 0),  # a healthy run, an overfitting one
        "overfitting": (1, 0, 1),  # split/over missed
        "no_validation_progress": (1, 0, 0),
        "dead_units": (0, 1, 0),  # may not name lr_too_high
    }
    assert scored["rules"]["divergence"]["precision"] == 0.5 and scored["rules"]["divergence"]["recall"] == 1.0
    assert scored["rules"]["overfitting"]["recall"] == 0.5 and scored["rules"]["plateau"]["precision"] == 0.0
    assert scored["rules"]["plateau"]["recall"] is None  # nothing it may name in this set


def test_fault_scores_recall_and_false_calls(scored):
    faults = scored["faults"]
    assert faults["healthy"] == {"runs": 2, "named": 1, "falsely_called": 0, "false_alarm_runs": 1,
                                 "recall": 0.5, "precision": None}
    assert (faults["overfitting"]["named"], faults["overfitting"]["recall"]) == (1, 0.5)
    # the NaN run's divergence may name lr_too_high, not non_finite: lr_too_high is falsely called once
    assert (faults["lr_too_high"]["named"], faults["lr_too_high"]["falsely_called"]) == (1, 1)
    assert faults["lr_too_high"]["precision"] == 0.5 and faults["lr_too_high"]["false_alarm_runs"] == 1
    assert faults["non_finite"]["precision"] == 1.0


def test_wrong_verdicts_list_misses_and_false_alarms(scored):
    wrong = {item["run"]: (item["verdict"], item["extra_rules"]) for item in scored["wrong"]}
    assert wrong == {"book/h2": ("false alarm", ["plateau"]), "tutorial/high": ("false alarm", ["dead_units"]),
                     "book/nan": ("false alarm", ["divergence"]),
                     "split/over": ("missed + false alarm", ["plateau"])}
    assert scored["layouts"]["split"] == {"runs": 1, "broken": 1, "missed": 1, "false_alarm": 1}
    assert scored["layouts"]["book"] == {"runs": 4, "broken": 2, "missed": 0, "false_alarm": 2}


def test_a_rule_outside_the_table_is_scored_and_reports_must_match_labels():
    extra = {**FINDINGS, "book/h1": [finding("loss_spike")]}
    scores = diagnose_zoo.score(LABELS, extra, RULES, FAULT_NAMES)
    assert scores["rules"]["loss_spike"]["fp"] == 1
    with pytest.raises(ValueError, match="differ"):
        diagnose_zoo.score({**LABELS, "book/ghost": "healthy"}, FINDINGS, RULES, FAULT_NAMES)


def test_the_plan_writes_each_recipe_in_every_other_layout_across_seeds():
    plan = zoo.zoo_plan()
    for name, recipe in zoo.RECIPES.items():
        assert recipe.fault == "healthy" or recipe.fault in book_runs.FAULT_NAMES, name
        layouts = {layout for recipe_name, _, _, layout in plan if recipe_name == name}
        keras = recipe.model == "keras"
        assert layouts == ({zoo.KERAS_LAYOUT} if keras else set(zoo.LAYOUTS) - {"book"}), name
    assert {"healthy", "overfitting"} <= {r.fault for r in zoo.RECIPES.values() if r.model == "keras"}


# --------------------------------------------------------------------------------------------- a real part of the zoo


SMALL = [name for name, r in zoo.RECIPES.items() if r.fault == "healthy"] + \
    ["lr_too_high", "non_finite", "overfitting", "shuffled_labels", "keras-overfitting"]


def runs_per_training(name: str) -> int:
    """A Keras training is written once, in its own layout; every other in the book's and one other."""
    return 1 if zoo.RECIPES[name].model == "keras" else 2


@pytest.fixture(scope="module")
def small_zoo(tmp_path_factory):
    folder = tmp_path_factory.mktemp("zoo")
    labels = zoo.write_zoo(folder, seeds=(0,), recipes=SMALL, one_batch=True)
    return folder, labels, {r.run: r for r in diagnose.diagnose(folder)}


def _loss(folder, run: str, tag: str = "train/loss") -> np.ndarray:
    frame = tb.read_scalars(folder / run, [tag])
    return frame.value.to_numpy(dtype=float)


@pytest.mark.slow
def test_the_zoo_is_built_as_labelled(small_zoo):
    folder, labels, reports = small_zoo
    assert sorted(labels) == sorted(reports)  # every run labelled, and nothing else written
    assert len(labels) == sum(map(runs_per_training, SMALL))
    assert set(labels.values()) == {"healthy", "lr_too_high", "non_finite", "overfitting", "shuffled_labels"}
    batch = {name: zoo.RECIPES[name].batches[0] for name in SMALL}
    assert not np.isfinite(_loss(folder, f"book/non_finite-b{batch['non_finite']}-s0")).all()
    high = _loss(folder, f"book/lr_too_high-b{batch['lr_too_high']}-s0")
    assert np.nanmax(high) > 3 * high[0]  # the loss climbs
    val = _loss(folder, f"book/overfitting-b{batch['overfitting']}-s0", "val/loss")
    assert val[-1] > 1.1 * val.min() and val.argmin() < len(val) - 1
    accuracy = _loss(folder, f"book/shuffled_labels-b{batch['shuffled_labels']}-s0", "val/accuracy")
    assert accuracy.max() < 0.25  # chance is 0.1
    for name in (name for name in SMALL if zoo.RECIPES[name].model != "keras"):  # Keras's: the next test
        run = f"book/{name}-b{batch[name]}-s0"
        assert math.isfinite(_loss(folder, run)[0]), run


@pytest.mark.slow
def test_the_keras_runs_are_in_the_callbacks_own_layout(small_zoo):
    """``train/`` and ``validation/`` sub-writers, ``epoch_loss`` stored as a TF2 tensor (not a scalar
    event), one point an epoch, weight histograms; the overfitting run's validation loss rises, and the
    diagnosis names it and nothing else, and says nothing of the healthy run."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    folder, labels, reports = small_zoo
    run = folder / zoo.KERAS_LAYOUT / f"keras-overfitting-b{zoo.RECIPES['keras-overfitting'].batches[0]}-s0"
    assert f"{zoo.KERAS_LAYOUT}/{run.name}" in labels
    splits = {}
    for split in ("train", "validation"):
        events = EventAccumulator(str(run / split), size_guidance={"tensors": 0, "histograms": 0}).Reload()
        splits[split] = events.Tags()
        assert "epoch_loss" in splits[split]["tensors"] and not splits[split]["scalars"], split
        assert len(events.Tensors("epoch_loss")) == zoo.RECIPES["keras-overfitting"].epochs, split
    assert any(tag.endswith("kernel/histogram") for tag in splits["train"]["tensors"])
    val = tb.read_scalars(run / "validation", ["epoch_loss"]).value.to_numpy(dtype=float)
    assert val[-1] > 1.1 * val.min() and val.argmin() < len(val) - 1
    assert {f.rule for f in reports[f"{zoo.KERAS_LAYOUT}/{run.name}"].findings} == {"overfitting"}
    healthy = f"{zoo.KERAS_LAYOUT}/keras-healthy-b{zoo.RECIPES['keras-healthy'].batches[0]}-s0"
    assert reports[healthy].findings == [], reports[healthy].findings


@pytest.mark.slow
def test_no_healthy_run_of_the_zoo_gets_an_error(small_zoo):
    _, labels, reports = small_zoo
    healthy = [run for run, fault in labels.items() if fault == "healthy"]
    healthy_recipes = [name for name in SMALL if zoo.RECIPES[name].fault == "healthy"]
    assert len(healthy) == sum(map(runs_per_training, healthy_recipes))
    assert {run.split("/")[0] for run in healthy} == set(zoo.LAYOUTS) | {zoo.KERAS_LAYOUT}
    errors = {run: [(f.rule, f.tag, f.step) for f in reports[run].findings if f.severity == "error"]
              for run in healthy}
    assert errors == {run: [] for run in healthy}


@pytest.mark.slow
def test_new_recipes_are_what_they_are_labelled(tmp_path):
    """The data shift: the loss climbs back after update 120; the fp16 run: its scaler skipped its first
    updates (an inf gradient norm with the scale halved there), it learns after, and only the copy that logs
    the scale is labelled with the fact; the tool says nothing of the other. The long constant-rate run
    (batches of 8: a converged run's gradient norm jumps 20x at a hard batch, with the loss flat) gets its
    two notes and nothing else."""
    labels = zoo.write_zoo(tmp_path, seeds=(0,), recipes=["data_shift", "fp16-scaler", "constant-long"],
                           one_batch=True)
    shift = _loss(tmp_path, "book/data_shift-b16-s0")
    before, after = shift[100:120].mean(), shift[-40:].mean()
    assert before < 0.5 and after > 2 * before
    grad = _loss(tmp_path, "book/fp16-scaler-b16-s0", "train/grad_norm")
    scale = _loss(tmp_path, "book/fp16-scaler-b16-s0", "train/loss_scale")
    skipped = np.flatnonzero(~np.isfinite(grad))
    later = skipped[skipped > 0]  # the scale is logged after the update: halved at the skipped step itself
    assert len(skipped) >= 3 and (scale[later] < scale[later - 1]).all() and np.isfinite(grad[-100:]).all()
    assert _loss(tmp_path, "book/fp16-scaler-b16-s0")[-20:].mean() < 0.5  # it learned
    fp16 = {run: fault for run, fault in labels.items() if "fp16" in run}
    assert sorted(fp16.values()) == ["healthy", "scaler_skips"] and fp16["book/fp16-scaler-b16-s0"] == "scaler_skips"
    reports = {r.run: r for r in diagnose.diagnose(tmp_path)}
    for run, fault in fp16.items():
        want = [("scaler_skipped_steps", "note")] if fault == "scaler_skips" else []
        assert [(f.rule, f.severity) for f in reports[run].findings] == want, run
    # 1,000 updates at a constant rate: two notes where the rate is logged, nothing where it is not
    long = {run: fault for run, fault in labels.items() if "constant-long" in run}
    assert long["book/constant-long-b8-s0"] == "no_lr_schedule"
    for run, fault in long.items():
        notes = [("lr_never_warmed_up", "note"), ("lr_never_decayed", "note")]
        want = notes if fault == "no_lr_schedule" else []
        assert sorted((f.rule, f.severity) for f in reports[run].findings) == sorted(want), run
