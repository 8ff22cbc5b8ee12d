"""Answers to lab 0: logging a loss curve, TensorBoard's smoothing."""

from __future__ import annotations

import math

import numpy as np

from tests.checker_cases import Cases, Wrong

# ---------------------------------------------------------------- lab00.log_losses: right


def logs_with_enumerate(writer, losses):
    for step, loss in enumerate(losses):
        writer.add_scalar("train/loss", loss, step)


def logs_with_keywords_and_index(writer, losses):
    for i in range(len(losses)):
        writer.add_scalar(tag="train/loss", scalar_value=float(losses[i]), global_step=i)


def logs_float32_values(writer, losses):
    for step, loss in zip(range(len(losses)), np.asarray(losses, dtype=np.float32), strict=True):
        writer.add_scalar("train/loss", loss, step)


# ---------------------------------------------------------------- lab00.log_losses: wrong


def logs_from_one(writer, losses):
    for step, loss in enumerate(losses, start=1):
        writer.add_scalar("train/loss", loss, step)


def logs_without_step(writer, losses):
    for loss in losses:
        writer.add_scalar("train/loss", loss)


def logs_wrong_tag(writer, losses):
    for step, loss in enumerate(losses):
        writer.add_scalar("loss", loss, step)


def logs_nothing(writer, losses):
    pass


def logs_after_the_loop(writer, losses):
    """The add_scalar call was dedented out of the loop: only the last loss is logged."""
    for step in range(len(losses)):
        loss = losses[step]
    writer.add_scalar("train/loss", loss, step)


def logs_all_but_the_last(writer, losses):
    for step in range(len(losses) - 1):
        writer.add_scalar("train/loss", losses[step], step)


def logs_value_and_step_swapped(writer, losses):
    for step, loss in enumerate(losses):
        writer.add_scalar("train/loss", step, loss)


def logs_with_add_scalars(writer, losses):
    for step, loss in enumerate(losses):
        writer.add_scalars("train", {"loss": loss}, step)


def pops_the_losses(writer, losses):
    step = 0
    while losses:
        writer.add_scalar("train/loss", losses.pop(0), step)
        step += 1


def logs_sorted(writer, losses):
    for step, loss in enumerate(sorted(losses)):
        writer.add_scalar("train/loss", loss, step)


def logs_every_tenth_step(writer, losses):
    for step, loss in enumerate(losses):
        writer.add_scalar("train/loss", loss, 10 * step)


def crashes_on_empty_input(writer, losses):
    writer.add_scalar("train/loss", losses[0], 0)
    for step in range(1, len(losses)):
        writer.add_scalar("train/loss", losses[step], step)


# ---------------------------------------------------------------- lab00.smooth: right


def smooth_reference(values, weight):
    return _ema(values, weight)  # bias-corrected, non-finite values passed through


def smooth_numpy_float32(values, weight):
    """float32 arithmetic, a numpy array out: differences at float32 precision are accepted."""
    x = np.asarray(values, dtype=np.float32)
    out = x.copy()
    average, count, w = np.float32(0), 0, np.float32(weight)
    for i, value in enumerate(x):
        if np.isfinite(value):
            average = w * average + (1 - w) * value
            count += 1
            out[i] = average / (1 - w**count)
    return out


def smooth_weighted_sums(values, weight):
    """The same average written as explicit weighted sums over the finite values seen so far."""
    smoothed, seen = [], []
    for value in values:
        if math.isnan(value) or math.isinf(value):
            smoothed.append(value)
            continue
        seen.append(value)
        weights = [weight ** (len(seen) - 1 - j) for j in range(len(seen))]
        smoothed.append(sum(w * v for w, v in zip(weights, seen, strict=True)) / sum(weights))
    return smoothed


# ---------------------------------------------------------------- lab00.smooth: wrong


def smooth_biased(values, weight):
    out, m = [], 0.0
    for v in values:
        if math.isfinite(v):
            m = weight * m + (1 - weight) * v
            out.append(m)
        else:
            out.append(v)
    return out


def smooth_weight_swapped(values, weight):
    return smooth_reference(values, 1 - weight)


def smooth_nan_enters_average(values, weight):
    out, m, n = [], 0.0, 0
    for v in values:
        m = weight * m + (1 - weight) * v
        n += 1
        out.append(m / (1 - weight**n))
    return out


def smooth_checks_isnan_only(values, weight):
    out, m, n = [], 0.0, 0
    for v in values:
        if math.isnan(v):
            out.append(v)
            continue
        m = weight * m + (1 - weight) * v
        n += 1
        out.append(m / (1 - weight**n))
    return out


def smooth_counts_skipped_values(values, weight):
    out, m = [], 0.0
    for n, v in enumerate(values, start=1):
        if not math.isfinite(v):
            out.append(v)
            continue
        m = weight * m + (1 - weight) * v
        out.append(m / (1 - weight**n))
    return out


def smooth_drops_non_finite(values, weight):
    return smooth_reference([v for v in values if math.isfinite(v)], weight)


def smooth_holds_last_value(values, weight):
    out = smooth_reference(values, weight)
    for i, v in enumerate(out):
        if not math.isfinite(v):
            out[i] = out[i - 1] if i else 0.0
    return out


def smooth_starts_at_first_value(values, weight):
    out, m = [], None
    for v in values:
        if not math.isfinite(v):
            out.append(v)
            continue
        m = v if m is None else weight * m + (1 - weight) * v
        out.append(m)
    return out


