"""Answers to lab 3: a stable log-softmax, the mean cross-entropy and its gradient."""

from __future__ import annotations

import math

import numpy as np
import torch

from tests.checker_cases import Cases, Wrong

# ---------------------------------------------------------------- lab03.log_softmax


def log_softmax_reference(logits):
    logits = np.asarray(logits, dtype=np.float64)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def log_softmax_rows_in_python(logits):
    """Row by row with math, a list of lists out."""
    out = []
    for row in logits.tolist():
        m = max(row)
        total = math.log(sum(math.exp(v - m) for v in row))
        out.append([v - m - total for v in row])
    return out


def log_softmax_float32(logits):
    z = np.asarray(logits, dtype=np.float32)
    m = z.max(axis=1, keepdims=True)
    return z - (m + np.log(np.sum(np.exp(z - m), axis=1, keepdims=True)))


def log_softmax_torch(logits):
    return torch.log_softmax(torch.from_numpy(logits), dim=-1)


def log_softmax_unshifted(logits):
    return logits - np.log(np.exp(logits).sum(axis=-1, keepdims=True))


def log_of_softmax(logits):
    e = np.exp(logits)
    return np.log(e / e.sum(axis=-1, keepdims=True))


def log_softmax_batch_max(logits):
    shifted = logits - logits.max()
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def log_softmax_returns_probabilities(logits):
    return np.exp(log_softmax_reference(logits))


def log_softmax_negated(logits):
    return -log_softmax_reference(logits)


def log_softmax_over_columns(logits):
    shifted = logits - logits.max(axis=0, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=0, keepdims=True))


def log_softmax_over_everything(logits):
    shifted = logits - logits.max()
    return shifted - np.log(np.exp(shifted).sum())


def log_softmax_in_place(logits):
    logits -= logits.max(axis=-1, keepdims=True)
    logits -= np.log(np.exp(logits).sum(axis=-1, keepdims=True))
    return logits


def log_softmax_with_epsilon(logits):
    shifted = logits - logits.max(axis=-1, keepdims=True)
    p = np.exp(shifted) / np.exp(shifted).sum(axis=-1, keepdims=True)
    return np.log(p + 1e-12)


def log_softmax_without_keepdims(logits):
    shifted = logits - logits.max(axis=-1)
    return shifted - np.log(np.exp(shifted).sum(axis=-1))


def log_softmax_graph(logits):
    z = torch.tensor(logits, requires_grad=True)
    return torch.log_softmax(z, dim=-1)


# ---------------------------------------------------------------- lab03.cross_entropy


def ce_reference(logits, targets):
    log_p = log_softmax_reference(logits)
    return float(-log_p[np.arange(len(targets)), targets].mean())


def ce_loop_logsumexp(logits, targets):
    """A loop over examples, numpy scalars out: log-sum-exp minus the target's logit."""
    total = 0.0
    for row, target in zip(logits, targets, strict=True):
        m = row.max()
        total += m + np.log(np.exp(row - m).sum()) - row[target]
    return total / len(targets)


def ce_float32_one_hot(logits, targets):
    log_p = log_softmax_float32(logits)
    one_hot = np.eye(logits.shape[1], dtype=np.float32)[targets]
    return -(one_hot * log_p).sum(axis=1).mean()


def ce_torch_no_grad(logits, targets):
    with torch.no_grad():
        return torch.nn.functional.cross_entropy(torch.from_numpy(logits), torch.from_numpy(targets))


def ce_negated(logits, targets):
    return -ce_reference(logits, targets)


def ce_sum(logits, targets):
    return ce_reference(logits, targets) * len(targets)


def ce_mean_over_classes_too(logits, targets):
    one_hot = np.eye(logits.shape[1])[targets]
    return float(-(one_hot * log_softmax_reference(logits)).mean())


def ce_all_classes(logits, targets):
    return float(-log_softmax_reference(logits).mean())


def ce_column_indexing(logits, targets):
    return float(-log_softmax_reference(logits)[:, targets].mean())


def ce_targets_one_based(logits, targets):
    log_p = log_softmax_reference(logits)
    return float(-log_p[np.arange(len(targets)), targets - 1].mean())


def ce_in_bits(logits, targets):
    return ce_reference(logits, targets) / math.log(2)


def ce_per_example(logits, targets):
    return -log_softmax_reference(logits)[np.arange(len(targets)), targets]


def ce_log_of_softmax(logits, targets):
    log_p = log_of_softmax(logits)
    return float(-log_p[np.arange(len(targets)), targets].mean())


def ce_clipped(logits, targets):
    p = np.clip(np.exp(log_softmax_reference(logits)), 1e-7, 1 - 1e-7)
    return float(-np.log(p[np.arange(len(targets)), targets]).mean())


