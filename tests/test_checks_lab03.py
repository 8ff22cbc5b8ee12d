"""utils.checks.lab03_cross_entropy: each classic wrong implementation is rejected with a diagnosis that
names its mistake; the right ones pass."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from utils import crossentropy
from utils.checks import CheckFailed, all_checkers
from utils.checks import lab03_cross_entropy as lab03

# --------------------------------------------------------------------------------------------- log-softmax


def right_log_softmax(z):
    return crossentropy.log_softmax(z, axis=-1)


def naive_log_softmax(z):
    with np.errstate(all="ignore"):
        return np.log(np.exp(z) / np.exp(z).sum(axis=-1, keepdims=True))


def batch_max_log_softmax(z):
    shifted = z - z.max()
    with np.errstate(all="ignore"):
        return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def probabilities_not_logs(z):
    return crossentropy.softmax(z)


def negated_log_softmax(z):
    return -crossentropy.log_softmax(z)


def wrong_axis_log_softmax(z):
    return crossentropy.log_softmax(z, axis=0)


def reduced_log_softmax(z):
    return crossentropy.logsumexp(z)


def not_implemented(*args):
    raise NotImplementedError("subtract the max of each row")


@pytest.mark.parametrize("wrong,diagnosis", [
    (naive_log_softmax, "unstable"),
    (batch_max_log_softmax, "whole batch"),
    (probabilities_not_logs, "probabilities"),
    (negated_log_softmax, "wrong sign"),
    (wrong_axis_log_softmax, "wrong axis"),
    (reduced_log_softmax, "shape"),
    (not_implemented, "not implemented yet. Hint: subtract the max"),
    (lambda z: None, "return"),
])
def test_log_softmax_mistakes_are_named(wrong, diagnosis):
    with pytest.raises(CheckFailed, match=diagnosis):
        lab03.check_log_softmax(wrong)


# --------------------------------------------------------------------------------------------- the loss


def right_loss(logits, targets):
    return crossentropy.softmax_cross_entropy(logits, targets)


def naive_loss(logits, targets):
    with np.errstate(all="ignore"):
        p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        return float(-np.mean(np.log(p[np.arange(len(targets)), targets])))


def sum_loss(logits, targets):
    return crossentropy.softmax_cross_entropy(logits, targets, reduction="sum")


def sign_loss(logits, targets):
    return -crossentropy.softmax_cross_entropy(logits, targets)


def over_classes_loss(logits, targets):
    one_hot = np.eye(logits.shape[1])[targets]
    return float(-np.mean(one_hot * crossentropy.log_softmax(logits)))


def all_classes_loss(logits, targets):
    return float(-np.mean(crossentropy.log_softmax(logits)))


def clipped_loss(logits, targets):
    p = np.clip(crossentropy.softmax(logits), 1e-7, 1 - 1e-7)
    return float(-np.mean(np.log(p[np.arange(len(targets)), targets])))


def per_example_loss(logits, targets):
    return crossentropy.softmax_cross_entropy(logits, targets, reduction="none")


@pytest.mark.parametrize("wrong,diagnosis", [
    (naive_loss, "unstable"),
    (sum_loss, "wrong reduction"),
    (sign_loss, "wrong sign"),
    (over_classes_loss, "averaged over the classes"),
    (all_classes_loss, "all\\* classes"),
    (clipped_loss, "clip"),
    (per_example_loss, "one number"),
    (not_implemented, "not implemented yet"),
])
def test_loss_mistakes_are_named(wrong, diagnosis):
    with pytest.raises(CheckFailed, match=diagnosis):
        lab03.check_cross_entropy(wrong)


# --------------------------------------------------------------------------------------------- the gradient


def right_gradient(logits, targets):
    return crossentropy.softmax_cross_entropy_grad(logits, targets)


def naive_softmax_gradient(logits, targets):
    with np.errstate(all="ignore"):
        p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return (p - np.eye(logits.shape[1])[targets]) / len(targets)


def sum_gradient(logits, targets):
    return crossentropy.softmax_cross_entropy_grad(logits, targets, reduction="sum")


def sign_gradient(logits, targets):
    return -crossentropy.softmax_cross_entropy_grad(logits, targets)


def no_one_hot_gradient(logits, targets):
    return crossentropy.softmax(logits) / len(targets)


def n_times_k_gradient(logits, targets):
    return crossentropy.softmax_cross_entropy_grad(logits, targets) / logits.shape[1]


def transposed_gradient(logits, targets):
    return crossentropy.softmax_cross_entropy_grad(logits, targets).T


@pytest.mark.parametrize("wrong,diagnosis", [
    (naive_softmax_gradient, "unstable"),
    (sum_gradient, "not divided by N"),
    (sign_gradient, "wrong sign"),
    (no_one_hot_gradient, "without subtracting the one-hot"),
    (n_times_k_gradient, "N x K"),
    (transposed_gradient, "shape"),
    (not_implemented, "not implemented yet"),
])
def test_gradient_mistakes_are_named(wrong, diagnosis):
    with pytest.raises(CheckFailed, match=diagnosis):
        lab03.check_gradient(wrong)


# --------------------------------------------------------------------------------------------- the right ones


def test_right_implementations_pass(capsys):
    lab03.check_log_softmax(right_log_softmax)
    lab03.check_cross_entropy(right_loss)
    lab03.check_gradient(right_gradient)
    assert capsys.readouterr().out.splitlines() == ["PASSED lab03.log_softmax", "PASSED lab03.cross_entropy",
                                                    "PASSED lab03.gradient"]


def test_torch_implementations_pass_too():
    lab03.check_log_softmax(lambda z: torch.log_softmax(torch.tensor(z), dim=-1))
    lab03.check_cross_entropy(lambda z, t: torch.nn.functional.cross_entropy(torch.tensor(z), torch.tensor(t)))


def test_checkers_are_registered():
    registry = all_checkers()
    assert {"lab03.log_softmax", "lab03.cross_entropy", "lab03.gradient"} <= set(registry)
