"""``utils.diagnose`` on every run the book writes: each deliberately broken run gets exactly the findings
listed in ``BROKEN``, and every other run (every healthy run of every chapter and lab) gets none. False
alarms measured, not hoped.

It reads the ``runs/`` tree that ``make book`` writes (``make test`` builds the book before pytest runs). A
chapter that adds a broken run on purpose adds one line to ``BROKEN``: run (relative to ``runs/``) -> the
rule names it must report (an empty set: broken, but invisible to the tool; said so in the chapter).
Labs 0-5 write runs only once solved (``if ready(...)``), all healthy; labs 6 and 9 write their runs as
shipped, so they are listed here.
"""

from __future__ import annotations

import pytest

from utils import diagnose, paths

BROKEN: dict[str, set[str]] = {
    # chapter 0: a NaN logged on purpose through plain tensorboardX
    "ch00/plain-tensorboardx": {"non_finite"},
    # chapter 4: three bad runs against ch04/good (which early stopping ended: no finding)
    "ch04/lr_too_high": {"divergence", "exploding_gradients"},  # validation improved before it blew up
    "ch04/lr_too_low": {"plateau", "no_validation_progress"},
    "ch04/overfit": {"overfitting"},
    # chapter 8: each failure produced on purpose, and the fixes that only partly fix it
    "ch08/exploding-no-clip": {"divergence", "exploding_gradients"},
    "ch08/vanishing-sigmoid": {"plateau", "no_validation_progress", "stalled_layer", "dead_layer"},
    "ch08/vanishing-clipped": {"plateau", "no_validation_progress", "dead_layer"},  # clipping: no cure
    "ch08/vanishing-xavier": {"plateau"},  # initialisation alone does not rescue six sigmoid layers
    "ch08/vanishing-relu": {"exploding_gradients"},  # learns, with one gradient spike
    "ch08/lr_range_test": set(),  # stopped at 4x its lowest loss, before it rose 3x above its start
    "ch08/lr-too-high": {"divergence", "exploding_gradients", "no_validation_progress"},
    "ch08/lr-too-low": {"plateau", "no_validation_progress"},
    "ch08/overfit": {"overfitting"},
    "ch08/remedy-weight-decay": {"overfitting"},  # each remedy's measured effect is in the chapter
    "ch08/remedy-dropout": {"overfitting"},
    "ch08/curve-50": {"overfitting"},  # the learning curve's smallest training sets
    "ch08/curve-100": {"overfitting"},
    "ch08/curve-200": {"overfitting"},
    "ch08/nan-class-mean": {"non_finite", "divergence"},
    "ch08/data-shuffled-labels": {"no_validation_progress"},
    "ch08/data-raw-inputs": set(),  # trains, worse: the tool cannot know the inputs were not scaled
    "ch08/data-leaked-validation": set(),  # validation = training: invisible to any rule on one run
    # chapter 6: short fine-tuning runs on one budget. The tool's findings on them are true, not false
    # alarms (checked against each curve): these training losses stop improving within the first 20 of
    # 32-56 updates, the Keras fine-tuning stage does not improve on the head it starts from (as the chapter
    # measures), the Keras head's validation loss rises after its best epoch, and the deliberately too-high
    # rate recovers within its epochs, so no rule sees it.
    "ch06/discriminative": {"plateau"},
    "ch06/lora-r2-lr0.003": {"plateau"},
    "ch06/lora-r2-lr0.01": {"plateau"},
    "ch06/lora-r8-lr0.003": {"plateau"},
    "ch06/lora-r8-lr0.01": {"plateau"},
    "ch06/pretrained-n2048": {"plateau"},
    "ch06/keras_head": {"overfitting"},
    "ch06/keras_finetune": {"no_validation_progress"},
    "ch06/keras_finetune_bn_training": {"no_validation_progress"},
    "ch06/keras_finetune_high_lr": set(),
    # chapter 7: a learning-rate sweep whose two highest rates are meant to fail (dead ReLUs at 3.0), and
    # two series written by hand to show the dashboards, not training (read as loss curves, they are broken)
    "ch07/sweep-lr=1.0": {"plateau", "overfitting"},
    "ch07/sweep-lr=3.0": {"divergence", "overfitting", "exploding_gradients", "collapsed_histogram",
                          "dead_layer"},
    "ch07/long": {"divergence"},  # 5,000 points at 1.0 with 20 spikes to 5.0: the sampling demo
    "ch07/pitfalls/ranks": {"plateau"},  # two ranks writing a constant: the every-rank pitfall
    # lab 6: five runs, one healthy (run_c)
    "lab06/run_a": {"overfitting"},
    "lab06/run_b": {"plateau", "overfitting", "exploding_gradients"},
    "lab06/run_d": set(),  # a too-low rate: its validation loss still falls 7.5 %, above the 5 % the rule needs
    "lab06/run_e": {"overfitting"},
    # lab 9: six runs, each one setting away from a healthy twin (lab09/reference is healthy; the other
    # twins are trained only once the lab's first exercise is solved)
    "lab09/run_a": {"plateau", "no_validation_progress"},  # learning rate too low
    "lab09/run_b": {"divergence", "exploding_gradients"},
    "lab09/run_c": {"overfitting"},
    "lab09/run_d": {"plateau", "no_validation_progress", "stalled_layer"},  # vanishing gradients
    "lab09/run_e": {"non_finite", "divergence"},  # a NaN from the unguarded class-balanced loss
    "lab09/run_f": {"no_validation_progress"},  # shuffled labels
}


@pytest.fixture(scope="module")
def reports() -> dict[str, diagnose.RunReport]:
    root = paths.runs_dir()
    if not root.is_dir() or not any(root.iterdir()):
        pytest.fail(f"no runs under {root}: run make book first (it executes every notebook, which write "
                    "their runs there)")
    return {report.run: report for report in diagnose.diagnose(root)}


def _evidence(report: diagnose.RunReport) -> str:
    return "; ".join(f"{f.rule} ({f.tag} step {f.step} value {f.value:.4g})" for f in report.findings)


def test_every_broken_run_was_written(reports):
    missing = sorted(run for run in BROKEN if run not in reports)
    assert not missing, f"broken runs listed in BROKEN but not under runs/: {missing} (run make book first)"


def test_broken_runs_get_exactly_their_findings(reports):
    wrong = []
    for run, expected in BROKEN.items():
        if run in reports:
            got = {f.rule for f in reports[run].findings}
            if got != expected:
                wrong.append(f"{run}: expected {sorted(expected)}, got {_evidence(reports[run]) or 'nothing'}")
    assert not wrong, "\n".join(wrong)


def test_every_other_run_gets_no_finding(reports):
    alarms = [f"{run}: {_evidence(report)}" for run, report in sorted(reports.items())
              if run not in BROKEN and report.findings]
    assert not alarms, f"{len(alarms)} false alarm(s) of {len(reports) - len(BROKEN)} healthy runs:\n" + \
        "\n".join(alarms)
