"""The checkers of labs 4 and 5 accept the reference and name the classic mistakes."""

from __future__ import annotations

import math

import pytest
import torch

from utils.checks import CheckFailed, lab04_training, lab05_pretraining
from utils.schedule import warmup_cosine

# ------------------------------------------------------------------ lab04.validation_loss


def weighted(model, batches):
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for x, y in batches:
            total += torch.nn.functional.cross_entropy(model(x), y).item() * len(x)
            count += len(x)
    model.train()
    return total / count


def mean_of_means(model, batches):
    model.eval()
    with torch.no_grad():
        means = [torch.nn.functional.cross_entropy(model(x), y).item() for x, y in batches]
    model.train()
    return sum(means) / len(means)


def no_eval_mode(model, batches):
    total, count = 0.0, 0
    with torch.no_grad():
        for x, y in batches:
            total += torch.nn.functional.cross_entropy(model(x), y).item() * len(x)
            count += len(x)
    return total / count


def leaves_eval_mode(model, batches):
    result = weighted(model, batches)
    model.eval()
    return result


def weighted_sum(model, batches):
    return weighted(model, batches) * sum(len(x) for x, _ in batches)


def test_validation_loss_accepts_the_reference(capsys):
    lab04_training.check_validation_loss(weighted)
    assert "PASSED lab04.validation_loss" in capsys.readouterr().out


@pytest.mark.parametrize(("wrong", "diagnosis"), [
    (mean_of_means, "mean of the batch means"),
    (no_eval_mode, "dropout is active"),
    (leaves_eval_mode, "left in eval mode"),
    (weighted_sum, "divide by the number of examples"),
])
def test_validation_loss_diagnoses(wrong, diagnosis):
    with pytest.raises(CheckFailed, match=diagnosis):
        lab04_training.check_validation_loss(wrong)


# ------------------------------------------------------------------ lab04.stop_index


def stop_reference(losses, patience):
    best, bad = math.inf, 0
    for i, v in enumerate(losses):
        if v < best:
            best, bad = v, 0
        else:
            bad += 1
            if bad >= patience:
                return i
    return None


def stop_late(losses, patience):
    best, bad = math.inf, 0
    for i, v in enumerate(losses):
        if v < best:
            best, bad = v, 0
        else:
            bad += 1
            if bad > patience:
                return i
    return None


def never_resets(losses, patience):
    best, bad = math.inf, 0
    for i, v in enumerate(losses):
        if v < best:
            best = v
        else:
            bad += 1
            if bad >= patience:
                return i
    return None


def compares_with_previous(losses, patience):
    previous, bad = math.inf, 0
    for i, v in enumerate(losses):
        if v < previous:
            bad = 0
        else:
            bad += 1
            if bad >= patience:
                return i
        previous = v
    return None


def test_stop_index_accepts_the_reference(capsys):
    lab04_training.check_stop_index(stop_reference)
    assert "PASSED lab04.stop_index" in capsys.readouterr().out


@pytest.mark.parametrize(("wrong", "diagnosis"), [
    (stop_late, "one evaluation late"),
    (never_resets, "Reset the count"),
    (compares_with_previous, "with the \\*best\\* so far"),
])
def test_stop_index_diagnoses(wrong, diagnosis):
    with pytest.raises(CheckFailed, match=diagnosis):
        lab04_training.check_stop_index(wrong)


# ------------------------------------------------------------------ lab05.lr_schedule


def schedule_reference(step, max_lr, warmup_steps, total_steps, min_lr):
    return warmup_cosine(step, max_lr=max_lr, warmup_steps=warmup_steps, total_steps=total_steps, min_lr=min_lr)


def starts_at_zero(step, max_lr, warmup_steps, total_steps, min_lr):
    if step < warmup_steps:
        return max_lr * step / warmup_steps
    return schedule_reference(step, max_lr, warmup_steps, total_steps, min_lr)


def decays_to_zero(step, max_lr, warmup_steps, total_steps, min_lr):
    return schedule_reference(step, max_lr, warmup_steps, total_steps, 0.0)


def progress_over_total(step, max_lr, warmup_steps, total_steps, min_lr):
    if step < warmup_steps:
        return max_lr * (step + 1) / warmup_steps
    progress = min(step / total_steps, 1.0)
    return min_lr + 0.5 * (1 + math.cos(math.pi * progress)) * (max_lr - min_lr)


def rises_again(step, max_lr, warmup_steps, total_steps, min_lr):
    if step < warmup_steps:
        return max_lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / (total_steps - warmup_steps)
    return min_lr + 0.5 * (1 + math.cos(math.pi * progress)) * (max_lr - min_lr)


def no_pi(step, max_lr, warmup_steps, total_steps, min_lr):
    if step < warmup_steps:
        return max_lr * (step + 1) / warmup_steps
    progress = min((step - warmup_steps) / (total_steps - warmup_steps), 1.0)
    return min_lr + 0.5 * (1 + math.cos(progress)) * (max_lr - min_lr)


def test_lr_schedule_accepts_the_reference(capsys):
    lab05_pretraining.check_lr_schedule(schedule_reference)
    assert "PASSED lab05.lr_schedule" in capsys.readouterr().out


@pytest.mark.parametrize(("wrong", "diagnosis"), [
    (starts_at_zero, "is 0 at step 0"),
    (decays_to_zero, "decays to 0 instead of min_lr"),
    (progress_over_total, "start after the warm-up"),
    (rises_again, "rises again"),
    (no_pi, "cosine part is off"),
])
def test_lr_schedule_diagnoses(wrong, diagnosis):
    with pytest.raises(CheckFailed, match=diagnosis):
        lab05_pretraining.check_lr_schedule(wrong)


# ------------------------------------------------------------------ lab05.accumulate


def accumulate_reference(model, loss_fn, micro_batches):
    model.zero_grad()
    for batch in micro_batches:
        (loss_fn(model, batch) / len(micro_batches)).backward()


def not_divided(model, loss_fn, micro_batches):
    model.zero_grad()
    for batch in micro_batches:
        loss_fn(model, batch).backward()


def zero_inside(model, loss_fn, micro_batches):
    for batch in micro_batches:
        model.zero_grad()
        (loss_fn(model, batch) / len(micro_batches)).backward()


def never_zeroed(model, loss_fn, micro_batches):
    for batch in micro_batches:
        (loss_fn(model, batch) / len(micro_batches)).backward()


def test_accumulate_accepts_the_reference(capsys):
    lab05_pretraining.check_accumulate(accumulate_reference)
    assert "PASSED lab05.accumulate" in capsys.readouterr().out


@pytest.mark.parametrize(("wrong", "diagnosis"), [
    (not_divided, "4 times too large"),
    (zero_inside, "zero_grad\\(\\) runs inside the loop"),
    (never_zeroed, "still contains what .grad held"),
])
def test_accumulate_diagnoses(wrong, diagnosis):
    with pytest.raises(CheckFailed, match=diagnosis):
        lab05_pretraining.check_accumulate(wrong)
