"""Answers to lab 5: the next-token distribution generate samples from, and the steps a resume redoes."""

from __future__ import annotations

import numpy as np
import torch

from tests.checker_cases import Cases, Wrong
from utils.hooks import due

# ---------------------------------------------------------------- lab05.next_token_probs: right


def like_generate(logits, temperature, top_k):
    if temperature == 0:
        return torch.nn.functional.one_hot(logits.argmax(-1), logits.shape[-1]).float()
    logits = logits / temperature
    if top_k is not None:
        kth = torch.topk(logits, min(top_k, logits.shape[-1])).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return torch.softmax(logits, dim=-1)


def numpy_top_k_first(logits, temperature, top_k):
    """Top-k before the temperature (a positive temperature keeps the order), in NumPy float64."""
    z = logits.numpy().astype(np.float64)
    if temperature == 0:
        probs = np.zeros_like(z)
        probs[np.arange(len(z)), z.argmax(-1)] = 1.0
        return probs
    if top_k is not None and top_k < z.shape[-1]:
        kth = np.sort(z, axis=-1)[:, -top_k][:, None]
        z = np.where(z >= kth, z, -np.inf)
    z = z / temperature
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def numpy_then_tensor(logits, temperature, top_k):
    """The NumPy float64 computation, handed back as a (float64) torch tensor: what torch.multinomial takes."""
    return torch.from_numpy(numpy_top_k_first(logits, temperature, top_k))


def powered_probabilities(logits, temperature, top_k):
    """softmax(z)^(1/T), renormalised, equals softmax(z / T): another way to write the temperature."""
    if temperature == 0:
        greedy = torch.zeros_like(logits)
        return greedy.scatter(-1, logits.argmax(-1, keepdim=True), 1.0)
    probs = torch.softmax(logits.double(), -1)
    if top_k is not None:
        kth = torch.topk(probs, min(top_k, probs.shape[-1])).values[:, -1:]
        probs = torch.where(probs >= kth, probs, torch.zeros_like(probs))
    probs = probs ** (1 / temperature)
    return probs / probs.sum(-1, keepdim=True)


# ---------------------------------------------------------------- lab05.next_token_probs: wrong


def returns_numpy(logits, temperature, top_k):
    """Right numbers, but a NumPy array: the lab's next cell feeds it to torch.multinomial, which takes only
    tensors."""
    return numpy_top_k_first(logits, temperature, top_k)


def greedy_one_hot_int64(logits, temperature, top_k):
    """Temperature 0 as one_hot without .float(): an int64 tensor, which torch.multinomial refuses."""
    if temperature == 0:
        return torch.nn.functional.one_hot(logits.argmax(-1), logits.shape[-1])
    return like_generate(logits, temperature, top_k)


def returns_log_probs(logits, temperature, top_k):
    return torch.log_softmax(logits / temperature, dim=-1)


def softmax_over_batch(logits, temperature, top_k):
    return torch.softmax(logits / temperature, dim=0)


def multiplies_by_temperature(logits, temperature, top_k):
    return like_generate(logits * temperature, 1.0, top_k) if temperature else like_generate(logits, 0, None)


def ignores_temperature(logits, temperature, top_k):
    return like_generate(logits, 1.0 if temperature else 0, top_k)


def temperature_after_softmax(logits, temperature, top_k):
    """Divides the probabilities, not the logits: the rows no longer sum to 1."""
    return torch.softmax(logits, dim=-1) / temperature


def ignores_top_k(logits, temperature, top_k):
    return like_generate(logits, temperature, None)


def zeroes_without_renormalising(logits, temperature, top_k):
    probs = like_generate(logits, temperature, None)
    if top_k is not None and temperature:
        kth = torch.topk(logits, min(top_k, logits.shape[-1])).values[:, -1:]
        probs = probs.masked_fill(logits < kth, 0.0)
    return probs


def keeps_exactly_k(logits, temperature, top_k):
    """torch.topk's indices keep exactly k tokens, dropping some of those tied at the k-th logit."""
    if top_k is None or temperature == 0:
        return like_generate(logits, temperature, top_k)
    z = logits / temperature
    top = torch.topk(z, min(top_k, z.shape[-1]))
    masked = torch.full_like(z, float("-inf")).scatter(-1, top.indices, top.values)
    return torch.softmax(masked, dim=-1)


def drops_the_kth(logits, temperature, top_k):
    if top_k is None or temperature == 0:
        return like_generate(logits, temperature, top_k)
    z = logits / temperature
    kth = torch.topk(z, min(top_k, z.shape[-1])).values[:, -1:]
    return torch.softmax(z.masked_fill(z <= kth, float("-inf")), dim=-1)


