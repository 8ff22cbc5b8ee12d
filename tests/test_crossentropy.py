"""utils.crossentropy: exact values, stability at extreme logits, agreement with PyTorch to 1e-12 (float64)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from utils import crossentropy as ce

ARTICLE_W = np.array([[0.1 * (i + r) for i in range(1, 11)] for r in range(3)])  # (3, 10)
ARTICLE_B = np.array([0.1, 0.2, 0.3])
ARTICLE_X = np.arange(1.0, 11.0)


def test_the_article_sum_is_the_y1_terms_only_and_misses_ln_2():
    """The outline's -[ln 0.4 + ln 0.6] (1.427, not 0.392) is the BCE of the two y=1 outputs alone; the y=0
    output with y_hat = 0.5 adds -ln(1 - 0.5) = ln 2. Checked on ``binary_cross_entropy``, not on math.log."""
    y1_only = ce.binary_cross_entropy([0.4, 0.6], [1, 1], "sum")
    assert round(y1_only, 3) == 1.427
    full = ce.binary_cross_entropy([0.4, 0.5, 0.6], [1, 0, 1], "sum")
    assert full - y1_only == pytest.approx(math.log(2), rel=1e-12)
    assert ce.binary_cross_entropy([0.5], [0], "sum") == pytest.approx(math.log(2), rel=1e-12)  # the y=0 term


def test_binary_cross_entropy_of_the_article_outputs():
    y_hat, y = [0.4, 0.5, 0.6], [1, 0, 1]
    assert round(ce.binary_cross_entropy(y_hat, y, "sum"), 3) == 2.120
    assert round(ce.binary_cross_entropy(y_hat, y, "mean"), 3) == 0.707
    np.testing.assert_allclose(ce.binary_cross_entropy(y_hat, y, "none"), -np.log([0.4, 0.5, 0.6]), rtol=1e-15)


def test_the_article_hidden_layer_saturates():
    z1 = ARTICLE_W @ ARTICLE_X + ARTICLE_B
    np.testing.assert_allclose(z1, [38.6, 44.2, 49.8], rtol=1e-13)
    assert np.all(ce.sigmoid(z1) == 1.0)


@pytest.mark.parametrize("z", [-1000.0, -40.0, -1.0, 0.0, 2.5, 40.0, 1000.0])
def test_sigmoid_and_bce_with_logits_match_torch(z):
    assert ce.sigmoid(z) == pytest.approx(torch.sigmoid(torch.tensor(z, dtype=torch.float64)).item(), rel=1e-15)
    for y in (0.0, 1.0):
        expected = F.binary_cross_entropy_with_logits(torch.tensor([z], dtype=torch.float64),
                                                      torch.tensor([y], dtype=torch.float64)).item()
        assert ce.binary_cross_entropy_with_logits([z], [y]) == pytest.approx(expected, rel=1e-12, abs=1e-15)  # torch rounds log1p(e^-40) to 0


def test_extreme_logits_are_finite_where_the_naive_formula_is_not():
    z = np.array([[1000.0, 0.0, -1000.0]])
    assert not np.all(np.isfinite(ce.naive_log_softmax(z)))
    np.testing.assert_array_equal(ce.log_softmax(z), [[0.0, -1000.0, -2000.0]])
    assert ce.logsumexp(z).item() == 1000.0
    assert ce.softmax_cross_entropy(z, np.array([0])) == 0.0
    assert ce.softmax_cross_entropy(z, np.array([2])) == 2000.0
    grad = ce.softmax_cross_entropy_grad(z, np.array([2]))
    assert np.all(np.isfinite(grad))
    np.testing.assert_allclose(grad, [[1.0, 0.0, -1.0]], atol=1e-300)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1, 0.5])
@pytest.mark.parametrize("scale", [1.0, 500.0])
def test_softmax_cross_entropy_matches_torch(reduction, label_smoothing, scale):
    rng = np.random.default_rng(7)
    logits = rng.normal(size=(8, 5)) * scale
    targets = np.array([0, 4, -100, 2, 1, -100, 3, 3])
    ours = ce.softmax_cross_entropy(logits, targets, reduction, label_smoothing=label_smoothing)
    z = torch.tensor(logits, requires_grad=True)
    theirs = F.cross_entropy(z, torch.tensor(targets), reduction=reduction, label_smoothing=label_smoothing)
    np.testing.assert_allclose(ours, theirs.detach().numpy(), rtol=1e-12, atol=1e-12 * scale)
    if reduction != "none":
        theirs.backward()
        grad = ce.softmax_cross_entropy_grad(logits, targets, reduction, label_smoothing=label_smoothing)
        np.testing.assert_allclose(grad, z.grad.numpy(), rtol=1e-12, atol=1e-14)


def test_custom_ignore_index_and_reductions():
    logits = np.array([[2.0, 0.5, -1.0], [0.0, 0.0, 0.0], [1.0, 3.0, 0.0]])
    targets = np.array([0, 7, 1])
    per_row = ce.softmax_cross_entropy(logits, targets, "none", ignore_index=7)
    assert per_row[1] == 0.0
    assert ce.softmax_cross_entropy(logits, targets, "sum", ignore_index=7) == pytest.approx(per_row.sum())
    assert ce.softmax_cross_entropy(logits, targets, "mean", ignore_index=7) == pytest.approx(per_row.sum() / 2)
    expected = F.cross_entropy(torch.tensor(logits), torch.tensor(targets), ignore_index=7).item()
    assert ce.softmax_cross_entropy(logits, targets, ignore_index=7) == pytest.approx(expected, rel=1e-12)
    assert math.isnan(ce.softmax_cross_entropy(logits, np.array([7, 7, 7]), ignore_index=7))


def test_uniform_guess_costs_log_k_and_perplexity_k():
    for k in (2, 3, 50, 50_257):
        loss = ce.softmax_cross_entropy(np.zeros((4, k)), np.array([0, 1, 0, 1]))
        assert loss == pytest.approx(math.log(k), rel=1e-12)
        assert math.exp(loss) == pytest.approx(k, rel=1e-9)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="reduction"):
        ce.softmax_cross_entropy(np.zeros((2, 3)), np.array([0, 1]), "avg")
    with pytest.raises(ValueError, match="targets"):
        ce.softmax_cross_entropy(np.zeros((2, 3)), np.array([0, 3]))
    with pytest.raises(ValueError, match="integer"):
        ce.softmax_cross_entropy(np.zeros((2, 3)), np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match="shapes do not fit"):  # the article's mistake: W1 reused on a1
        ce.two_layer_forward({"W1": ARTICLE_W, "b1": ARTICLE_B, "W2": ARTICLE_W, "b2": ARTICLE_B}, ARTICLE_X)


def _params(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"W1": rng.normal(0, 0.5, (3, 10)), "b1": rng.normal(0, 0.5, 3),
            "W2": rng.normal(0, 0.5, (3, 3)), "b2": rng.normal(0, 0.5, 3)}


@pytest.mark.parametrize("output,y", [("sigmoid", [1.0, 0.0, 1.0]), ("softmax", [0.0, 0.0, 1.0])])
def test_two_layer_gradients_match_autograd_and_finite_differences(output, y):
    params, x = _params(), ARTICLE_X / 10
    analytic = ce.two_layer_gradients(params, x, y, output)
    numeric = ce.numerical_gradients(lambda p: ce.two_layer_loss(p, x, y, output), params)
    tensors = {name: torch.tensor(value, requires_grad=True) for name, value in params.items()}
    a1 = torch.sigmoid(tensors["W1"] @ torch.tensor(x) + tensors["b1"])
    z2 = tensors["W2"] @ a1 + tensors["b2"]
    target = torch.tensor(y, dtype=torch.float64)
    loss = (F.binary_cross_entropy_with_logits(z2, target, reduction="sum") if output == "sigmoid"
            else -(target * torch.log_softmax(z2, 0)).sum())
    loss.backward()
    assert loss.item() == pytest.approx(ce.two_layer_loss(params, x, y, output), rel=1e-14)
    for name in params:
        assert analytic[name].shape == params[name].shape
        assert ce.max_relative_error(analytic[name], tensors[name].grad.numpy()) < 1e-12
        assert ce.max_relative_error(analytic[name], numeric[name]) < 1e-6
    np.testing.assert_allclose(analytic["W2"], np.outer(ce.two_layer_forward(params, x, output)["y_hat"] - y,
                                                        ce.two_layer_forward(params, x, output)["a1"]))


def test_a_gradient_step_changes_the_weights_and_lowers_the_loss():
    params, x, y = _params(1), ARTICLE_X / 10, [1.0, 0.0, 1.0]
    grads = ce.two_layer_gradients(params, x, y)
    stepped = ce.gradient_descent_step(params, grads, lr=0.5)
    assert all(not np.array_equal(stepped[name], params[name]) for name in params)
    assert ce.two_layer_loss(stepped, x, y) < ce.two_layer_loss(params, x, y)
    assert ce.gradient_descent_step(params, grads, lr=0.0)["W1"] is not params["W1"]


def test_numerical_gradient_and_relative_error():
    grad = ce.numerical_gradient(lambda v: float(np.sum(v**3)), np.array([[1.0, -2.0], [0.5, 3.0]]))
    np.testing.assert_allclose(grad, [[3.0, 12.0], [0.75, 27.0]], rtol=1e-8)
    assert ce.max_relative_error([1.0, 0.0], [1.0, 0.0]) == 0.0
    assert ce.max_relative_error([1.0, 2.0], [1.0, 1.0]) == 0.5
