"""utils.chapters.ch08_broken_runs: the initialisations and their scale (``init``, ``init_gain``, Xavier's gain for the
sigmoid), the signal sizes chapter 8 prints, and the exploding-gradient demonstration far from its edge: the
broken setting overflows within a few updates for every seed tried, its cures do not."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from utils.chapters import ch08_broken_runs as broken_runs

# chapter 8's exploding run: eight ReLU layers at 1.8 x He's scale, SGD at 0.02
EXPLODING = replace(broken_runs.Setting(), depth=8, init="kaiming", init_gain=1.8, lr=0.02, steps=40)


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _model(setting: broken_runs.Setting, seed: int = 0) -> broken_runs.DeepMLP:
    torch.manual_seed(seed)
    return broken_runs.DeepMLP(setting)


def test_init_gain_multiplies_every_weight_matrix_and_nothing_else():
    plain = _model(replace(EXPLODING, init_gain=1.0))
    scaled = _model(EXPLODING)
    for (name, a), (_, b) in zip(plain.named_parameters(), scaled.named_parameters(), strict=True):
        factor = 1.8 if name.endswith("weight") else 1.0
        torch.testing.assert_close(b, factor * a, msg=name)


def test_kaiming_and_xavier_standard_deviations():
    width = 256  # large enough for the sample standard deviation to be within a few percent
    relu = _model(replace(broken_runs.Setting(), width=width, init="kaiming"))
    assert relu.layers[1].weight.std().item() == pytest.approx(math.sqrt(2 / width), rel=0.05)
    for activation, gain in (("sigmoid", 4.0), ("tanh", 1.0)):
        net = _model(replace(broken_runs.Setting(), width=width, activation=activation, init="xavier"))
        expected = gain * math.sqrt(2 / (width + width))
        assert net.layers[1].weight.std().item() == pytest.approx(expected, rel=0.05), activation
        assert torch.count_nonzero(net.layers[1].bias) == 0


def test_unknown_init_is_refused():
    with pytest.raises(ValueError, match="init must be"):
        broken_runs.DeepMLP(replace(broken_runs.Setting(), init="orthogonal"))


def test_layer_output_stds_grow_by_the_gain_per_layer():
    x = broken_runs.digits_data(EXPLODING).x_train[:256]
    right = broken_runs.layer_output_stds(_model(replace(EXPLODING, init_gain=1.0)), x)
    large = broken_runs.layer_output_stds(_model(EXPLODING), x)
    assert right.shape == large.shape == (EXPLODING.depth,)
    assert 0.3 < right[-1] / right[0] < 3  # He's scale keeps the signal
    np.testing.assert_allclose(large / right, 1.8 ** np.arange(1, EXPLODING.depth + 1), rtol=1e-4)


def test_xavier_scaled_for_the_sigmoid_passes_the_gradient_back():
    """Six sigmoid layers: the first layer's gradient relative to the last's, at initialisation."""
    vanishing = replace(broken_runs.Setting(), depth=6, activation="sigmoid", lr=0.1)
    data = broken_runs.digits_data(vanishing)
    ratio = {}
    for name, setting in {"default": vanishing, "xavier": replace(vanishing, init="xavier"),
                          "xavier gain 1": replace(vanishing, init="xavier", init_gain=0.25)}.items():
        norms = broken_runs.layer_gradient_norms(_model(setting), setting, data)
        ratio[name] = norms[0] / norms[-1]
    assert ratio["default"] < 1e-3 and ratio["xavier gain 1"] < 3e-3
    assert ratio["xavier"] > 10 * ratio["xavier gain 1"] and ratio["xavier"] > 1e-2


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_exploding_setting_overflows_within_a_few_updates_and_its_cures_do_not(seed, tmp_path,
                                                                                   monkeypatch):
    monkeypatch.setenv("BOOK_RUNS_DIR", str(tmp_path))
    broken = broken_runs.train_setting("broken", EXPLODING, seed=seed, eval_every=0)
    assert broken.result.diverged and broken.result.steps_done <= 10
    for name, cure in {"clipped": replace(EXPLODING, grad_clip=5.0),
                       "he-init": replace(EXPLODING, init_gain=1.0)}.items():
        outcome = broken_runs.train_setting(name, cure, seed=seed, eval_every=0)
        assert not outcome.result.diverged, name
        assert np.mean(outcome.result.train_loss[-10:]) < np.mean(outcome.result.train_loss[:10]), name