def exp_without_shift(logits, temperature, top_k):
    if temperature == 0:
        return like_generate(logits, 0, None)
    z = logits.double() / temperature
    if top_k is not None:
        kth = torch.topk(z, min(top_k, z.shape[-1])).values[:, -1:]
        z = z.masked_fill(z < kth, float("-inf"))
    e = torch.exp(z)
    return e / e.sum(-1, keepdim=True)


def divides_by_zero_temperature(logits, temperature, top_k):
    if temperature == 0:
        return torch.softmax(logits / temperature, dim=-1)
    return like_generate(logits, temperature, top_k)


def greedy_splits_ties(logits, temperature, top_k):
    if temperature == 0:
        best = (logits == logits.max(-1, keepdim=True).values).float()
        return best / best.sum(-1, keepdim=True)
    return like_generate(logits, temperature, top_k)


def divides_in_place(logits, temperature, top_k):
    if temperature == 0:
        return like_generate(logits, 0, None)
    logits /= temperature
    return like_generate(logits, 1.0, top_k)


def top_k_larger_than_vocabulary_crashes(logits, temperature, top_k):
    if temperature == 0:
        return like_generate(logits, 0, None)
    z = logits / temperature
    if top_k is not None:
        kth = torch.topk(z, top_k).values[:, -1:]  # no min(top_k, V)
        z = z.masked_fill(z < kth, float("-inf"))
    return torch.softmax(z, dim=-1)


# ---------------------------------------------------------------- lab05.redone_steps: right


def by_due(max_steps, checkpoint_every, steps_done):
    saved = [s for s in range(steps_done) if due(checkpoint_every, s, max_steps - 1)]
    start = saved[-1] + 1 if saved else 0
    return list(range(start, steps_done))


def by_arithmetic(max_steps, checkpoint_every, steps_done):
    if steps_done == 0 or checkpoint_every == 0:
        return list(range(steps_done))
    last = steps_done - 1
    newest = max_steps - 1 if last == max_steps - 1 else last // checkpoint_every * checkpoint_every
    return np.arange(newest + 1, steps_done)


def by_walking_back(max_steps, checkpoint_every, steps_done):
    step = steps_done - 1
    while step >= 0:
        if checkpoint_every and (step % checkpoint_every == 0 or step == max_steps - 1):
            break
        step -= 1
    return tuple(range(step + 1, steps_done))


# ---------------------------------------------------------------- lab05.redone_steps: wrong


def resumes_at_the_checkpoint_step(max_steps, checkpoint_every, steps_done):
    saved = [s for s in range(steps_done) if due(checkpoint_every, s, max_steps - 1)]
    return list(range(saved[-1] if saved else 0, steps_done))


def no_checkpoint_at_step_0(max_steps, checkpoint_every, steps_done):
    saved = [s for s in range(1, steps_done) if due(checkpoint_every, s, max_steps - 1)]
    return list(range(saved[-1] + 1 if saved else 0, steps_done))


def counts_updates_from_one(max_steps, checkpoint_every, steps_done):
    saved = [s for s in range(steps_done) if checkpoint_every and (s + 1) % checkpoint_every == 0]
    return list(range(saved[-1] + 1 if saved else 0, steps_done))


def forgets_the_last_step(max_steps, checkpoint_every, steps_done):
    saved = [s for s in range(steps_done) if checkpoint_every and s % checkpoint_every == 0]
    return list(range(saved[-1] + 1 if saved else 0, steps_done))


def includes_steps_done(max_steps, checkpoint_every, steps_done):
    return by_due(max_steps, checkpoint_every, steps_done) + [steps_done]


def every_step_left(max_steps, checkpoint_every, steps_done):
    redone = by_due(max_steps, checkpoint_every, steps_done)
    resumes_at = redone[0] if redone else steps_done
    return list(range(resumes_at, max_steps))


def counts_them(max_steps, checkpoint_every, steps_done):
    return len(by_due(max_steps, checkpoint_every, steps_done))


