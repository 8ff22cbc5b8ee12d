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

from utils.checks import CheckFailed, call, checker, passed

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
    if hasattr(result, "detach"):  # a torch tensor is fine
        result = result.detach().cpu().numpy()
    try:
        return np.asarray(result, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise CheckFailed(f"{what} returned {type(result).__name__}, which is not an array of numbers") from exc


def _close(a: np.ndarray, b: np.ndarray, rtol: float = 1e-9, atol: float = 1e-12) -> bool:
    return a.shape == b.shape and bool(np.allclose(a, b, rtol=rtol, atol=atol))


def _softmax(z: np.ndarray, axis: int = -1) -> np.ndarray:
    shifted = z - z.max(axis=axis, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=axis, keepdims=True)


def _log_softmax(z: np.ndarray, axis: int = -1) -> np.ndarray:
    shifted = z - z.max(axis=axis, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))


@checker("lab03.log_softmax")
def check_log_softmax(stable_log_softmax: Callable[[np.ndarray], Any]) -> None:
    """``stable_log_softmax(logits (N, K)) -> (N, K)``: log-probabilities over the classes (last axis),
    finite for logits of +-1000."""
    _, _, expected = _torch_reference(MODERATE, MODERATE_TARGETS)
    got = _array(call(stable_log_softmax, MODERATE.copy()), "stable_log_softmax")
    if got.shape != MODERATE.shape:
        raise CheckFailed(f"for logits of shape {MODERATE.shape} you returned shape {got.shape}: return one "
                          "log-probability per logit (keep the class axis: keepdims=True when you reduce)")
    if _close(got, np.exp(expected)):
        raise CheckFailed("you returned probabilities (the softmax); return their log, z - logsumexp(z)")
    if _close(got, -expected):
        raise CheckFailed("wrong sign: log-probabilities are <= 0; return z - logsumexp(z), not its negative")
    if _close(got, _log_softmax(MODERATE, axis=0)):
        raise CheckFailed("normalised over the wrong axis: each *row* (axis=-1, the classes) must sum to 1 in "
                          "probability, not each column (axis=0, the batch)")
    if not _close(got, expected):
        raise CheckFailed(f"for the logits\n{MODERATE}\nyou returned\n{np.round(got, 4)}\nexpected "
                          f"(torch.log_softmax)\n{np.round(expected, 4)}")
    extreme_expected = _torch_reference(EXTREME, EXTREME_TARGETS)[2]
    extreme = _array(call(stable_log_softmax, EXTREME.copy()), "stable_log_softmax")
    if not np.all(np.isfinite(extreme)):
        first_two_ok = np.all(np.isfinite(extreme[:2]))
        if first_two_ok:
            raise CheckFailed("unstable for the last row [-1000, -1001, -1002]: you subtracted the largest logit "
                              "of the whole batch (1000), so exp() of that row underflows to 0. Subtract the max "
                              "of each row: z.max(axis=-1, keepdims=True)")
        raise CheckFailed(f"unstable: for the logits [1000, 0, -1000] you returned {extreme[0].tolist()} (nan or "
                          "inf: exp(1000) overflows, exp(-1000) underflows). Subtract each row's max before exp "
                          "(log-sum-exp): log_softmax(z) = (z - m) - log(sum(exp(z - m)))")
    if not _close(extreme, extreme_expected):
        raise CheckFailed(f"for the logits\n{EXTREME}\nyou returned\n{extreme}\nexpected\n{extreme_expected}")
    passed("lab03.log_softmax")


