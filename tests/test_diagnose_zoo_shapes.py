"""The curve shapes of the zoo's runs (``tests/zoo.py``) that ``utils.diagnose`` once got wrong, each taken
from a real run of the zoo and checked against the rule that now reads it, with its boundary:

- a far too high rate that blows the loss up in the first updates, then leaves it at the untrained loss, with
  a small batch's dips below it (AdamW at 0.5, batch 16); and the same run logged as Hugging Face's Trainer
  logs it, a mean over every 10 updates, where the blow-up is inside the first point;
- overfitting with an evaluation every 50 updates: four or five evaluations after the best one, which early
  stopping would excuse, unless the last one is off the schedule (the run went on to its step budget), and
  a rise of a few big steps that is a trend, not noise;
- dead ReLUs, whose activations histogram collapses to 0: one finding, dead_units, not two;
- the book's GPT at 100x its rate: its loss rises before it learns anything, then stalls.
"""

from __future__ import annotations

import numpy as np

from tests.test_diagnose import found, healthy_histograms, healthy_series, only_run, write_run
from utils.diagnose import early_divergence, rules, validation_rules
from utils.diagnose.rules import NEVER_LEARNED, RULES


def s(values, steps=None) -> rules.Series:
    values = np.asarray(values, dtype=float)
    return (np.arange(len(values)) if steps is None else np.asarray(steps)), values


# --------------------------------------------------------------------------------------------- divergence

# book/lr_too_high-adamw-b16-s0's first 14 points, then its noisy stay near ln 10 (2.30): it dips to 2.13
BLOWN_UP = [2.286, 420.2, 588.2, 176.1, 132.5, 44.6, 11.9, 37.6, 15.2, 19.7, 6.4, 4.97, 3.82, 3.39] + \
    [2.24, 2.63, 2.28, 2.21, 2.51, 2.13, 2.41, 2.40, 2.34, 2.39, 2.33, 2.49, 2.47, 2.48, 2.52, 2.33] * 4


def test_a_jump_then_the_untrained_loss_with_dips_below_it_is_a_divergence():
    assert min(BLOWN_UP[3:]) < (1 - NEVER_LEARNED) * BLOWN_UP[0]  # dips: "never below" would miss it
    assert [(f.rule, f.step) for f in rules.check_divergence("loss", s(BLOWN_UP))] == [("divergence", 2)]
    # what decides is where it ended (the median of its last quarter), against NEVER_LEARNED below the start
    end = early_divergence.ending_level(np.asarray(BLOWN_UP), RULES["divergence"].window)
    learned = np.r_[BLOWN_UP[:14], np.asarray(BLOWN_UP[14:]) * 0.99 * (1 - NEVER_LEARNED) * BLOWN_UP[0] / end]
    stuck = np.r_[BLOWN_UP[:14], np.asarray(BLOWN_UP[14:]) * 1.01 * (1 - NEVER_LEARNED) * BLOWN_UP[0] / end]
    assert rules.check_divergence("loss", s(learned)) == []
    assert [f.rule for f in rules.check_divergence("loss", s(stuck))] == ["divergence"]


# hf/lr_too_high-adamw-b16-s0 and hf/healthy-constant-b64-s2: train/loss, a mean over every 10 updates
HF_BLOWN_UP = [144.8, 3.764, 5.984, 3.44, 2.389, 2.379, 2.356, 2.384, 2.396, 2.36, 2.432, 2.378, 2.392, 2.353,
               2.35, 2.373, 2.36, 2.418, 2.412, 2.362]
HF_HEALTHY = [2.2717, 2.1073, 1.5222, 0.669, 0.2701, 0.1577, 0.1478, 0.1033, 0.0813, 0.0571, 0.0658, 0.0409,
              0.0401, 0.0325, 0.0258, 0.031, 0.0223, 0.0188, 0.0164, 0.0146]


def test_a_blow_up_averaged_into_the_first_logged_point_is_a_divergence():
    steps = np.arange(10, 210, 10)
    assert [(f.rule, f.step) for f in rules.check_divergence("loss", s(HF_BLOWN_UP, steps))] == [
        ("divergence", 10)]
    # a healthy run's first mean is as far above the rest (40x), but it goes on learning after
    assert HF_HEALTHY[0] / np.median(HF_HEALTHY[1:]) > 30  # 40x
    assert rules.check_divergence("loss", s(HF_HEALTHY, steps)) == []


def test_learning_after_a_high_first_point_is_measured_against_never_learned():
    w = RULES["divergence"].window
    after = np.full(19, 1.0)
    settled = float(np.median(after[w - 1:9]))  # points `window` to the middle of the 20
    for factor, fires in ((1 - NEVER_LEARNED) * 0.99, False), ((1 - NEVER_LEARNED) * 1.01, True):
        tail = after.copy()
        tail[-5:] = factor * settled  # the last quarter: where it ended
        hit = early_divergence.blew_up_within_first_point(np.arange(20), np.r_[10.0, tail], 3.0, w, NEVER_LEARNED)
        assert (hit is not None) == fires, factor
    # the first point must be above threshold x the median of the rest: 3x exactly is not
    flat = np.r_[3.0, np.ones(19)]
    assert early_divergence.blew_up_within_first_point(np.arange(20), flat, 3.0, w, NEVER_LEARNED) is None


