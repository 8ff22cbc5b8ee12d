"""Checkers of lab 4 (``labs/lab04_training.ipynb``): a batch-size-weighted validation loss, early stopping."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

from utils.checks import CheckFailed, call, checker, graph_free_number, passed, scale_fault, unchanged


class _ModeProbe(torch.nn.Module):
    """Passes its input through and records, for each forward, whether gradients were on and whether the
    model was in training mode (the probe's own ``training`` follows ``model.train()``/``model.eval()``)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[bool, bool]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append((torch.is_grad_enabled(), self.training))
        return x


def _validation_setup() -> tuple[torch.nn.Module, _ModeProbe, list, torch.Tensor, list[int]]:
    """A model with dropout (in training mode, as a training loop leaves it), batches of 40, 40 and 20 examples
    sorted by loss (so that every way of averaging gives a different number), and the per-example losses."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(100, 6, generator=generator)
    y = torch.randint(0, 3, (100,), generator=generator)
    torch.manual_seed(0)
    probe = _ModeProbe()
    model = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(), probe, torch.nn.Dropout(0.5),
                                torch.nn.Linear(16, 3))
    with torch.no_grad():
        model.eval()
        per_example = torch.nn.functional.cross_entropy(model(x), y, reduction="none")
    model.train()
    probe.calls.clear()
    order = torch.argsort(per_example)
    sizes = [40, 40, 20]
    starts = [0, 40, 80]
    batches = [(x[order][s:s + n], y[order][s:s + n]) for s, n in zip(starts, sizes, strict=True)]
    return model, probe, batches, per_example[order], sizes


def _averaging_mistakes(losses: torch.Tensor, sizes: list[int]) -> list[tuple[float, str]]:
    """(value, diagnosis) of the ways to average the per-example ``losses`` wrongly."""
    bounds = [sum(sizes[:i]) for i in range(len(sizes) + 1)]
    means = [losses[a:b].mean().item() for a, b in zip(bounds, bounds[1:], strict=False)]
    total = losses.sum().item()
    return [
        (sum(means) / len(means), "the mean of the batch means: with batches of different sizes that "
                                  "over-weights the small last batch. Weight each batch by its number of "
                                  "examples and divide by the total number of examples"),
        (total, "the sum over all examples: divide by the number of examples"),
        (sum(m * n for m, n in zip(means, sizes, strict=True)) / len(means),
         "divided by the number of batches: divide the summed loss by the number of examples"),
        (total / (sizes[0] * len(sizes)), "every batch is assumed to have the size of the first one: count the "
                                          "examples of each batch (len(x))"),
        (means[0], "only the first batch was evaluated (is the return inside the loop?)"),
        (sum(m * n for m, n in zip(means[:-1], sizes, strict=False)) / sum(sizes[:-1]),
         "the last batch is missing: every batch of the list counts"),
    ]


def _validation_symptom(got: float, expected: float, calls: int, batches: int) -> str | None:
    """What a wrong validation loss shows by itself: batches skipped or seen twice, exp() of the loss (the
    perplexity), a negative loss, or a constant factor."""
    if calls != batches:
        return (f"the model ran {calls} time(s) for {batches} batches: run it once on every batch of the "
                "list, no batch skipped and none twice")
    if math.isclose(got, math.exp(expected), rel_tol=1e-5):
        return "that is exp(loss), the perplexity: return the mean cross-entropy itself"
    if got < 0:
        return "a cross-entropy is never negative: -log p >= 0 (a sign lost, or the log of the wrong thing?)"
    return scale_fault(got, expected, "the loss")


@checker("lab04.validation_loss")
def check_validation_loss(validation_loss: Callable[[torch.nn.Module, list], float]) -> None:
    """``validation_loss(model, batches)``: mean cross-entropy over every example of ``batches`` (a list of
    ``(x, y)`` of different sizes) as a Python float, with the model in eval mode (dropout off) and under
    ``torch.no_grad()``, and the model back in training mode afterwards."""
    model, probe, batches, losses, sizes = _validation_setup()
    result = call(validation_loss, model, batches)
    if isinstance(result, torch.Tensor):
        graph_free_number(result, "validation_loss")  # names a graph first, if there is one
        raise CheckFailed("validation_loss returned a tensor: return a Python float (.item()), which a "
                          "training loop can log and compare")
    got = graph_free_number(result, "validation_loss")
    if not model.training:
        raise CheckFailed("the model was left in eval mode: restore model.train() after evaluating (a training "
                          "loop that evaluates in the middle would go on without dropout)")
    if not probe.calls:
        raise CheckFailed("the model was never called on the batches: compute model(x) for each batch")
    if any(training for _, training in probe.calls):
        raise CheckFailed("the model ran in training mode, so dropout is active and the loss is noisy: call "
                          "model.eval() before evaluating (and model.train() after)")
    if any(grad for grad, _ in probe.calls):
        raise CheckFailed("the forward passes ran with gradients enabled: wrap the evaluation in "
                          "torch.no_grad(), or PyTorch keeps every activation for a backward that never comes")
    expected = losses.mean().item()
    if not math.isclose(got, expected, rel_tol=1e-5):
        for wrong, message in _averaging_mistakes(losses, sizes):
            if math.isclose(got, wrong, rel_tol=1e-5):
                raise CheckFailed(f"returned {got:.4f}, expected {expected:.4f}: {message}")
        symptom = _validation_symptom(got, expected, len(probe.calls), len(sizes))
        raise CheckFailed(f"returned {got:.4f}, expected {expected:.4f}" + (f": {symptom}" if symptom else
                          f" (mean cross-entropy over all {sum(sizes)} examples, batches of {sizes})"))
    passed("lab04.validation_loss")


def _stop(val_losses: Sequence[float], patience: int, *, ties_improve: bool = False, late: bool = False,
          reset: bool = True, against_previous: bool = False, skip_non_finite: bool = False,
          bad_if_not_lower: bool = True, result: str = "index", never: Any = None) -> Any:
    """The early-stopping rule with one mistake switched on (the defaults compute it right).
    bad_if_not_lower=False counts an evaluation as bad only when ``value >= best`` (NaN then "improves");
    result: "index", "count" (index + 1) or "best" (the index of the best evaluation)."""
    best, best_index, previous, bad = math.inf, None, math.inf, 0
    for index, value in enumerate(val_losses):
        if skip_non_finite and not math.isfinite(value):
            continue
        reference = previous if against_previous else best
        improved = value <= reference if ties_improve else value < reference
        if not bad_if_not_lower:
            improved = not value >= reference
        previous = value
        if improved:
            best, best_index = value, index
            bad = 0 if reset else bad
        else:
            bad += 1
            if bad > patience if late else bad >= patience:
                return {"index": index, "count": index + 1, "best": best_index}[result]
    return never


#: (val_losses, patience): always improving, a plateau, improvements resetting the count, the best so far vs
#: the previous value, ties, an improvement right after stopping, infinities, NaN (and a recovery after it),
#: patience 1, nothing.
STOP_CASES: list[tuple[list[float], int]] = [
    ([1.0, 0.9, 0.8, 0.7], 2),
    ([1.0, 0.9, 0.95, 0.97, 0.99, 1.0, 1.0], 3),
    ([1.0, 1.1, 0.9, 1.2, 0.85, 1.3, 1.4], 2),
    ([1.0, 0.8, 0.85, 0.82, 0.81, 0.9], 4),
    ([1.0, 0.9, 0.9, 0.9, 0.9], 3),
    ([1.0, 1.1, 1.2, 0.5, 0.6, 0.7, 0.8], 2),
    ([1.0, 0.9, math.inf, math.inf, 0.8], 2),
    ([1.0, 0.9, math.nan, math.nan, 0.95], 2),
    ([1.0, 0.9, math.nan, 0.8, 0.85, 0.9], 2),
    ([2.0, 2.0], 1),
    ([], 3),
]

#: (variant options, diagnosis), recognised only when the answer reproduces the variant on every case.
STOP_MISTAKES: list[tuple[dict[str, Any], str]] = [
    ({"ties_improve": True}, "a loss equal to the best so far counted as an improvement: only a strictly "
                             "lower loss is a new best (compare with <, not <=)"),
    ({"late": True}, "one evaluation late: stop when the count of evaluations without improvement *reaches* "
                     "patience (>=, not >)"),
    ({"reset": False}, "the count of bad evaluations is never reset: set it back to 0 whenever a new best "
                       "appears"),
    ({"against_previous": True}, "each loss is compared with the previous one: compare it with the *best* "
                                 "so far"),
    ({"skip_non_finite": True}, "non-finite losses (inf, NaN) were skipped: a diverged evaluation is an "
                                "evaluation without improvement and counts towards patience"),
    ({"bad_if_not_lower": False}, "a NaN loss counted as an improvement: every comparison with NaN is "
                                  "False, so test for a new best (value < best) and count everything else as "
                                  "bad, rather than testing value >= best"),
    ({"result": "count"}, "the number of evaluations was returned (index + 1): return the 0-based index of the "
                          "evaluation at which the run stops"),
    ({"result": "best"}, "the index of the best evaluation was returned: return the index at which the run "
                         "stops (the best one is where a checkpoint would be restored from)"),
    ({"never": -1}, "a run that never stops must return None, not -1"),
    ({"never": False}, "a run that never stops must return None, not False"),
]


@checker("lab04.stop_index")
def check_stop_index(stop_index: Callable[[Sequence[float], int], Any]) -> None:
    """``stop_index(val_losses, patience)``: the index of the evaluation at which early stopping ends the run
    (the ``patience``-th evaluation in a row without a new best, a new best being strictly lower than every
    finite loss; inf and NaN are never a new best), or ``None`` if it never does. ``val_losses`` unchanged."""
    answers = []
    for losses, patience in STOP_CASES:
        given = list(losses)
        answers.append(call(stop_index, given, patience))
        if not unchanged(given, losses):
            raise CheckFailed(f"stop_index changed the list of losses it was given (now {given}): read it "
                              "without sorting or modifying it")
    expected = [_stop(losses, patience) for losses, patience in STOP_CASES]
    wrong = [i for i, (got, want) in enumerate(zip(answers, expected, strict=True)) if not _same(got, want)]
    if not wrong:
        passed("lab04.stop_index")
        return
    for options, message in STOP_MISTAKES:
        if all(_same(got, _stop(losses, patience, **options))
               for got, (losses, patience) in zip(answers, STOP_CASES, strict=True)):
            raise CheckFailed(message)
    symptom = _stop_symptom(answers, expected)
    if symptom:
        raise CheckFailed(symptom)
    losses, patience = STOP_CASES[wrong[0]]
    raise CheckFailed(f"stop_index({losses}, patience={patience}) returned {answers[wrong[0]]!r}, expected "
                      f"{expected[wrong[0]]!r}: count the evaluations since the last new best (strictly lower "
                      "than every earlier loss) and return the index where the count reaches patience")


def _stop_symptom(answers: list[Any], expected: list[Any]) -> str | None:
    """What the wrong answers have in common, whatever rule produced them: always one evaluation early or
    late, always too early, a run stopped that never should, or one never stopped."""
    wrong = [(i, got, want) for i, (got, want) in enumerate(zip(answers, expected, strict=True))
             if not _same(got, want)]
    shown = "; ".join(f"stop_index({STOP_CASES[i][0]}, patience={STOP_CASES[i][1]}) returned {got!r}, "
                      f"expected {want!r}" for i, got, want in wrong[:2])
    if all(want is None for _, _, want in wrong):
        return (f"stopped runs that never reach patience ({shown}): return None when no `patience` "
                "evaluations in a row fail to improve")
    if all(got is None for _, got, _ in wrong):
        return (f"never stopped a run that should stop ({shown}): return the index as soon as the count "
                "reaches patience")
    counts = [_count_at(STOP_CASES[i][0], got) - STOP_CASES[i][1] for i, got, _ in wrong
              if got is not None and not isinstance(got, bool) and isinstance(got, int | float)
              and float(got) == int(got) and 0 <= got < len(STOP_CASES[i][0])]
    if len(counts) == len(wrong):  # each answer an index of its losses: how far was the count there?
        if set(counts) == {-1}:
            return (f"one evaluation early ({shown}): at each index you returned, the count of evaluations in "
                    "a row without a new best was patience - 1. Count the evaluation itself, then compare")
        if set(counts) == {1}:
            return f"one evaluation late ({shown}): stop at the evaluation where the count reaches patience"
        if all(c < 0 for c in counts):
            return (f"stops too early ({shown}): at the index you returned, fewer than patience evaluations "
                    "in a row had failed to improve on the best")
    return None


def _count_at(val_losses: Sequence[float], index: int) -> int:
    """How many evaluations in a row, up to ``index`` included, brought no new best (strictly lower than every
    earlier finite loss; inf and NaN never are)."""
    best, bad = math.inf, 0
    for value in val_losses[:int(index) + 1]:
        best, bad = (value, 0) if value < best else (best, bad + 1)
    return bad


def _same(got: Any, want: Any) -> bool:
    """Equal as early-stopping answers: None only equals None, and an index equals an int of the same value
    (a bool is not an index)."""
    if want is None or got is None or isinstance(got, bool) or isinstance(want, bool):
        return got is want
    try:
        return int(got) == want and float(got) == float(want)
    except (TypeError, ValueError):
        return False
