"""Checkers of lab 3 (``labs/lab03_cross_entropy.ipynb``): a stable log-softmax, the mean softmax
cross-entropy and its gradient, each compared with PyTorch (float64) and tested on logits of +-1000.

The diagnoses name the classic mistakes: no max-shift (``nan``/``inf`` for large logits), a max taken over
the whole batch or the wrong axis, probabilities instead of log-probabilities, a wrong sign, a sum instead of
a mean (off by the batch size N), an average over classes too (off by K), clipped probabilities, a gradient
not divided by N, without the one-hot target, or with the wrong sign.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from utils.checks import (
    CheckFailed,
    call,
    checker,
    distribution_fault,
    graph_free_number,
    passed,
    scale_fault,
    unchanged,
)

#: A batch of N=4 rows over K=5 classes with moderate logits, and its targets.
MODERATE = np.array([[2.0, 0.5, -1.0, 0.0, 1.0],
                     [0.1, 0.2, 3.0, -0.5, 0.0],
                     [-1.0, 2.5, 0.5, 0.5, 0.0],
                     [0.3, -0.2, 0.0, 1.5, -2.0]])
MODERATE_TARGETS = np.array([0, 2, 4, 1])
#: Logits of +-1000 (one row confidently right, one confidently wrong), and a row far below the first one.
EXTREME = np.array([[1000.0, 0.0, -1000.0],
                    [1000.0, 0.0, -1000.0],
                    [-1000.0, -1001.0, -1002.0]])
EXTREME_TARGETS = np.array([0, 2, 1])
#: Tolerance that accepts a float32 computation (about 7 significant digits) and no classic mistake.
RTOL, ATOL = 1e-5, 1e-6


def _torch_reference(logits: np.ndarray, targets: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """PyTorch's mean cross-entropy, its gradient (autograd) and log_softmax, all float64."""
    import torch
    import torch.nn.functional as F

    z = torch.tensor(logits, dtype=torch.float64, requires_grad=True)
    loss = F.cross_entropy(z, torch.tensor(targets, dtype=torch.long))
    loss.backward()
    return loss.item(), z.grad.numpy().copy(), F.log_softmax(z.detach(), dim=1).numpy()


def _array(result: Any, what: str) -> np.ndarray:
    if result is None:
        raise CheckFailed(f"{what} returned None: did you forget the `return`?")
    if getattr(result, "requires_grad", False):
        raise CheckFailed(f"{what} returned a tensor attached to a computation graph: this exercise works in "
                          "numpy; return a numpy array (or detach the tensor)")
    if hasattr(result, "detach"):  # a torch tensor is fine
        result = result.detach().cpu().numpy()
    try:
        return np.asarray(result, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise CheckFailed(f"{what} returned {type(result).__name__}, which is not an array of numbers") from exc


def _close(a: np.ndarray, b: np.ndarray, scale: float = 1.0) -> bool:
    """Equal within a float32-sized tolerance (infinities equal to themselves). ``scale``: the largest |logit|;
    float32 rounds a logit of 1000 to about 1e-4, and that error survives the max-shift."""
    return a.shape == b.shape and bool(np.allclose(a, b, rtol=RTOL, atol=ATOL * max(1.0, scale)))


def _softmax(z: np.ndarray, axis: int = -1) -> np.ndarray:
    shifted = z - z.max(axis=axis, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=axis, keepdims=True)


def _log_softmax(z: np.ndarray, axis: int | None = -1) -> np.ndarray:
    shifted = z - z.max(axis=axis, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))


def _run(function: Callable[..., Any], what: str, logits: np.ndarray, *rest: np.ndarray) -> Any:
    """Call the reader's function on copies of the inputs, and fail if it changed them."""
    given = [logits.copy(), *(r.copy() for r in rest)]
    result = call(function, *given)
    if not all(unchanged(g, o) for g, o in zip(given, [logits, *rest], strict=True)):
        changed = "logits" if not unchanged(given[0], logits) else "targets"
        raise CheckFailed(f"{what} changed the {changed} it was given (an in-place operation such as -= or "
                          "out=): the caller still needs them; compute new arrays instead")
    return result