# book/gpt-lr_too_high-b32-s1's first 12 points (the GPT at 100x its rate), then its stay near 3.4 nats
GPT_HOT = [4.19, 5.76, 8.67, 8.59, 5.47, 4.94, 7.66, 6.84, 5.88, 5.98, 4.7, 4.48] + [3.45, 3.38, 3.41, 3.36] * 47


def test_a_rise_before_learning_then_a_stall_is_a_spike_not_a_plateau(tmp_path):
    """The loss rises to 2x its first value before it ever falls below it, learns a little and stalls at
    3.4: the report names the rise (a loss_spike: a rate too high from the start), not the plateau, whose
    remedy (raise the rate) would be wrong. The same rise followed by learning that goes on (chapter 8's
    residual net) is no finding; and a start that falls first is no rise before learning."""
    assert rules.check_divergence("loss", s(GPT_HOT)) == []  # the start (largest of 3 points) holds the rise
    assert [f.rule for f in rules.check_plateau("loss", s(GPT_HOT))] == ["plateau"]  # what it would say
    write_run(tmp_path / "hot" / "run", {"train/loss": dict(enumerate(GPT_HOT))})
    assert found(only_run(tmp_path / "hot")) == {("loss_spike", "train/loss"): 2}
    learns_on = GPT_HOT[:12] + list(np.geomspace(3.4, 0.2, len(GPT_HOT) - 12))
    write_run(tmp_path / "cured" / "run", {"train/loss": dict(enumerate(learns_on))})
    assert only_run(tmp_path / "cured").findings == []
    falls_first = [4.19, 3.9] + GPT_HOT[2:]
    assert early_divergence.rise_before_learning(np.asarray(falls_first), rules.EARLY_JUMP) is None
    write_run(tmp_path / "falls" / "run", {"train/loss": dict(enumerate(falls_first))})
    assert [f.rule for f in only_run(tmp_path / "falls").findings] == ["plateau"]


# --------------------------------------------------------------------------------------------- overfitting

SPARSE_STEPS = [0, 50, 100, 150, 200, 250, 299]  # every 50 updates, and at the last of 300
SPARSE_VAL = [2.237, 0.645, 0.646, 0.674, 0.748, 0.783, 0.863]  # book/overfitting-sparse-b16-s2
SPARSE_TRAIN = s(np.geomspace(2.0, 1e-5, 300))


def test_a_last_evaluation_off_the_schedule_means_the_run_went_to_its_budget():
    assert validation_rules.ran_to_its_budget(np.array(SPARSE_STEPS))
    assert validation_rules.ran_to_its_budget(np.array([0, 50, 100, 149]))
    assert not validation_rules.ran_to_its_budget(np.array([0, 50, 100, 150, 200, 250, 300]))  # on schedule
    assert not validation_rules.ran_to_its_budget(np.array([0, 50, 99]))  # one interval: no schedule to read
    assert not validation_rules.ran_to_its_budget(np.array([0, 40, 100, 149]))  # no regular schedule


def test_overfitting_with_five_sparse_evaluations_after_the_best():
    """Five evaluations after the best, within early stopping's patience; but the last is off the schedule,
    so the run did not stop early: overfitting. On the schedule, it may have been early stopping."""
    after_best = len(SPARSE_VAL) - 1 - int(np.argmin(SPARSE_VAL))
    assert after_best <= RULES["overfitting"].guard
    found_ = validation_rules.check_overfitting("val", s(SPARSE_VAL, SPARSE_STEPS), SPARSE_TRAIN)
    assert [(f.rule, f.step) for f in found_] == [("overfitting", 50)]
    on_schedule = s(SPARSE_VAL, [0, 50, 100, 150, 200, 250, 300])
    assert validation_rules.check_overfitting("val", on_schedule, SPARSE_TRAIN) == []


def test_a_steady_rise_in_few_big_steps_is_no_noise():
    """The later half rises by 0.035-0.08 per evaluation: as first differences that is one evaluation's
    noise (3 x 0.078 = 0.23 > the rise of 0.22, no finding); as second differences, 0.025 (a trend)."""
    later = np.array(SPARSE_VAL[3:])
    first_differences = 1.4826 * np.median(np.abs(np.diff(later))) / np.sqrt(2)
    rise = SPARSE_VAL[-1] - min(SPARSE_VAL)  # where it ended, above its best
    assert rules.NOISE_SE * first_differences > rise > rules.NOISE_SE * validation_rules._point_noise(later)
    jumpy = np.array(SPARSE_VAL[:3] + [0.9, 0.66, 0.95, 0.863])  # up and down as much: noise, no finding
    assert validation_rules.check_overfitting("val", s(jumpy, SPARSE_STEPS), SPARSE_TRAIN) == []


# --------------------------------------------------------------------------------------------- dead units


def test_activations_collapsed_to_zero_are_dead_units_only(tmp_path):
    hists = healthy_histograms()
    steps = sorted(hists["activations/layer1"])
    for step in steps[len(steps) // 2:]:
        hists["activations/layer1"][step] = np.zeros(2000)  # every ReLU outputs 0 for every input
    write_run(tmp_path / "dead", healthy_series(), hists)
    rules_on_layer = {rule for rule, tag in found(only_run(tmp_path)) if tag == "activations/layer1"}
    assert rules_on_layer == {"dead_units"}
