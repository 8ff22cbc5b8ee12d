"""Answers to lab 4: a batch-size-weighted validation loss, early stopping."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from tests.checker_cases import Cases, Wrong

# ---------------------------------------------------------------- lab04.validation_loss: right


def val_reference(model, batches):
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for x, y in batches:
            total += F.cross_entropy(model(x), y).item() * len(x)
            count += len(x)
    model.train()
    return total / count


def val_summed_inference_mode(model, batches):
    """Summed losses under inference_mode; the previous mode restored whatever it was."""
    was_training = model.training
    model.eval()
    total, count = torch.zeros(()), 0
    with torch.inference_mode():
        for x, y in batches:
            total += F.cross_entropy(model(x), y, reduction="sum")
            count += y.numel()
    model.train(was_training)
    return (total / count).item()


def val_concatenated_numpy(model, batches):
    """All logits at once, a numpy float out."""
    model.eval()
    with torch.no_grad():
        logits = torch.cat([model(x) for x, _ in batches])
        targets = torch.cat([y for _, y in batches])
        loss = np.float64(F.cross_entropy(logits.double(), targets).item())
    model.train()
    return loss


# ---------------------------------------------------------------- lab04.validation_loss: wrong


def val_mean_of_means(model, batches):
    model.eval()
    with torch.no_grad():
        means = [F.cross_entropy(model(x), y).item() for x, y in batches]
    model.train()
    return sum(means) / len(means)


def val_no_eval(model, batches):
    total, count = 0.0, 0
    with torch.no_grad():
        for x, y in batches:
            total += F.cross_entropy(model(x), y).item() * len(x)
            count += len(x)
    return total / count


def val_leaves_eval_mode(model, batches):
    result = val_reference(model, batches)
    model.eval()
    return result


def val_without_no_grad(model, batches):
    model.eval()
    total, count = 0.0, 0
    for x, y in batches:
        total += F.cross_entropy(model(x), y).item() * len(x)
        count += len(x)
    model.train()
    return total / count


def val_returns_graph(model, batches):
    model.eval()
    total, count = 0.0, 0
    for x, y in batches:
        total = total + F.cross_entropy(model(x), y) * len(x)
        count += len(x)
    model.train()
    return total / count


def val_returns_tensor(model, batches):
    model.eval()
    total, count = torch.zeros(()), 0
    with torch.no_grad():
        for x, y in batches:
            total += F.cross_entropy(model(x), y, reduction="sum")
            count += len(x)
    model.train()
    return total / count


def val_weighted_sum(model, batches):
    return val_reference(model, batches) * sum(len(x) for x, _ in batches)


def val_divided_by_batches(model, batches):
    return val_reference(model, batches) * sum(len(x) for x, _ in batches) / len(batches)


def val_assumes_equal_batches(model, batches):
    return val_reference(model, batches) * sum(len(x) for x, _ in batches) / (len(batches) * len(batches[0][0]))


def val_returns_in_loop(model, batches):
    model.eval()
    with torch.no_grad():
        for x, y in batches:
            loss = F.cross_entropy(model(x), y).item()
            model.train()
            return loss


def val_skips_last_batch(model, batches):
    return val_reference(model, batches[:-1])


def val_softmax_twice(model, batches):
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for x, y in batches:
            total += F.cross_entropy(torch.softmax(model(x), dim=-1), y).item() * len(x)
            count += len(x)
    model.train()
    return total / count


# ---------------------------------------------------------------- lab04.stop_index: right


def stop_reference(val_losses, patience):
    best, bad = float("inf"), 0
    for index, value in enumerate(val_losses):
        if value < best:
            best, bad = value, 0
        else:
            bad += 1
            if bad >= patience:
                return index
    return None


def stop_last_best_index(val_losses, patience):
    """Tracks where the best was, and stops `patience` evaluations after it; numpy integers out."""
    best, best_at = math.inf, -1
    for index in np.arange(len(val_losses)):
        if val_losses[index] < best:
            best, best_at = val_losses[index], index
        elif index - best_at >= patience:
            return index
    return None


def stop_while_loop(val_losses, patience):
    index, since, best = 0, 0, None
    while index < len(val_losses):
        value = val_losses[index]
        if best is None or value < best:
            best, since = value, 0
        else:
            since += 1
        if since == patience:
            return index
        index += 1
    return None


# ---------------------------------------------------------------- lab04.stop_index: wrong


def stop_ties_improve(val_losses, patience):
    best, bad = math.inf, 0
    for index, value in enumerate(val_losses):
        if value <= best:
            best, bad = value, 0
        else:
            bad += 1
            if bad >= patience:
                return index
    return None


def stop_late(val_losses, patience):
    best, bad = math.inf, 0
    for index, value in enumerate(val_losses):
        if value < best:
            best, bad = value, 0
        else:
            bad += 1
            if bad > patience:
                return index
    return None


def stop_never_resets(val_losses, patience):
    best, bad = math.inf, 0
    for index, value in enumerate(val_losses):
        if value < best:
            best = value
        else:
            bad += 1
            if bad >= patience:
                return index
    return None


def stop_against_previous(val_losses, patience):
    previous, bad = math.inf, 0
    for index, value in enumerate(val_losses):
        bad = 0 if value < previous else bad + 1
        previous = value
        if bad >= patience:
            return index
    return None


def stop_skips_non_finite(val_losses, patience):
    best, bad = math.inf, 0
    for index, value in enumerate(val_losses):
        if not math.isfinite(value):
            continue
        if value < best:
            best, bad = value, 0
        else:
            bad += 1
            if bad >= patience:
                return index
    return None


def stop_nan_improves(val_losses, patience):
    best, bad = math.inf, 0
    for index, value in enumerate(val_losses):
        if value >= best:
            bad += 1
            if bad >= patience:
                return index
        else:
            best, bad = value, 0
    return None


def stop_returns_count(val_losses, patience):
    index = stop_reference(val_losses, patience)
    return None if index is None else index + 1


def stop_returns_best(val_losses, patience):
    best, best_at, bad = math.inf, None, 0
    for index, value in enumerate(val_losses):
        if value < best:
            best, best_at, bad = value, index, 0
        else:
            bad += 1
            if bad >= patience:
                return best_at
    return None


def stop_never_is_minus_one(val_losses, patience):
    index = stop_reference(val_losses, patience)
    return -1 if index is None else index


def stop_sorts_in_place(val_losses, patience):
    index = stop_reference(val_losses, patience)
    val_losses.sort()
    return index


def stop_min_of_earlier_with_nan(val_losses, patience):
    """Compares with np.min of the earlier losses, which a NaN turns into NaN for good."""
    bad = 0
    for index, value in enumerate(val_losses):
        if index == 0 or value < np.min(val_losses[:index]):
            bad = 0
        else:
            bad += 1
            if bad >= patience:
                return index
    return None


CASES = {
    "lab04.validation_loss": Cases(
        correct=[val_reference, val_summed_inference_mode, val_concatenated_numpy],
        wrong=[
            Wrong(val_mean_of_means, "the mean of the batch means"),
            Wrong(val_no_eval, "dropout is active"),
            Wrong(val_leaves_eval_mode, "left in eval mode"),
            Wrong(val_without_no_grad, "gradients enabled"),
            Wrong(val_returns_graph, "attached to the computation graph"),
            Wrong(val_returns_tensor, "returned a tensor: return a Python float"),
            Wrong(val_weighted_sum, "the sum over all examples"),
            Wrong(val_divided_by_batches, "divided by the number of batches"),
            Wrong(val_assumes_equal_batches, "the size of the first one"),
            Wrong(val_returns_in_loop, "only the first batch"),
            Wrong(val_skips_last_batch, "the last batch is missing"),
            Wrong(val_softmax_twice, "(mean cross-entropy over all 100 examples"),
        ],
    ),
    "lab04.stop_index": Cases(
        correct=[stop_reference, stop_last_best_index, stop_while_loop],
        wrong=[
            Wrong(stop_ties_improve, "equal to the best so far"),
            Wrong(stop_late, "one evaluation late"),
            Wrong(stop_never_resets, "never reset"),
            Wrong(stop_against_previous, "compared with the previous one"),
            Wrong(stop_skips_non_finite, "non-finite losses (inf, NaN) were skipped"),
            Wrong(stop_nan_improves, "a NaN loss counted as an improvement"),
            Wrong(stop_returns_count, "(index + 1)"),
            Wrong(stop_returns_best, "the index of the best evaluation"),
            Wrong(stop_never_is_minus_one, "not -1"),
            Wrong(stop_sorts_in_place, "changed the list of losses"),
            # named from the symptom since issue 19: it stops at a new best, 0.8
            Wrong(stop_min_of_earlier_with_nan, "stops too early (stop_index([1.0, 0.9, nan, 0.8, 0.85, 0.9], "
                  "patience=2)"),
        ],
    ),
}


# ------------------------------------------------- wrong answers named from the symptom (issue 19)


def val_first_batch_twice(model, batches):
    """Evaluates the first batch a second time (a copy-paste slip)."""
    return val_reference(model, [*batches, batches[0]])


def val_perplexity(model, batches):
    return math.exp(val_reference(model, batches))


def val_halved(model, batches):
    """Divides by 2 * count (a hard-coded factor)."""
    return val_reference(model, batches) / 2


def val_mean_log_probability(model, batches):
    """The mean log-probability of the targets: the cross-entropy without its minus sign."""
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for x, y in batches:
            log_p = torch.log_softmax(model(x), dim=-1)
            total += log_p[torch.arange(len(y)), y].sum().item()
            count += len(x)
    model.train()
    return total / count


def stop_one_early(val_losses, patience):
    """Stops when the count reaches patience - 1."""
    best, bad = math.inf, 0
    for index, value in enumerate(val_losses):
        if value < best:
            best, bad = value, 0
        else:
            bad += 1
            if bad >= patience - 1:
                return index
    return None


def stop_never(val_losses, patience):
    return None


def stop_at_first_bad(val_losses, patience):
    """Ignores patience: stops at the first evaluation without improvement."""
    best = math.inf
    for index, value in enumerate(val_losses):
        if not value < best:
            return index
        best = value
    return None


def stop_always_after_patience(val_losses, patience):
    """A hard-coded rule: stop `patience` evaluations in, whatever the losses."""
    return patience if len(val_losses) > patience else None


CASES["lab04.validation_loss"].wrong.extend([
    Wrong(val_first_batch_twice, "run it once on every batch"),
    Wrong(val_perplexity, "the perplexity"),
    Wrong(val_halved, "1/2 of the expected value"),
    Wrong(val_mean_log_probability, "never negative"),
])
CASES["lab04.stop_index"].wrong.extend([
    Wrong(stop_one_early, "one evaluation early"),
    Wrong(stop_never, "never stopped a run that should stop"),
    Wrong(stop_at_first_bad, "stops too early"),
    Wrong(stop_always_after_patience, "stops too early"),
])