def _extreme_failure(what: str, got: np.ndarray, expected: np.ndarray, rows_ok: bool) -> str:
    """The diagnosis for a wrong answer at logits of +-1000 (``rows_ok``: the first two rows are finite)."""
    if not np.all(np.isfinite(got)):
        if rows_ok:
            return (f"unstable for the last row [-1000, -1001, -1002]: {what} subtracted the largest logit of "
                    "the whole batch (1000), so exp() of that row underflows to 0. Subtract the max of each row "
                    "(axis=-1, keepdims=True)")
        return (f"unstable: for logits of +-1000 {what} returned nan or inf (exp(1000) overflows, exp(-1000) "
                "underflows to 0). Subtract each row's max before exp (log-sum-exp)")
    if got.size and np.min(got) > np.min(expected) / 10 and what != "cross_entropy_gradient":
        return (f"for logits of +-1000 {what} returned {np.round(got, 3).tolist()}, expected "
                f"{np.round(expected, 3).tolist()}: the log was taken of probabilities clipped or shifted by a "
                "small epsilon, which caps the answer. Work with the shifted logits: (z - m) - log(sum(exp(z - "
                "m)))")
    return f"for logits of +-1000 {what} returned\n{np.round(got, 4)}\nexpected\n{np.round(expected, 4)}"


_LOG_SOFTMAX_MISTAKES: list[tuple[Callable[[np.ndarray], np.ndarray], str]] = [
    (lambda z: _softmax(z), "you returned probabilities (the softmax); return their log, z - logsumexp(z)"),
    (lambda z: -_log_softmax(z), "wrong sign: log-probabilities are <= 0; return z - logsumexp(z), not its "
                                 "negative"),
    (lambda z: _log_softmax(z, axis=0), "normalised over the wrong axis: each *row* (axis=-1, the classes) "
                                        "must sum to 1 in probability, not each column (axis=0, the batch)"),
    (lambda z: _log_softmax(z, axis=None), "normalised over the whole array: log-sum-exp runs over each row "
                                           "(axis=-1, keepdims=True), not over every logit of the batch"),
]


def _log_softmax_symptom(got: np.ndarray, logits: np.ndarray) -> str | None:
    """What the answer shows by itself, whatever it computed: positive log-probabilities, rows whose exp()
    does not sum to 1, or rows that are not the logits shifted by one constant."""
    if not np.isfinite(got).all():
        return None  # the extreme-logits diagnosis names the instability
    if got.max() > 1e-6:
        return (f"positive values (up to {got.max():.4g}): a log-probability is <= 0, the log of a probability "
                "<= 1. Subtract the whole log-sum-exp, m + log(sum(exp(z - m)))")
    fault = distribution_fault(np.exp(got), "exp() of your rows")
    if fault:
        return (f"{fault.split(':')[0]}: exp() of each row must sum to 1 (they are log-probabilities); yours sum "
                f"to {np.round(np.exp(got).sum(-1), 4).tolist()}. Subtract log(sum(exp(z - m))) from z - m")
    offsets = got - logits
    if not np.allclose(offsets, offsets[:, :1], rtol=RTOL, atol=ATOL):
        return ("each row sums to 1 in probability, but it is not the row's logits minus one constant: "
                "log_softmax only shifts a row (z - logsumexp(z)); the logits were scaled, reordered or mixed")
    return None


@checker("lab03.log_softmax")
def check_log_softmax(stable_log_softmax: Callable[[np.ndarray], Any]) -> None:
    """``stable_log_softmax(logits (N, K)) -> (N, K)``: log-probabilities over the classes (last axis),
    finite for logits of +-1000, without changing ``logits``; float32 precision is accepted."""
    _, _, expected = _torch_reference(MODERATE, MODERATE_TARGETS)
    got = _array(_run(stable_log_softmax, "stable_log_softmax", MODERATE), "stable_log_softmax")
    if got.shape != MODERATE.shape:
        raise CheckFailed(f"for logits of shape {MODERATE.shape} you returned shape {got.shape}: return one "
                          "log-probability per logit (keep the class axis: keepdims=True when you reduce)")
    if not _close(got, expected):
        for variant, message in _LOG_SOFTMAX_MISTAKES:
            if _close(got, variant(MODERATE)):
                raise CheckFailed(message)
        raise CheckFailed(_log_softmax_symptom(got, MODERATE) or
                          f"for the logits\n{MODERATE}\nyou returned\n{np.round(got, 4)}\nexpected "
                          f"(torch.log_softmax)\n{np.round(expected, 4)}")
    extreme_expected = _torch_reference(EXTREME, EXTREME_TARGETS)[2]
    extreme = _array(_run(stable_log_softmax, "stable_log_softmax", EXTREME), "stable_log_softmax")
    if not _close(extreme, extreme_expected, scale=1000.0):
        raise CheckFailed(_extreme_failure("stable_log_softmax", extreme, extreme_expected,
                                           bool(np.all(np.isfinite(extreme[:2])))))
    passed("lab03.log_softmax")


