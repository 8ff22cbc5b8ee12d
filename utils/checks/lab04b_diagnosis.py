"""Lab 4b (``labs/lab04b_diagnosis.ipynb``): five real training runs to diagnose, and their checkers.

``make_runs`` trains the five runs with ``utils.loop.train`` (a one-hidden-layer ReLU network on the 8x8
digits, SGD with momentum): a healthy run, and four that differ from it in exactly one setting, each
logged under ``runs/lab04b/run_a`` ... ``run_e`` with the hidden layer's activations as histograms. The lab
shows them without their settings; the reader names what is wrong with each (``lab04b.diagnoses``) and
writes the measurement that tells a dead layer apart (``lab04b.dead_fraction``). Read ``RUNS`` after you
have answered.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from utils.checks import (
    CheckFailed,
    answers_per_run,
    call,
    checker,
    graph_free_number,
    normalised,
    passed,
    unchanged,
)
from utils.evaluation import dead_unit_fraction

LABELS = ("healthy", "lr_too_low", "lr_too_high", "overfitting", "dead_relus")
CLASSES = 10  # digits: a uniform guess scores ln 10 = 2.30 nats


@dataclass(frozen=True)
class RunSettings:
    """One run of the lab; every run differs from ``HEALTHY`` in one field."""

    lr: float = 0.1
    train_examples: int = 1000
    steps: int = 200
    batch_size: int = 32
    hidden: int = 128
    eval_every: int = 10


HEALTHY = RunSettings()
RUNS = {  # run name -> (what is wrong, its settings); the notebook shows only the names
    "run_a": ("overfitting", replace(HEALTHY, train_examples=40)),
    "run_b": ("dead_relus", replace(HEALTHY, lr=3.0)),
    "run_c": ("healthy", HEALTHY),
    "run_d": ("lr_too_low", replace(HEALTHY, lr=1e-3)),
    "run_e": ("lr_too_high", replace(HEALTHY, lr=10.0)),
}


def hidden_activations(model: torch.nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """The ReLU layer's outputs for inputs x (N, 64): (N, hidden), no graph."""
    with torch.no_grad():
        return model[1](model[0](x))


def train_run(name: str, settings: RunSettings, data: tuple, writer: Any) -> torch.nn.Sequential:
    """Train one run with ``utils.loop.train``; log the hidden activations at every evaluation."""
    from utils import batches, evaluation, loop

    x_train, y_train, x_val, y_val = data
    torch.manual_seed(0)  # the same initial weights for every run
    model = torch.nn.Sequential(torch.nn.Linear(64, settings.hidden), torch.nn.ReLU(),
                                torch.nn.Linear(settings.hidden, CLASSES))
    optimizer = torch.optim.SGD(model.parameters(), lr=settings.lr, momentum=0.9)
    config = loop.TrainConfig(max_steps=settings.steps, lr=settings.lr, min_lr=settings.lr,
                              eval_every=settings.eval_every, log_every=5, progress=False, desc=name)
    def evaluate(net: torch.nn.Module, step: int) -> dict[str, float]:
        writer.add_histogram("activations/hidden", hidden_activations(net, x_val), step)
        return evaluation.evaluate(net, [(x_val, y_val)], evaluation.classification_loss)

    n = settings.train_examples
    loop.train(model, optimizer, config, writer=writer, eval_fn=evaluate,
               batch_fn=batches.epoch_batches(x_train[:n], y_train[:n], settings.batch_size))
    return model


def make_runs(chapter: str = "lab04b") -> dict[str, tuple[Path, torch.nn.Sequential]]:
    """Train every run of ``RUNS`` into ``runs/<chapter>/<name>``; return ``{name: (run dir, model)}``."""
    from utils import tb
    from utils.datasets import digits_split

    data = digits_split()
    made = {}
    for name, (_, settings) in RUNS.items():
        with tb.open_run(chapter, name) as writer:
            made[name] = (Path(writer.logdir), train_run(name, settings, data, writer))
    return made


# --------------------------------------------------------------------------- lab04b.dead_fraction