def ce_batch_max(logits, targets):
    log_p = log_softmax_batch_max(logits)
    return float(-log_p[np.arange(len(targets)), targets].mean())


def ce_graph(logits, targets):
    z = torch.tensor(logits, requires_grad=True)
    return torch.nn.functional.cross_entropy(z, torch.from_numpy(targets))


def ce_in_place(logits, targets):
    logits -= logits.max(axis=1, keepdims=True)
    return ce_reference(logits, targets)


# ---------------------------------------------------------------- lab03.gradient


def grad_reference(logits, targets):
    n = len(targets)
    gradient = np.exp(log_softmax_reference(logits))
    gradient[np.arange(n), targets] -= 1.0
    return gradient / n


def grad_one_hot_float32(logits, targets):
    p = np.exp(log_softmax_float32(logits))
    return (p - np.eye(logits.shape[1], dtype=np.float32)[targets]) / np.float32(len(targets))


def grad_autograd(logits, targets):
    z = torch.tensor(logits, requires_grad=True)
    torch.nn.functional.cross_entropy(z, torch.from_numpy(targets)).backward()
    return z.grad


def grad_loop(logits, targets):
    n, k = logits.shape
    out = np.zeros((n, k))
    for i in range(n):
        e = [math.exp(v - max(logits[i])) for v in logits[i]]
        for j in range(k):
            out[i, j] = (e[j] / sum(e) - (j == targets[i])) / n
    return out


def grad_negated(logits, targets):
    return -grad_reference(logits, targets)


def grad_not_divided(logits, targets):
    return grad_reference(logits, targets) * len(targets)


def grad_without_one_hot(logits, targets):
    return np.exp(log_softmax_reference(logits)) / len(targets)


def grad_divided_by_nk(logits, targets):
    return grad_reference(logits, targets) / logits.shape[1]


def grad_divided_by_k(logits, targets):
    return grad_reference(logits, targets) * len(targets) / logits.shape[1]


def grad_column_subtraction(logits, targets):
    gradient = np.exp(log_softmax_reference(logits))
    gradient[:, targets] -= 1.0
    return gradient / len(targets)


def grad_targets_one_based(logits, targets):
    return grad_reference(logits, targets - 1)


def grad_unstable(logits, targets):
    e = np.exp(logits)
    gradient = e / e.sum(axis=1, keepdims=True)
    gradient[np.arange(len(targets)), targets] -= 1.0
    return gradient / len(targets)


def grad_in_place(logits, targets):
    np.exp(log_softmax_reference(logits), out=logits)
    logits[np.arange(len(targets)), targets] -= 1.0
    logits /= len(targets)
    return logits


def grad_transposed(logits, targets):
    return grad_reference(logits, targets).T


CASES = {
    "lab03.log_softmax": Cases(
        correct=[log_softmax_reference, log_softmax_rows_in_python, log_softmax_float32, log_softmax_torch],
        wrong=[
            Wrong(log_softmax_unshifted, "unstable: for logits of +-1000"),
            Wrong(log_of_softmax, "unstable: for logits of +-1000"),
            Wrong(log_softmax_batch_max, "the largest logit of the whole batch"),
            Wrong(log_softmax_returns_probabilities, "you returned probabilities"),
            Wrong(log_softmax_negated, "wrong sign"),
            Wrong(log_softmax_over_columns, "not each column (axis=0"),
            Wrong(log_softmax_over_everything, "normalised over the whole array"),
            Wrong(log_softmax_in_place, "changed the logits it was given"),
            Wrong(log_softmax_with_epsilon, "small epsilon"),
            Wrong(log_softmax_without_keepdims, "raised ValueError"),
            Wrong(log_softmax_graph, "attached to a computation graph"),
        ],
    ),
    "lab03.cross_entropy": Cases(
        correct=[ce_reference, ce_loop_logsumexp, ce_float32_one_hot, ce_torch_no_grad],
        wrong=[
            Wrong(ce_negated, "wrong sign"),
            Wrong(ce_sum, "wrong reduction"),
            Wrong(ce_mean_over_classes_too, "averaged over the classes too"),
            Wrong(ce_all_classes, "over *all* classes"),
            Wrong(ce_column_indexing, "picks an N x N block"),
            Wrong(ce_targets_one_based, "the class before the target"),
            Wrong(ce_in_bits, "in bits"),
            Wrong(ce_per_example, "return one number"),
            Wrong(ce_log_of_softmax, "unstable: for logits of +-1000"),
            Wrong(ce_clipped, "clipped"),
            Wrong(ce_batch_max, "the largest logit of the whole batch"),
            Wrong(ce_graph, "still attached to the computation graph"),
            Wrong(ce_in_place, "changed the logits it was given"),
        ],
    ),
    "lab03.gradient": Cases(
        correct=[grad_reference, grad_one_hot_float32, grad_autograd, grad_loop],
        wrong=[
            Wrong(grad_negated, "wrong sign"),
            Wrong(grad_not_divided, "not divided by N"),
            Wrong(grad_without_one_hot, "without the one-hot target"),
            Wrong(grad_divided_by_nk, "divided by N x K"),
            Wrong(grad_divided_by_k, "divided by K = 5"),
            Wrong(grad_column_subtraction, "subtracted in whole columns"),
            Wrong(grad_targets_one_based, "the class before the target"),
            Wrong(grad_unstable, "unstable: for logits of +-1000"),
            Wrong(grad_in_place, "changed the logits it was given"),
            Wrong(grad_transposed, "the gradient has the shape of the logits"),
        ],
    ),
}