def rounds_steps_done(max_steps, checkpoint_every, steps_done):
    """Rounds steps_done down to a multiple: wrong when the run died just after a multiple."""
    if checkpoint_every == 0:
        return list(range(steps_done))
    return list(range(steps_done // checkpoint_every * checkpoint_every + 1, steps_done))


def divides_by_checkpoint_every(max_steps, checkpoint_every, steps_done):
    newest = (steps_done - 1) // checkpoint_every * checkpoint_every
    return list(range(newest + 1, steps_done))


CASES = {
    "lab05.next_token_probs": Cases(
        correct=[like_generate, numpy_then_tensor, powered_probabilities],
        wrong=[
            Wrong(returns_numpy, "returns a numpy array: return a torch tensor"),
            Wrong(greedy_one_hot_int64, "returns integer values (torch.int64)"),
            Wrong(returns_log_probs, "log-probabilities"),
            Wrong(softmax_over_batch, "batch axis"),
            Wrong(multiplies_by_temperature, "multiplied by the temperature"),
            Wrong(ignores_temperature, "temperature (0.5) is ignored"),
            Wrong(temperature_after_softmax, "do not sum to 1"),
            Wrong(ignores_top_k, "top_k=3 is ignored"),
            Wrong(zeroes_without_renormalising, "not renormalised"),
            Wrong(keeps_exactly_k, "a tie at the k-th largest logit"),
            Wrong(drops_the_kth, "keeps k - 1"),
            Wrong(exp_without_shift, "exp overflows"),
            Wrong(divides_by_zero_temperature, "greedy decoding"),
            Wrong(greedy_splits_ties, "the *first* of them"),
            Wrong(divides_in_place, "changed the logits"),
            Wrong(top_k_larger_than_vocabulary_crashes, "top_k larger than the vocabulary"),
        ],
    ),
    "lab05.redone_steps": Cases(
        correct=[by_due, by_arithmetic, by_walking_back],
        wrong=[
            Wrong(resumes_at_the_checkpoint_step, "records s + 1"),
            Wrong(no_checkpoint_at_step_0, "also saves at step 0"),
            Wrong(counts_updates_from_one, "not after every checkpoint_every-th update"),
            Wrong(forgets_the_last_step, "always saves at the last step"),
            Wrong(includes_steps_done, "the last completed step is steps_done - 1"),
            Wrong(every_step_left, "not every step left"),
            Wrong(counts_them, "return the list of steps"),
            Wrong(rounds_steps_done, "steps_done=300) returned [], expected [201, ..., 299]"),
            Wrong(divides_by_checkpoint_every, "checkpoint_every = 0 means never"),
        ],
    ),
}


# ------------------------------------------------- wrong answers named from the symptom (issue 19)


def exp_not_normalised(logits, temperature, top_k):
    """exp(z / T) without the division by its sum."""
    if temperature == 0:
        return like_generate(logits, temperature, top_k)
    return torch.exp(logits / temperature - (logits / temperature).max(-1, keepdim=True).values)


def returns_scaled_logits(logits, temperature, top_k):
    """The logits divided by T, never turned into probabilities."""
    return logits / (temperature or 1.0)


def softmax_of_negated_logits(logits, temperature, top_k):
    """A sign slip: the least likely token becomes the most likely."""
    if temperature == 0:
        return like_generate(logits, temperature, top_k)
    return torch.softmax(-logits / temperature, dim=-1)


def uniform_distribution(logits, temperature, top_k):
    return torch.full_like(logits, 1.0 / logits.shape[-1])


def top_k_masks_with_zero(logits, temperature, top_k):
    """Masks the logits outside the top k with 0 instead of -inf (float64)."""
    if temperature == 0 or top_k is None:
        return like_generate(logits.double(), temperature, top_k)
    z = logits.double() / temperature
    kth = torch.topk(z, min(top_k, z.shape[-1])).values[:, -1:]
    return torch.softmax(z.masked_fill(z < kth, 0.0), dim=-1)


CASES["lab05.next_token_probs"].wrong.extend([
    Wrong(exp_not_normalised, "not normalised"),
    Wrong(returns_scaled_logits, "negative probabilities"),
    Wrong(softmax_of_negated_logits, "not the one with the largest logit"),
    Wrong(uniform_distribution, "every token gets the same probability"),
    Wrong(top_k_masks_with_zero, "tokens outside the top k keep some probability"),
])


def redone_descending(max_steps, checkpoint_every, steps_done):
    return by_due(max_steps, checkpoint_every, steps_done)[::-1]


def redone_every_other(max_steps, checkpoint_every, steps_done):
    return by_due(max_steps, checkpoint_every, steps_done)[::2]


def redone_one_short(max_steps, checkpoint_every, steps_done):
    """Stops one before the last completed step (range(start, steps_done - 1))."""
    return by_due(max_steps, checkpoint_every, steps_done)[:-1]


def redone_hard_coded(max_steps, checkpoint_every, steps_done):
    """The lab's first example, whatever the arguments."""
    return list(range(301, 330))


CASES["lab05.redone_steps"].wrong.extend([
    Wrong(redone_descending, "not one consecutive run"),
    Wrong(redone_every_other, "not one consecutive run"),
    Wrong(redone_one_short, "the last redone step is not steps_done - 1"),
    Wrong(redone_hard_coded, "the last redone step is not steps_done - 1"),
])