def _loss_mistakes(log_p: np.ndarray, targets: np.ndarray) -> list[tuple[float, str]]:
    n, k = log_p.shape
    picked = log_p[np.arange(n), targets]
    return [
        (picked.mean(), "wrong sign: the loss is -log p(target), which is >= 0"),
        (-picked.sum(), f"wrong reduction: the sum over the batch, N = {n} times the mean. Return the mean "
                        "(divide by N), as F.cross_entropy does by default"),
        (-picked.mean() / k, f"averaged over the classes too (divided by N x K = {n * k}): sum over the "
                             "classes, then average over the N examples"),
        (-log_p.mean(), "the average of -log p over *all* classes: take only the target's entry of each row "
                        "(one entry per row: row i, column targets[i])"),
        (-log_p[:, targets].mean(), "log_p[:, targets] picks an N x N block (every row at every target): "
                                    "take one entry per row, at [np.arange(N), targets]"),
        (-log_p[np.arange(n), (targets - 1) % k].mean(), "off by one: you picked the class before the target "
                                                         "(targets are 0-based class indices, used as given)"),
        (-picked.mean() / np.log(2), "the loss is in bits (log base 2): the book measures it in nats, the "
                                     "natural log"),
    ]


def _loss_symptom(got: float, expected: float) -> str | None:
    """What a wrong loss shows by itself: NaN, a negative value, or a constant factor off."""
    if not np.isfinite(got):
        return (f"returned {got} for moderate logits: a log of 0, or of a logit (a logit is not a "
                "probability: it can be <= 0)")
    if got < 0:
        return (f"a negative loss ({got:.4f}): -log p is >= 0 for every probability p <= 1, so the mean is too. "
                "Was the log left out (-p instead of -log p), or the sign dropped?")
    return scale_fault(got, expected, f"the loss ({got:.4f})")


def _loss(cross_entropy_loss: Callable[..., Any], logits: np.ndarray, targets: np.ndarray) -> float:
    result = _run(cross_entropy_loss, "cross_entropy_loss", logits, targets)
    if not getattr(result, "requires_grad", False) and np.size(_array(result, "cross_entropy_loss")) > 1:
        raise CheckFailed(f"returned an array of shape {np.shape(_array(result, 'cross_entropy_loss'))}; return "
                          f"one number: the mean of the {len(targets)} per-example losses")
    return graph_free_number(result, "cross_entropy_loss")


@checker("lab03.cross_entropy")
def check_cross_entropy(cross_entropy_loss: Callable[[np.ndarray, np.ndarray], Any]) -> None:
    """``cross_entropy_loss(logits (N, K), targets (N,) int) -> float``: the **mean** over the batch of
    ``-log softmax(logits)[i, targets[i]]``, in nats, finite for logits of +-1000, inputs unchanged."""
    expected, _, log_p = _torch_reference(MODERATE, MODERATE_TARGETS)
    got = _loss(cross_entropy_loss, MODERATE, MODERATE_TARGETS)
    if not np.isclose(got, expected, rtol=RTOL, atol=ATOL):
        for wrong, message in _loss_mistakes(log_p, MODERATE_TARGETS):
            if np.isclose(got, wrong, rtol=RTOL, atol=ATOL):
                raise CheckFailed(f"got {got:.4f}, expected {expected:.4f}: {message}")
        raise CheckFailed(_loss_symptom(got, expected) or
                          f"for the batch\n{MODERATE}\nwith targets {MODERATE_TARGETS.tolist()} you returned "
                          f"{got:.6f}, expected {expected:.6f} (F.cross_entropy)")
    extreme_expected = _torch_reference(EXTREME, EXTREME_TARGETS)[0]
    extreme = _loss(cross_entropy_loss, EXTREME, EXTREME_TARGETS)
    if not np.isclose(extreme, extreme_expected, rtol=RTOL, atol=ATOL * 1000.0):
        first_rows = _loss(cross_entropy_loss, EXTREME[:2], EXTREME_TARGETS[:2])
        if np.isfinite(extreme) and extreme < extreme_expected / 10:
            raise CheckFailed(f"for logits of +-1000 you returned {extreme:.3f}, expected {extreme_expected:.1f}: "
                              "the probabilities were clipped (or an epsilon added) before the log, which caps "
                              "the loss of a confidently wrong model. Compute it from the logits (log-softmax)")
        raise CheckFailed(_extreme_failure("cross_entropy_loss", np.array([extreme]), np.array([extreme_expected]),
                                           bool(np.isfinite(first_rows))))
    passed("lab03.cross_entropy")