# ------------------------------------------------- wrong answers named from the symptom (issue 19)
# None of these reproduces a listed mistake exactly: the checker names the fault from what the answer shows.


def log_softmax_shift_only(logits):
    """Subtracts the max but never the log-sum-exp: rows not normalised."""
    return logits - logits.max(axis=-1, keepdims=True)


def log_softmax_sum_without_log(logits):
    """Subtracts sum(exp) instead of its log."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.exp(shifted).sum(axis=-1, keepdims=True)


def log_softmax_plus_one(logits):
    """A constant added after the fact: positive log-probabilities."""
    return log_softmax_reference(logits) + 1.0


def log_softmax_of_doubled_logits(logits):
    """Normalised, but of 2z: not a shift of the logits."""
    return log_softmax_reference(2.0 * logits)


def log_softmax_classes_reversed(logits):
    """Normalised rows in the wrong order (float32)."""
    return log_softmax_reference(logits).astype(np.float32)[:, ::-1]


def ce_of_probabilities(logits, targets):
    """-p(target) averaged: the log left out; negative."""
    p = np.exp(log_softmax_reference(logits))
    return float(-p[np.arange(len(targets)), targets].mean())


def ce_doubled(logits, targets):
    return 2.0 * ce_reference(logits, targets)


def ce_divided_by_n_squared(logits, targets):
    """Divided by N twice (np.mean of a sum over N)."""
    return ce_reference(logits, targets) / len(targets)


def ce_log_of_logits(logits, targets):
    """The log of the target's logit: NaN where the logit is negative."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return float(-np.log(logits[np.arange(len(targets)), targets]).mean())


def grad_half_one_hot(logits, targets):
    """Subtracts 0.5 instead of 1 at the target: rows do not sum to 0."""
    n, k = logits.shape
    return (np.exp(log_softmax_reference(logits)) - 0.5 * np.eye(k)[targets]) / n


def grad_softmax_over_batch(logits, targets):
    """The softmax runs down the columns (axis 0)."""
    n, k = logits.shape
    z = logits - logits.max(axis=0, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(axis=0, keepdims=True)
    return (p - np.eye(k)[targets]) / n


def grad_of_log_softmax(logits, targets):
    """Uses log-probabilities where the probabilities belong."""
    n, k = logits.shape
    return (log_softmax_reference(logits) - np.eye(k)[targets]) / n


def grad_doubled(logits, targets):
    return 2.0 * grad_reference(logits, targets)


CASES["lab03.log_softmax"].wrong.extend([
    Wrong(log_softmax_shift_only, "exp() of each row must sum to 1"),
    Wrong(log_softmax_sum_without_log, "exp() of each row must sum to 1"),
    Wrong(log_softmax_plus_one, "a log-probability is <= 0"),
    Wrong(log_softmax_of_doubled_logits, "not the row's logits minus one constant"),
    Wrong(log_softmax_classes_reversed, "not the row's logits minus one constant"),
])
CASES["lab03.cross_entropy"].wrong.extend([
    Wrong(ce_of_probabilities, "a negative loss"),
    Wrong(ce_doubled, "2 times the expected value"),
    Wrong(ce_divided_by_n_squared, "is 1/4 of the expected value"),
    Wrong(ce_log_of_logits, "a logit is not a probability"),
])
CASES["lab03.gradient"].wrong.extend([
    Wrong(grad_half_one_hot, "each must sum to 0"),
    Wrong(grad_softmax_over_batch, "each must sum to 0"),
    Wrong(grad_of_log_softmax, "each must sum to 0"),
    Wrong(grad_doubled, "your gradient is 2 times"),
])
