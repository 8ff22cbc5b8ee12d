"""Cross-entropy, worked by hand in NumPy (float64): the losses, their gradients, and a two-layer network.

Chapter 3 teaches these functions and shows their source; later chapters import them. Every loss is in
**nats** (natural logarithm); divide by ``ln 2`` for bits. Shapes in the docstrings: ``N`` examples,
``K`` classes (or outputs), ``D`` inputs, ``H`` hidden units.

Losses
    ``binary_cross_entropy`` (from probabilities), ``binary_cross_entropy_with_logits`` (stable),
    ``softmax_cross_entropy`` (from logits, with ``reduction``, ``ignore_index`` and ``label_smoothing``
    as in ``torch.nn.functional.cross_entropy``) and its analytic gradient ``softmax_cross_entropy_grad``.
Stability
    ``logsumexp``, ``log_softmax`` and ``softmax`` shift by the maximum first; ``naive_log_softmax`` is the
    textbook formula ``log(exp(z) / sum(exp(z)))``, kept to show how it fails for large logits.
The worked example
    ``two_layer_forward`` / ``two_layer_loss`` / ``two_layer_gradients`` for ``x (D,) -> sigmoid hidden (H,)
    -> K outputs``, ``gradient_descent_step``, and the checks: ``numerical_gradient`` (central finite
    differences) and ``max_relative_error``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

Array = NDArray[np.float64]
Reduction = Literal["mean", "sum", "none"]
Output = Literal["sigmoid", "softmax"]

#: The ``ignore_index`` default of PyTorch: targets equal to it (padding) add nothing to the loss.
IGNORE_INDEX = -100


def _f64(values: ArrayLike) -> Array:
    return np.asarray(values, dtype=np.float64)


def _reduce(losses: Array, reduction: Reduction, count: int | None = None) -> float | Array:
    """Sum, mean (over ``count`` items, default all) or no reduction of per-item losses."""
    if reduction == "none":
        return losses
    if reduction == "sum":
        return float(losses.sum())
    if reduction == "mean":
        n = losses.size if count is None else count
        return float(losses.sum() / n) if n > 0 else float("nan")
    raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


# --------------------------------------------------------------------------------------------- building blocks


def sigmoid(z: ArrayLike) -> Array:
    """``1 / (1 + exp(-z))`` elementwise, any shape, without overflow for large ``|z|``.

    In float64 it rounds to exactly 1.0 for ``z`` above about 36.7 (saturation: its slope is then 0 to 16
    digits)."""
    z = _f64(z)
    e = np.exp(-np.abs(z))  # never overflows: the exponent is <= 0
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def logsumexp(z: ArrayLike, axis: int = -1) -> Array:
    """``log(sum(exp(z)))`` along ``axis``, computed as ``m + log(sum(exp(z - m)))`` with ``m = max(z)``.

    Shape: ``z`` without ``axis``. After the shift the largest exponent is ``exp(0) = 1``, so nothing
    overflows and the sum is at least 1, so its log is finite."""
    z = _f64(z)
    m = np.max(z, axis=axis, keepdims=True)
    return np.squeeze(m, axis=axis) + np.log(np.sum(np.exp(z - m), axis=axis))


def log_softmax(z: ArrayLike, axis: int = -1) -> Array:
    """Log-probabilities ``z - logsumexp(z)`` along ``axis`` (nats); same shape as ``z``; finite for any
    finite logits."""
    z = _f64(z)
    return z - np.expand_dims(logsumexp(z, axis=axis), axis)


def softmax(z: ArrayLike, axis: int = -1) -> Array:
    """Probabilities ``exp(z) / sum(exp(z))`` along ``axis``, computed from the max-shifted logits; same
    shape as ``z``; each slice sums to 1."""
    return np.exp(log_softmax(z, axis=axis))


def naive_log_softmax(z: ArrayLike, axis: int = -1) -> Array:
    """The textbook ``log(exp(z) / sum(exp(z)))``, **unstable on purpose** (for the chapter's comparison).

    ``exp`` overflows to ``inf`` above ``z`` of about 709.8 (giving ``inf / inf = nan``) and underflows to 0
    below about -745 (giving ``log 0 = -inf``). NumPy's overflow warnings are silenced; the result shows the
    damage."""
    z = _f64(z)
    with np.errstate(over="ignore", under="ignore", divide="ignore", invalid="ignore"):
        e = np.exp(z)
        return np.log(e / np.sum(e, axis=axis, keepdims=True))


# --------------------------------------------------------------------------------------------- losses


def binary_cross_entropy(probabilities: ArrayLike, targets: ArrayLike, reduction: Reduction = "mean") -> float | Array:
    """``-[y log p + (1 - y) log(1 - p)]`` per entry (nats), then reduced.

    probabilities: predicted ``P(y = 1)``, any shape, in (0, 1). targets: same shape, 0 or 1 (or soft
    labels in [0, 1]). Both terms count: an entry with ``y = 0`` costs ``-log(1 - p)``, not nothing. A
    probability of exactly 0 or 1 on the wrong side gives ``inf``; use ``binary_cross_entropy_with_logits``
    when you have logits."""
    p, y = _f64(probabilities), _f64(targets)
    with np.errstate(divide="ignore"):
        losses = -(y * np.log(p) + (1.0 - y) * np.log1p(-p))
    return _reduce(losses, reduction)


def binary_cross_entropy_with_logits(logits: ArrayLike, targets: ArrayLike,
                                     reduction: Reduction = "mean") -> float | Array:
    """``binary_cross_entropy(sigmoid(z), y)`` computed stably from the logits ``z`` (any shape), in nats:
    ``max(z, 0) - z y + log(1 + exp(-|z|))``. Finite for any finite ``z``. Its gradient with respect to
    ``z`` is ``sigmoid(z) - y`` per entry (divided by the number of entries for ``reduction="mean"``)."""
    z, y = _f64(logits), _f64(targets)
    losses = np.maximum(z, 0.0) - z * y + np.log1p(np.exp(-np.abs(z)))
    return _reduce(losses, reduction)


def _smoothed_targets(logits: Array, targets: ArrayLike, ignore_index: int,
                      label_smoothing: float) -> tuple[Array, NDArray[np.bool_]]:
    """Target distributions ``q (N, K)`` = ``(1 - eps) one_hot + eps / K`` (rows of ignored targets are 0)
    and the mask of kept rows ``(N,)``."""
    if logits.ndim != 2:
        raise ValueError(f"logits must have shape (N, K), got {logits.shape}")
    n, k = logits.shape
    t = np.asarray(targets)
    if t.shape != (n,) or not np.issubdtype(t.dtype, np.integer):
        raise ValueError(f"targets must be {n} integer class indices (shape ({n},)), got {t.dtype} {t.shape}")
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing}")
    keep = t != ignore_index
    if np.any((t[keep] < 0) | (t[keep] >= k)):
        raise ValueError(f"targets must be in [0, {k}) or equal ignore_index={ignore_index}, got {t.tolist()}")
    q = np.zeros((n, k))
    q[keep] = label_smoothing / k
    q[np.flatnonzero(keep), t[keep]] += 1.0 - label_smoothing
    return q, keep


def softmax_cross_entropy(logits: ArrayLike, targets: ArrayLike, reduction: Reduction = "mean",
                          ignore_index: int = IGNORE_INDEX, label_smoothing: float = 0.0) -> float | Array:
    """Categorical cross-entropy of softmax(logits) against class indices, in nats, as
    ``torch.nn.functional.cross_entropy`` computes it.

    logits: ``(N, K)`` raw scores (not probabilities). targets: ``(N,)`` integers in ``[0, K)``; entries
    equal to ``ignore_index`` (padding) contribute 0 and are not counted by ``"mean"``. Per row the loss is
    ``-sum_k q_k log_softmax(z)_k`` with ``q = (1 - eps) one_hot(t) + eps / K`` (``eps`` =
    ``label_smoothing``; with ``eps = 0`` it is ``-log p_t``). ``reduction``: ``"mean"`` over kept rows
    (nan if none), ``"sum"``, or ``"none"`` for the ``(N,)`` per-row losses (0 on ignored rows). Uses
    ``log_softmax``, so logits of +-1000 are fine."""
    z = _f64(logits)
    q, keep = _smoothed_targets(z, targets, ignore_index, label_smoothing)
    losses = 0.0 - np.sum(q * log_softmax(z, axis=-1), axis=-1)  # (N,), 0 where ignored (0.0 - 0.0, not -0.0)
    return _reduce(losses, reduction, count=int(keep.sum()))


def softmax_cross_entropy_grad(logits: ArrayLike, targets: ArrayLike, reduction: Literal["mean", "sum"] = "mean",
                               ignore_index: int = IGNORE_INDEX, label_smoothing: float = 0.0) -> Array:
    """The gradient of ``softmax_cross_entropy`` (same arguments) with respect to the logits: ``(N, K)``.

    Row ``i`` is ``softmax(z_i) - q_i`` (predicted minus target distribution), 0 on ignored rows, divided
    by the number of kept rows for ``reduction="mean"``. Each kept row sums to 0."""
    z = _f64(logits)
    q, keep = _smoothed_targets(z, targets, ignore_index, label_smoothing)
    grad = (softmax(z, axis=-1) - q) * keep[:, None]
    if reduction == "mean":
        return grad / max(int(keep.sum()), 1)
    if reduction == "sum":
        return grad
    raise ValueError(f"reduction must be 'mean' or 'sum' for a gradient, got {reduction!r}")


# --------------------------------------------------------------------------------------------- the worked example

Params = dict[str, Array]


def two_layer_forward(params: Mapping[str, ArrayLike], x: ArrayLike, output: Output = "sigmoid") -> dict[str, Array]:
    """Forward pass of ``x (D,) -> a1 = sigmoid(W1 x + b1) (H,) -> y_hat = f(W2 a1 + b2) (K,)``.

    params: ``W1 (H, D)``, ``b1 (H,)``, ``W2 (K, H)``, ``b2 (K,)``: the output layer has its own weights.
    output: ``"sigmoid"`` (K independent yes/no outputs, binary cross-entropy) or ``"softmax"`` (one of K
    classes, categorical cross-entropy). Returns every intermediate: ``z1`` (hidden pre-activations),
    ``a1`` (hidden activations), ``z2`` (output logits) and ``y_hat`` (predicted probabilities)."""
    w1, b1, w2, b2 = (_f64(params[name]) for name in ("W1", "b1", "W2", "b2"))
    x = _f64(x)
    if w1.shape[1] != x.shape[0] or w2.shape[1] != w1.shape[0] or b1.shape != (w1.shape[0],) \
            or b2.shape != (w2.shape[0],):
        raise ValueError(f"shapes do not fit: W1 {w1.shape}, b1 {b1.shape}, x {x.shape}, W2 {w2.shape}, "
                         f"b2 {b2.shape}; need W1 (H, D), b1 (H,), x (D,), W2 (K, H), b2 (K,)")
    z1 = w1 @ x + b1  # (H,)
    a1 = sigmoid(z1)  # (H,)
    z2 = w2 @ a1 + b2  # (K,)
    if output == "sigmoid":
        y_hat = sigmoid(z2)
    elif output == "softmax":
        y_hat = softmax(z2)
    else:
        raise ValueError(f"output must be 'sigmoid' or 'softmax', got {output!r}")
    return {"z1": z1, "a1": a1, "z2": z2, "y_hat": y_hat}


def two_layer_loss(params: Mapping[str, ArrayLike], x: ArrayLike, y: ArrayLike, output: Output = "sigmoid") -> float:
    """The loss of one example (nats), computed from the logits ``z2`` (stable).

    ``"sigmoid"``: binary cross-entropy **summed** over the K outputs, ``y (K,)`` of 0/1.
    ``"softmax"``: categorical cross-entropy ``-sum_k y_k log softmax(z2)_k``, ``y (K,)`` one-hot (or any
    distribution)."""
    z2 = two_layer_forward(params, x, output)["z2"]
    y = _f64(y)
    if output == "sigmoid":
        return float(binary_cross_entropy_with_logits(z2, y, reduction="sum"))
    return float(-np.sum(y * log_softmax(z2)))


def two_layer_gradients(params: Mapping[str, ArrayLike], x: ArrayLike, y: ArrayLike,
                        output: Output = "sigmoid") -> Params:
    """Analytic gradients of ``two_layer_loss`` with respect to every parameter (same keys and shapes).

    Both heads give the same error at the output, ``delta2 = y_hat - y (K,)``; then
    ``dW2 = outer(delta2, a1) (K, H)``, ``db2 = delta2``; through the chain rule
    ``delta1 = (W2^T delta2) * a1 (1 - a1) (H,)`` (``sigmoid' = a (1 - a)``),
    ``dW1 = outer(delta1, x) (H, D)``, ``db1 = delta1``."""
    cache = two_layer_forward(params, x, output)
    x, y, w2 = _f64(x), _f64(y), _f64(params["W2"])
    a1 = cache["a1"]
    delta2 = cache["y_hat"] - y  # (K,)
    delta1 = (w2.T @ delta2) * a1 * (1.0 - a1)  # (H,)
    return {"W1": np.outer(delta1, x), "b1": delta1, "W2": np.outer(delta2, a1), "b2": delta2}


def gradient_descent_step(params: Mapping[str, ArrayLike], grads: Mapping[str, ArrayLike], lr: float) -> Params:
    """``theta - lr * grad`` for every parameter; returns new arrays (the inputs are not modified)."""
    return {name: _f64(value) - lr * _f64(grads[name]) for name, value in params.items()}


# --------------------------------------------------------------------------------------------- checks


def numerical_gradient(f: Callable[[Array], float], x: ArrayLike, eps: float = 1e-5) -> Array:
    """Central finite differences ``(f(x + eps e_i) - f(x - eps e_i)) / (2 eps)`` for every entry ``i`` of
    ``x`` (any shape; same shape returned). Error of order ``eps**2`` (truncation) plus about
    ``1e-16 |f| / eps`` (rounding) in float64; the default ``eps = 1e-5`` balances the two (about
    ``1e-10`` absolute for losses of order 1). Costs two calls of ``f`` per entry."""
    x = _f64(x).copy()
    grad = np.zeros_like(x)
    for index in np.ndindex(x.shape):
        saved = x[index]
        x[index] = saved + eps
        plus = f(x)
        x[index] = saved - eps
        minus = f(x)
        x[index] = saved
        grad[index] = (plus - minus) / (2.0 * eps)
    return grad


def numerical_gradients(f: Callable[[Params], float], params: Mapping[str, ArrayLike], eps: float = 1e-5) -> Params:
    """``numerical_gradient`` of ``f(params)`` with respect to each array of ``params`` in turn (the
    others held fixed); same keys and shapes."""
    base = {name: _f64(value) for name, value in params.items()}

    def along(name: str) -> Callable[[Array], float]:
        return lambda value: f({**base, name: value})

    return {name: numerical_gradient(along(name), value, eps) for name, value in base.items()}


def max_relative_error(a: ArrayLike, b: ArrayLike, floor: float = 1e-12) -> float:
    """``max_i |a_i - b_i| / max(|a_i|, |b_i|, floor)``: 0 for equal arrays, about 1e-16 for float64
    rounding, 1 or more for unrelated numbers. ``floor`` keeps entries that are both (near) zero from
    dividing by zero."""
    a, b = _f64(a), _f64(b)
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
    return float(np.max(np.abs(a - b) / np.maximum(np.maximum(np.abs(a), np.abs(b)), floor), initial=0.0))