def _gradient_mistakes(z: np.ndarray, targets: np.ndarray) -> list[tuple[np.ndarray, str]]:
    n, k = z.shape
    p, one_hot = _softmax(z), np.eye(k)[targets]
    by_column = p.copy()
    by_column[:, targets] -= 1.0
    return [
        ((one_hot - p) / n, "wrong sign: the gradient is softmax(z) - one_hot (predicted minus target), so a "
                            "step against it raises the target's logit; yours is its negative"),
        (one_hot - p, "wrong sign: the gradient is softmax(z) - one_hot (predicted minus target), so a step "
                      "against it raises the target's logit; yours is its negative"),
        (p - one_hot, f"not divided by N: your gradient is N = {n} times autograd's. The loss is a mean over N "
                      "examples, so its gradient is (softmax(z) - one_hot) / N"),
        (p / n, "without the one-hot target: subtract 1 at each row's target before dividing by N"),
        (p, "without the one-hot target: subtract 1 at each row's target before dividing by N"),
        ((p - one_hot) / (n * k), f"divided by N x K = {n * k}; the loss averages over the N examples only"),
        ((p - one_hot) / k, f"divided by K = {k}, the number of classes; divide by N, the number of examples"),
        (by_column / n, "the 1 was subtracted in whole columns (p[:, targets] touches every row at every "
                        "target column): subtract it once per row, at [np.arange(N), targets]"),
        ((p - np.eye(k)[(targets - 1) % k]) / n, "off by one: the 1 was subtracted at the class before the "
                                                 "target (targets are 0-based class indices, used as given)"),
    ]


def _gradient_symptom(got: np.ndarray, expected: np.ndarray) -> str | None:
    """What a wrong gradient shows by itself: rows that do not sum to 0, or autograd's times a constant."""
    if not np.isfinite(got).all():
        return None
    sums = got.sum(axis=-1)
    if not np.allclose(sums, 0.0, atol=1e-6):
        return (f"the rows of your gradient sum to {np.round(sums, 4).tolist()}; each must sum to 0, since "
                "softmax(z) sums to 1 over the classes and so does the one-hot target. Subtract a one-hot "
                "(1 at the target, once per row) from a softmax taken over each row")
    return scale_fault(got, expected, "your gradient")


@checker("lab03.gradient")
def check_gradient(cross_entropy_gradient: Callable[[np.ndarray, np.ndarray], Any]) -> None:
    """``cross_entropy_gradient(logits (N, K), targets (N,)) -> (N, K)``: the gradient of the *mean*
    cross-entropy with respect to the logits, ``(softmax(z) - one_hot(targets)) / N``; compared with
    PyTorch autograd, also for logits of +-1000; inputs unchanged; float32 precision accepted."""
    _, expected, _ = _torch_reference(MODERATE, MODERATE_TARGETS)
    n, k = MODERATE.shape
    got = _array(_run(cross_entropy_gradient, "cross_entropy_gradient", MODERATE, MODERATE_TARGETS),
                 "cross_entropy_gradient")
    if got.shape != (n, k):
        raise CheckFailed(f"for logits of shape {(n, k)} you returned shape {got.shape}: the gradient has the "
                          "shape of the logits")
    if not _close(got, expected):
        for wrong, message in _gradient_mistakes(MODERATE, MODERATE_TARGETS):
            if _close(got, wrong):
                raise CheckFailed(message)
        raise CheckFailed(_gradient_symptom(got, expected) or
                          f"largest difference from autograd: {np.max(np.abs(got - expected)):.3g}. Expected "
                          f"(softmax(z) - one_hot) / N:\n{np.round(expected, 4)}\ngot\n{np.round(got, 4)}")
    extreme_expected = _torch_reference(EXTREME, EXTREME_TARGETS)[1]
    extreme = _array(_run(cross_entropy_gradient, "cross_entropy_gradient", EXTREME, EXTREME_TARGETS),
                     "cross_entropy_gradient")
    if not _close(extreme, extreme_expected, scale=1000.0):
        raise CheckFailed(_extreme_failure("cross_entropy_gradient", extreme, extreme_expected,
                                           bool(np.all(np.isfinite(extreme[:2])))))
    passed("lab03.gradient")
