"""What each run the book writes was built to be, and how ``utils.diagnose``'s verdict on it is judged.

Shared by ``tests/test_diagnose_book_runs.py`` (the runs of the build) and ``tests/diagnose_matrix.py``
(the runs of every combination of the robustness matrix).
"""

from __future__ import annotations

from collections.abc import Mapping

from utils import diagnose

#: A fault -> the rules of which at least one names it. A broken run may get more findings (a diverging
#: run's gradients spike too); what it must get is one that names its fault.
FAULT_NAMES: dict[str, set[str]] = {
    "non_finite": {"non_finite", "divergence"},  # a loss that became NaN diverged, by divergence's definition
    # a rate too high for ReLUs kills them: dead units are its symptom too, and a spike its first sign; a
    # validation loss that never falls is one (no_validation_progress's meaning names "far too high"); so
    # are layers left with no gradient, whose histograms collapse (the GPT's blocks at 100x its rate: the
    # rule's remedy begins "lower the learning rate")
    "lr_too_high": {"divergence", "loss_spike", "rising_loss", "exploding_gradients", "non_finite",
                    "dead_units", "no_validation_progress", "collapsed_histogram"},
    "lr_too_low": {"plateau", "no_validation_progress", "vanishing_gradients"},
    "overfitting": {"overfitting"},
    "exploding_gradients": {"exploding_gradients", "divergence", "loss_spike", "rising_loss", "non_finite"},
    "vanishing_gradients": {"vanishing_gradients", "stalled_layer", "dead_layer", "plateau",
                            "no_validation_progress"},
    # ReLUs die from a too-high rate: its spike and gradient jump come first
    "dead_relus": {"dead_units", "dead_layer", "collapsed_histogram", "plateau", "rising_loss",
                   "no_validation_progress", "divergence", "loss_spike", "exploding_gradients"},
    # the data changed under a training run (a new shard, labels one row off): the loss climbs back up
    "data_shift": {"rising_loss", "no_validation_progress"},
    # not a fault: a mixed-precision run whose gradient scaler skipped updates, as designed; the fact is a note
    "scaler_skips": {"scaler_skipped_steps"},
    # not a fault either: a long run at a constant rate; the two facts are notes (a plateau, if it converged)
    "no_lr_schedule": {"lr_never_warmed_up", "lr_never_decayed", "plateau"},
    "shuffled_labels": {"no_validation_progress", "plateau"},  # the training loss stalls at chance too
    "not_training": {"divergence", "plateau", "rising_loss"},  # a series written by hand to show a dashboard
}

#: run -> (fault, why). "invisible": broken in a way no rule can see in one run's logs (said so in its
#: chapter); the tool must then say nothing wrong about it either.
BUILT: dict[str, tuple[str, str]] = {
    "ch00/plain-tensorboardx": ("non_finite", "a NaN logged on purpose through plain tensorboardX"),
    "ch04/lr_too_high": ("lr_too_high", "learning rate 10x the good run's"),
    "ch04/lr_too_low": ("lr_too_low", "learning rate 1/100 of the good run's"),
    "ch04/overfit": ("overfitting", "a few hundred examples, no early stopping"),
    "ch08/exploding-no-clip": ("exploding_gradients", "the deep net without clipping"),
    "ch08/vanishing-sigmoid": ("vanishing_gradients", "six sigmoid layers"),
    "ch08/vanishing-clipped": ("vanishing_gradients", "six sigmoid layers, clipped: clipping is no cure"),
    "ch08/lr-too-high": ("lr_too_high", "the reference's rate times 30"),
    "ch08/lr-too-low": ("lr_too_low", "the reference's rate divided by 100"),
    "ch08/overfit": ("overfitting", "50 training examples, no regularisation"),
    "ch08/curve-50": ("overfitting", "the learning curve's smallest training set"),
    "ch08/curve-100": ("overfitting", "the learning curve's second smallest training set"),
    "ch08/nan-class-mean": ("non_finite", "the unguarded class-balanced loss divides by zero"),
    "ch08/data-shuffled-labels": ("shuffled_labels", "labels shuffled apart from their inputs"),
    "ch08/data-raw-inputs": ("invisible", "unscaled inputs: it trains, worse"),
    "ch08/data-leaked-validation": ("invisible", "validation = training: invisible in one run"),
    "ch07/sweep-lr=3.0": ("dead_relus", "the sweep's highest rate kills the ReLUs"),
    "ch07/sweep-lr=1.0": ("dead_relus", "85-95 % of the hidden units die at this rate (seeds 0, 1, 2, 1337: 99 % "
                                        "of the outputs are 0); it learns with the rest, then stalls"),
    "ch07/long": ("not_training", "5,000 points at 1.0 with 20 spikes to 5.0: the sampling demo"),
    "ch07/pitfalls/ranks": ("not_training", "two ranks writing a constant: the every-rank pitfall"),
    "lab04b/run_a": ("overfitting", "40 training examples"),
    "lab04b/run_b": ("dead_relus", "learning rate 3.0"),
    "lab04b/run_d": ("invisible", "a too-low rate: its validation loss still falls 7.5 %"),
    "lab04b/run_e": ("lr_too_high", "learning rate 10.0"),
    "lab08/run_a": ("lr_too_low", "learning rate 5e-4"),
    "lab08/run_b": ("exploding_gradients", "the deep net without clipping"),
    "lab08/run_c": ("overfitting", "50 training examples, no regularisation"),
    "lab08/run_d": ("vanishing_gradients", "six sigmoid layers"),
    "lab08/run_e": ("non_finite", "a NaN from the unguarded class-balanced loss"),
    "lab08/run_f": ("shuffled_labels", "labels shuffled apart from their inputs"),
}

