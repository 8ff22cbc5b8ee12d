"""Answers to lab 4b: the dead fraction of a ReLU layer, and the diagnosis of five runs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from tests.checker_cases import Cases, Wrong

# ---------------------------------------------------------------- lab04b.dead_fraction: right


def all_zero_columns(activations):
    return (activations == 0).all(dim=0).float().mean().item()


def numpy_max_of_columns(activations):
    array = activations.detach().numpy()
    return float(np.mean(array.max(axis=0) <= 0))


def loop_over_units(activations):
    n_units = activations.shape[1]
    dead = 0
    for unit in range(n_units):
        if not bool((activations[:, unit] != 0).any()):
            dead += 1
    return dead / n_units


# ---------------------------------------------------------------- lab04b.dead_fraction: wrong


def counts_dead_units(activations):
    return int((activations == 0).all(dim=0).sum())


def returns_percent(activations):
    return 100 * all_zero_columns(activations)


def zero_entries(activations):
    return (activations == 0).float().mean().item()


def wrong_axis(activations):
    return (activations == 0).all(dim=1).float().mean().item()


def zero_on_any_example(activations):
    return (activations == 0).any(dim=0).float().mean().item()


def with_a_threshold(activations):
    return (activations < 1e-3).all(dim=0).float().mean().item()


def clamps_in_place(activations):
    """Zeroes small values in place before counting: it edits the caller's tensor."""
    with torch.no_grad():
        activations[activations < 0.5] = 0.0
    return all_zero_columns(activations)


def keeps_the_graph(activations):
    """A soft count that stays attached to the graph (and is not the fraction anyway)."""
    return (1 - torch.tanh(activations.sum(dim=0) * 1e9)).mean()


def numpy_without_detach(activations):
    return float(np.mean(activations.numpy().max(axis=0) == 0))


# ---------------------------------------------------------------- lab04b.diagnoses: right

KEY = {"run_a": "overfitting", "run_b": "dead_relus", "run_c": "healthy", "run_d": "lr_too_low",
       "run_e": "lr_too_high"}


def the_key():
    return dict(KEY)


def written_loosely():
    return {"A": "Overfitting", "b": "dead ReLUs", "Run_C": " healthy ", "run-d": "LR too low",
            "run_e": "lr-too-high"}


def as_a_series():
    return pd.Series(KEY)


# ---------------------------------------------------------------- lab04b.diagnoses: wrong



def overfitting_and_healthy_swapped():
    return {**KEY, "run_a": "healthy", "run_c": "overfitting"}


def dead_called_too_low():
    return {**KEY, "run_b": "lr_too_low"}


def too_low_called_dead():
    return {**KEY, "run_d": "dead_relus"}


def too_high_called_dead():
    """Subtle: the too-high run's units die too; its loss above ln 10 is what tells it apart."""
    return {**KEY, "run_e": "dead_relus"}


def dead_called_too_high():
    return {**KEY, "run_b": "lr_too_high"}


def everything_overfitting():
    return dict.fromkeys(KEY, "overfitting")


def label_not_in_the_vocabulary():
    return {**KEY, "run_a": "overfit"}


def a_run_left_out():
    return {name: label for name, label in KEY.items() if name != "run_e"}


def a_run_that_does_not_exist():
    return {**KEY, "run_f": "healthy"}


def labels_as_a_list():
    return list(KEY.values())


def forgets_to_return():
    labels = dict(KEY)
    labels.update(run_a="overfitting")  # and no return


CASES = {
    "lab04b.dead_fraction": Cases(
        correct=[all_zero_columns, numpy_max_of_columns, loop_over_units],
        wrong=[
            Wrong(counts_dead_units, "number of dead units"),
            Wrong(returns_percent, "percentage"),
            Wrong(zero_entries, "counts zero entries"),
            Wrong(wrong_axis, "wrong axis"),
            Wrong(zero_on_any_example, "not on some"),
            Wrong(with_a_threshold, "even weakly"),
            Wrong(clamps_in_place, "changed the activations"),
            Wrong(keeps_the_graph, "attached to the computation graph"),
            Wrong(numpy_without_detach, "raised RuntimeError"),
        ],
    ),
    "lab04b.diagnoses": Cases(
        correct=[the_key, written_loosely, as_a_series],
        wrong=[
            Wrong(overfitting_and_healthy_swapped, "run_a is not healthy"),
            Wrong(dead_called_too_low, "run_b is not lr_too_low"),
            Wrong(too_low_called_dead, "run_d is not dead_relus"),
            Wrong(too_high_called_dead, "run_e is not dead_relus"),
            Wrong(dead_called_too_high, "run_b is not lr_too_high"),
            Wrong(everything_overfitting, "4 of the 5 runs"),
            Wrong(label_not_in_the_vocabulary, "is not one of the labels"),
            Wrong(a_run_left_out, "no label for run_e"),
            Wrong(a_run_that_does_not_exist, "not a run of this lab"),
            Wrong(labels_as_a_list, "return a dict"),
            Wrong(forgets_to_return, "returned None"),
        ],
    ),
}


# ------------------------------------------------- wrong answers named from the symptom (issue 19)


def mean_activation(activations):
    """The mean activation: not a count of units at all."""
    return activations.detach().mean().item()


def rounded_to_one_decimal(activations):
    """The right fraction, rounded for display: 0.375 becomes 0.4."""
    return round(all_zero_columns(activations.detach()), 1)


def alive_count(activations):
    """The number of living units (not a fraction, and the wrong ones)."""
    return float((activations.detach() != 0).any(dim=0).sum())


CASES["lab04b.dead_fraction"].wrong.extend([
    Wrong(mean_activation, "is not a whole number of units"),
    Wrong(rounded_to_one_decimal, "is not a whole number of units"),
    Wrong(alive_count, "is not a fraction"),
])