@checker("lab03.cross_entropy")
def check_cross_entropy(cross_entropy_loss: Callable[[np.ndarray, np.ndarray], Any]) -> None:
    """``cross_entropy_loss(logits (N, K), targets (N,) int) -> float``: the **mean** over the batch of
    ``-log softmax(logits)[i, targets[i]]``, in nats, finite for logits of +-1000."""
    expected, _, log_p = _torch_reference(MODERATE, MODERATE_TARGETS)
    n, k = MODERATE.shape
    result = _array(call(cross_entropy_loss, MODERATE.copy(), MODERATE_TARGETS.copy()), "cross_entropy_loss")
    if result.size != 1:
        raise CheckFailed(f"returned an array of shape {result.shape}; return one number: the mean of the "
                          f"{n} per-example losses")
    got = float(result.reshape(-1)[0])
    if np.isclose(got, -expected, rtol=1e-9):
        raise CheckFailed(f"wrong sign: got {got:.4f}, expected {expected:.4f}. The loss is -log p(target), "
                          "which is >= 0")
    if np.isclose(got, n * expected, rtol=1e-9):
        raise CheckFailed(f"wrong reduction: got {got:.4f} = {n} x {expected:.4f}, the sum over the batch. "
                          f"Return the mean (divide by N = {n}), as F.cross_entropy does by default")
    if np.isclose(got, expected / k, rtol=1e-9):
        raise CheckFailed(f"got {got:.4f} = {expected:.4f} / {k}: you averaged over the classes too (the mean "
                          "of an (N, K) array). Sum over the classes, then average over the N examples")
    if np.isclose(abs(got), -log_p.mean(), rtol=1e-9):
        raise CheckFailed(f"got {got:.4f}, the average of -log p over *all* classes: pick the target's entry "
                          "of each row, log_p[np.arange(N), targets]")
    if not np.isclose(got, expected, rtol=1e-9):
        raise CheckFailed(f"for the batch\n{MODERATE}\nwith targets {MODERATE_TARGETS.tolist()} you returned "
                          f"{got:.6f}, expected {expected:.6f} (F.cross_entropy)")
    extreme_expected = _torch_reference(EXTREME, EXTREME_TARGETS)[0]
    extreme = float(_array(call(cross_entropy_loss, EXTREME.copy(), EXTREME_TARGETS.copy()),
                           "cross_entropy_loss").reshape(-1)[0])
    if not np.isfinite(extreme):
        raise CheckFailed(f"unstable: for logits of +-1000 you returned {extreme} (nan or inf); expected "
                          f"{extreme_expected:.1f}. Compute the loss from a log-softmax that subtracts each "
                          "row's max (log-sum-exp), not from log(softmax(z))")
    if extreme < extreme_expected / 10:
        raise CheckFailed(f"for logits of +-1000 you returned {extreme:.3f}, expected {extreme_expected:.1f}: "
                          "did you clip the probabilities (as Keras does with from_logits=False)? A clip caps "
                          "the loss of a confidently wrong model; compute it from the logits instead")
    if not np.isclose(extreme, extreme_expected, rtol=1e-9):
        raise CheckFailed(f"for logits of +-1000 you returned {extreme:.6f}, expected {extreme_expected:.6f}")
    passed("lab03.cross_entropy")


@checker("lab03.gradient")
def check_gradient(cross_entropy_gradient: Callable[[np.ndarray, np.ndarray], Any]) -> None:
    """``cross_entropy_gradient(logits (N, K), targets (N,)) -> (N, K)``: the gradient of the *mean*
    cross-entropy with respect to the logits, ``(softmax(z) - one_hot(targets)) / N``; compared with
    PyTorch autograd, also for logits of +-1000."""
    _, expected, _ = _torch_reference(MODERATE, MODERATE_TARGETS)
    n, k = MODERATE.shape
    got = _array(call(cross_entropy_gradient, MODERATE.copy(), MODERATE_TARGETS.copy()), "cross_entropy_gradient")
    if got.shape != (n, k):
        raise CheckFailed(f"for logits of shape {(n, k)} you returned shape {got.shape}: the gradient has the "
                          "shape of the logits")
    probabilities = _softmax(MODERATE)
    one_hot = np.eye(k)[MODERATE_TARGETS]
    if _close(got, -expected) or _close(got, -n * expected):
        raise CheckFailed("wrong sign: the gradient is softmax(z) - one_hot (predicted minus target), so a step "
                          "against it raises the target's logit; yours is its negative")
    if _close(got, n * expected):
        raise CheckFailed(f"not divided by N: your gradient is {n} x autograd's. The loss is a mean over N = {n} "
                          "examples, so its gradient is (softmax(z) - one_hot) / N")
    if _close(got, probabilities / n) or _close(got, probabilities):
        raise CheckFailed("you returned the softmax (over N) without subtracting the one-hot target: "
                          "dL/dz = (softmax(z) - one_hot(targets)) / N")
    if _close(got, (probabilities - one_hot) / (n * k)):
        raise CheckFailed(f"divided by N x K = {n * k}; the loss averages over the N examples only, divide by N")
    if not _close(got, expected):
        raise CheckFailed(f"largest difference from autograd: {np.max(np.abs(got - expected)):.3g}. Expected "
                          f"(softmax(z) - one_hot) / N:\n{np.round(expected, 4)}\ngot\n{np.round(got, 4)}")
    extreme_expected = _torch_reference(EXTREME, EXTREME_TARGETS)[1]
    extreme = _array(call(cross_entropy_gradient, EXTREME.copy(), EXTREME_TARGETS.copy()), "cross_entropy_gradient")
    if not np.all(np.isfinite(extreme)):
        raise CheckFailed(f"unstable: for logits of +-1000 your gradient contains nan or inf:\n{extreme}\nCompute "
                          "the softmax from the max-shifted logits, exp(z - max) / sum(exp(z - max))")
    if not _close(extreme, extreme_expected):
        raise CheckFailed(f"for logits of +-1000 you returned\n{extreme}\nexpected (autograd)\n{extreme_expected}")
    if not np.allclose(got.sum(axis=1), 0.0, atol=1e-12):
        raise CheckFailed("each row of the gradient should sum to 0 (probabilities and one-hot both sum to 1)")
    passed("lab03.gradient")