#: Healthy runs whose logs show something true that is no fault, with the rules that may say it and why.
_SHORT = "a short fine-tuning run on one budget: its training loss stops improving within its first updates"
TRUE_OBSERVATIONS: dict[str, tuple[set[str], str]] = {
    **{f"ch07/item-every-{n}": ({"divergence", "plateau", "rising_loss"},
                                "the loss of fixed weights on random inputs: the .item() pitfall's demo")
       for n in (1, 10)},
    "ch07/pitfalls/rank0_only": ({"plateau"}, "a constant written by hand: the rank-0 fix of a pitfall"),
    # Chapter 8's two weaker cures of vanishing gradients (chapter 8: their best validation loss is well
    # above Xavier's and the residual net's). Under other seeds and kernels (the robustness matrix) the
    # ReLU net, at the sigmoid's rate, spikes late, and the LayerNorm net stalls, under some seeds after a
    # dip it loses again (seed 1 on AVX2: 2.09 around step 130, back at 2.37): true of those runs.
    "ch08/vanishing-relu": ({"plateau", "rising_loss", "divergence", "exploding_gradients"},
                            "ReLU at the sigmoid's rate: it learns, and under some seeds spikes late"),
    "ch08/vanishing-layernorm": ({"plateau", "rising_loss"},
                                 "LayerNorm between sigmoids: it learns less well, then stalls or loses it"),
    **{f"ch08/remedy-{name}": ({"overfitting"}, "a remedy for overfitting: it narrows the gap, not always closes it")
       for name in ("augmentation", "dropout-0.2", "dropout-0.5", "dropout-0.8", "weight-decay-0.5",
                    "weight-decay-2", "weight-decay-8", "early-stopping", "more-data")},
    **{f"ch08/curve-{n}": ({"overfitting"}, "the learning curve: the fewer examples, the larger the gap")
       for n in (200, 400, 800, 1437)},
    **{f"ch06/{name}-s{seed}": (rules, why) for name, (rules, why) in {
        **{name: ({"plateau"}, _SHORT) for name in (
            "discriminative", "frozen", "lora-r8-lr0.003", "lora-r8-lr0.01", "sft-masked", "sft-unmasked",
            "adapt-bible", "adapt-replay", "minilm_head",
            *(f"{start}-n{n}" for start in ("pretrained", "random") for n in (60, 240, 480)))},
        "keras_head": ({"overfitting"}, "the Keras head's validation loss rises after its best epoch"),
        "keras_scratch": ({"overfitting", "no_validation_progress"},
                          "a network trained from scratch on 30 labelled images: it memorises them"),
        "keras_finetune": ({"no_validation_progress"}, "fine-tuning does not improve on the head it starts from"),
        "keras_finetune_bn_training": ({"no_validation_progress"},
                                       "the BatchNorm trap: no better than its head"),
    }.items() for seed in range(3)},
}


def verdicts(reports: Mapping[str, diagnose.RunReport]) -> list[str]:
    """Every run whose findings contradict what it is: a broken run whose fault no finding names, a healthy
    run with a finding, an invisible fault or a true observation that drew another finding."""
    wrong = []
    for run, report in sorted(reports.items()):
        got = {f.rule for f in report.findings}
        evidence = "; ".join(f"{f.rule} ({f.tag} step {f.step} value {f.value:.4g})" for f in report.findings)
        if run in BUILT:
            fault, why = BUILT[run]
            if fault == "invisible":
                if got:
                    wrong.append(f"{run} ({why}): no rule can see its fault, yet the tool says {evidence}")
            elif not got & FAULT_NAMES[fault]:
                wrong.append(f"{run} ({why}): no finding names {fault} "
                             f"({sorted(FAULT_NAMES[fault])}); got {evidence or 'nothing'}")
        elif run in TRUE_OBSERVATIONS:
            allowed, why = TRUE_OBSERVATIONS[run]
            if got - allowed:
                wrong.append(f"{run} (healthy: {why}): false alarm {evidence}")
        elif got:
            wrong.append(f"{run} (healthy): false alarm {evidence}")
    return wrong