def _activation_cases() -> list[tuple[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    base = torch.relu(torch.randn(6, 8, generator=generator))  # (N=6, U=8)
    base[:, [1, 4, 6]] = 0.0  # three dead units
    base[0, :] = 0.0  # one example on which no unit fires: dead units are columns, not rows
    whisper = base.clone()
    whisper[:, 2] = 0.0
    whisper[3, 2] = 1e-7  # fires once, weakly: alive
    mostly = base.clone()
    mostly[1:, 5] = 0.0  # zero on 5 of 6 examples: alive
    return [("three dead units of 8", base), ("a unit that fires once, weakly", whisper),
            ("a unit silent on 5 of 6 examples", mostly), ("every unit dead", torch.zeros(4, 5)),
            ("no unit dead", torch.relu(torch.randn(5, 4, generator=generator)) + 0.1),
            ("activations with a graph", base.clone().requires_grad_(True))]


def _fraction_fault(got: float, x: torch.Tensor) -> str | None:
    expected = dead_unit_fraction(x)
    zero = (x.detach() == 0)
    faults = [
        (expected * x.shape[1], "it returns the number of dead units: return the fraction (divide by U)"),
        (100 * expected, "it returns a percentage: return a fraction between 0 and 1"),
        (float(zero.double().mean()), "it counts zero entries; a unit is dead when its whole column "
                                      "(all N examples) is 0"),
        (float(zero.all(dim=1).double().mean()), "it looks along the wrong axis (rows are examples, "
                                                 "columns are units)"),
        (float(zero.any(dim=0).double().mean()), "a unit is dead only when it is 0 on *every* example, "
                                                 "not on some"),
        (float((x.detach() < 1e-3).all(dim=0).double().mean()),
         "a unit that fires at all, even weakly (1e-7), is alive: compare with exactly 0, no threshold"),
    ]
    named = next((text for value, text in faults if math.isclose(got, value, abs_tol=1e-6)), None)
    if named:
        return named
    units = x.shape[1]
    if not 0 <= got <= 1:
        return f"{got:.4g} is not a fraction: the share of the U = {units} units that are dead lies in [0, 1]"
    if not math.isclose(got * units, round(got * units), abs_tol=1e-6):
        return (f"{got:.4g} is not a whole number of units out of U = {units} (a fraction of units is a multiple "
                f"of 1/{units}): count units (columns) that are entirely 0, do not average activations")
    return None


@checker("lab04b.dead_fraction")
def check_dead_fraction(dead_fraction: Callable[[torch.Tensor], Any]) -> None:
    """``dead_fraction(activations)``: (N examples, U units) ReLU outputs -> the fraction of units that
    are 0 on every example, as a plain number."""
    for label, activations in _activation_cases():
        original = activations.detach().clone()
        what = f"dead_fraction(<{label}>)"
        got = graph_free_number(call(dead_fraction, activations), what)
        if not unchanged(activations.detach(), original):
            raise CheckFailed(f"{what} changed the activations it was given (an in-place operation): "
                              "measure them without editing them")
        expected = dead_unit_fraction(activations.detach())
        if math.isclose(got, expected, abs_tol=1e-6):
            continue
        fault = _fraction_fault(got, activations.detach())
        raise CheckFailed(f"case {label!r}: {fault or 'wrong fraction'}: got {got:.4g}, expected "
                          f"{expected:.4g}\n  activations (rows: examples, columns: units)\n"
                          f"{np.array2string(original.numpy(), precision=3)}")
    passed("lab04b.dead_fraction")


# --------------------------------------------------------------------------- lab04b.diagnoses

LOOKS_LIKE = {  # what each label looks like in these runs' curves and histograms
    "healthy": "both losses fall and level off together, the validation loss close to the training loss",
    "lr_too_low": "the loss barely moves below ln 10 = 2.30 in 200 updates while the hidden units stay "
                  "alive (a broad histogram): each step is too small to get anywhere",
    "lr_too_high": "the loss stays far above ln 10 = 2.30, worse than a uniform guess, and jumps between "
                   "evaluations: each update overshoots (its units die too, but a loss above ln 10 is the "
                   "symptom)",
    "overfitting": "the training loss falls to almost 0 while the validation loss, after its minimum, "
                   "rises: the model memorises its 40 training examples",
    "dead_relus": "after its first updates the loss settles around ln 10 with accuracy at chance, "
                  "and the hidden histogram is a spike at 0: almost every ReLU outputs 0 for every "
                  "input, so no gradient reaches them",
}


def _labels_of(answer: Any) -> dict[str, str]:
    given = answers_per_run(answer, RUNS, "diagnoses", "{run name: label}, e.g. {'run_a': 'healthy', ...}",
                            "label")
    labels = {name: normalised(value) for name, value in given.items()}
    unknown = {name: label for name, label in labels.items() if label not in LABELS}
    if unknown:
        raise CheckFailed(f"{unknown} is not one of the labels: use one of {', '.join(LABELS)}")
    return labels


@checker("lab04b.diagnoses")
def check_diagnoses(diagnoses: Callable[[], Any]) -> None:
    """``diagnoses()`` -> ``{run name: label}`` with a label from ``LABELS`` for each run of ``RUNS``.
    Every wrong label is explained: what the run shows, and what the chosen label would look like."""
    labels = _labels_of(call(diagnoses))
    wrong = {name: label for name, label in labels.items() if label != RUNS[name][0]}
    if not wrong:
        passed("lab04b.diagnoses")
        return
    lines = [f"{len(wrong)} of the {len(RUNS)} runs are labelled wrong:"]
    for name, given in wrong.items():
        truth = RUNS[name][0]
        lines.append(f"- {name} is not {given}: {LOOKS_LIKE[truth]} ({truth}). {given} would look "
                     f"different: {LOOKS_LIKE[given]}.")
    raise CheckFailed("\n".join(lines))