def smooth_exponent_off_by_one(values, weight):
    out, m, n = [], 0.0, 0
    for v in values:
        if not math.isfinite(v):
            out.append(v)
            continue
        m = weight * m + (1 - weight) * v
        n += 1
        out.append(m / (1 - weight ** (n + 1)))
    return out


def smooth_in_place(values, weight):
    smoothed = smooth_reference(values, weight)
    values[:] = smoothed
    return values


def smooth_one_short(values, weight):
    return smooth_reference(values, weight)[:-1]


_STATE = {"average": 0.0, "count": 0}


def smooth_keeps_state_between_calls(values, weight):
    """The running average lives outside the function, so a second call starts where the first ended."""
    out = []
    for v in values:
        if not math.isfinite(v):
            out.append(v)
            continue
        _STATE["average"] = weight * _STATE["average"] + (1 - weight) * v
        _STATE["count"] += 1
        out.append(_STATE["average"] / (1 - weight ** _STATE["count"]))
    return out


def smooth_rounded_to_two_decimals(values, weight):
    return [round(v, 2) if math.isfinite(v) else v for v in smooth_reference(values, weight)]


CASES = {
    "lab00.log_losses": Cases(
        correct=[logs_with_enumerate, logs_with_keywords_and_index, logs_float32_values],
        wrong=[
            Wrong(logs_from_one, "steps start at 1"),
            Wrong(logs_without_step, "every point has step 0"),
            Wrong(logs_wrong_tag, "'train/loss'"),
            Wrong(logs_nothing, "nothing was logged"),
            Wrong(logs_after_the_loop, "inside the loop"),
            Wrong(logs_all_but_the_last, "the last loss"),
            Wrong(logs_value_and_step_swapped, "swapped"),
            Wrong(logs_with_add_scalars, "add_scalars"),
            Wrong(pops_the_losses, "was changed by your function"),
            Wrong(logs_sorted, "in order"),
            Wrong(logs_every_tenth_step, "loss i belongs to step i"),
            Wrong(crashes_on_empty_input, "raised IndexError"),
        ],
    ),
    "lab00.smooth": Cases(
        correct=[smooth_reference, smooth_numpy_float32, smooth_weighted_sums],
        wrong=[
            Wrong(smooth_biased, "not debiased"),
            Wrong(smooth_weight_swapped, "weight is applied to the new value"),
            Wrong(smooth_nan_enters_average, "made every later smoothed value NaN"),
            Wrong(smooth_checks_isnan_only, "an infinity entered the running average"),
            Wrong(smooth_counts_skipped_values, "also counted the non-finite inputs"),
            Wrong(smooth_drops_non_finite, "missing from the output"),
            Wrong(smooth_holds_last_value, "pass through to the output unchanged"),
            Wrong(smooth_starts_at_first_value, "starts at the first value"),
            Wrong(smooth_exponent_off_by_one, "exponent is off by one"),
            Wrong(smooth_in_place, "changed the list it was given"),
            Wrong(smooth_one_short, "return one smoothed value per input"),
            Wrong(smooth_keeps_state_between_calls, "keeps state between calls"),
            Wrong(smooth_rounded_to_two_decimals, "returned [4.0, 2.75, 2.88,"),
        ],
    ),
}


# ------------------------------------------------- wrong answers named from the symptom (issue 19)


def logs_reversed(writer, losses):
    for step, loss in enumerate(reversed(losses)):
        writer.add_scalar("train/loss", loss, step)


def logs_the_first_loss_every_step(writer, losses):
    for step in range(len(losses)):
        writer.add_scalar("train/loss", losses[0], step)


def logs_percent(writer, losses):
    """Multiplies each loss by 100."""
    for step, loss in enumerate(losses):
        writer.add_scalar("train/loss", 100 * loss, step)


def logs_shuffled(writer, losses):
    """Swaps the first two losses."""
    order = [losses[1], losses[0], *losses[2:]] if len(losses) > 1 else list(losses)
    for step, loss in enumerate(order):
        writer.add_scalar("train/loss", loss, step)


def _ema(values, weight, *, power_shift=0):
    out, average, count = [], 0.0, 0
    for value in values:
        if not math.isfinite(value):
            out.append(value)
            continue
        average = weight * average + (1 - weight) * value
        count += 1
        out.append(average / (1 - weight ** (count + power_shift)))
    return out


def smooth_exponent_off_by_two(values, weight):
    return _ema(values, weight, power_shift=2)


def smooth_weight_squared(values, weight):
    return _ema(values, weight**2)


def smooth_fixed_weight(values, weight):
    """A hard-coded weight of 0.5."""
    return _ema(values, 0.5)


def smooth_returns_input(values, weight):
    return list(values)


CASES["lab00.log_losses"].wrong.extend([
    Wrong(logs_reversed, "in order"),  # the fault logs_sorted has: LOSSES fall, so sorted is reversed
    Wrong(logs_the_first_loss_every_step, "every point has the value 2.3026"),
    Wrong(logs_percent, "each logged value is 100 times"),
    Wrong(logs_shuffled, "the right losses at the wrong steps"),
])
CASES["lab00.smooth"].wrong.extend([
    Wrong(smooth_exponent_off_by_two, "the first smoothed value is"),
    Wrong(smooth_weight_squared, "smoothing with weight 0.36 for 0.6"),
    Wrong(smooth_fixed_weight, "smoothing with weight 0.5 for 0.6"),
    Wrong(smooth_returns_input, "nothing was smoothed"),
])
