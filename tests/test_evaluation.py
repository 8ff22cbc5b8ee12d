"""utils.evaluation and utils.batches: losses wired to the right targets, batch-size-weighted means,
windows that are pure functions of their index."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from utils.batches import batch_count, epoch_batches, fixed_windows, random_windows, to_device
from utils.evaluation import WeightedMean, classification_loss, evaluate, lm_loss
from utils.gpt import GPT, GPTConfig


def test_evaluation_weights_batches_by_their_size():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 4)
    x, y = torch.randn(10, 3), torch.randint(0, 4, (10,))
    batches = [(x[:8], y[:8]), (x[8:], y[8:])]  # 8 and 2 examples
    got = evaluate(model, batches, classification_loss)
    with torch.no_grad():
        exact = F.cross_entropy(model(x), y).item()
        accuracy = (model(x).argmax(-1) == y).float().mean().item()
        naive = np.mean([F.cross_entropy(model(b[0]), b[1]).item() for b in batches])
    assert got["loss"] == pytest.approx(exact, rel=1e-6) and got["accuracy"] == pytest.approx(accuracy)
    assert abs(naive - exact) > 1e-3  # the batches really differ, so the test can tell the two apart


def test_evaluation_puts_dropout_off_and_restores_training_mode():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Dropout(0.5))
    batch = (torch.randn(50, 3), torch.randint(0, 4, (50,)))
    first, second = evaluate(model, [batch], classification_loss), evaluate(model, [batch], classification_loss)
    assert first == second and model.training


def test_weighted_mean_refuses_no_data():
    with pytest.raises(ValueError, match="validation data is empty"):
        WeightedMean().means()


def test_lm_loss_scores_the_next_token():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=1, n_embd=8)).eval()
    tokens = torch.randint(0, 11, (300,))
    x, y = random_windows(tokens, 8, 4)(0)
    loss, metrics = lm_loss(model, (x, y))
    logits, _ = model(x)  # (B, T, V)
    against_next = F.cross_entropy(logits.reshape(-1, 11), y.reshape(-1)).item()
    against_input = F.cross_entropy(logits.reshape(-1, 11), x.reshape(-1)).item()
    assert metrics == {} and loss.item() == pytest.approx(against_next, rel=1e-6)
    assert not math.isclose(against_next, against_input, rel_tol=1e-3)


def test_random_windows_are_shifted_and_deterministic():
    tokens = torch.arange(100)
    batch_fn = random_windows(tokens, block_size=8, batch_size=4, seed=1)
    x, y = batch_fn(7)
    assert x.shape == (4, 8) and torch.equal(y, x + 1)
    assert torch.equal(batch_fn(7)[0], x) and not torch.equal(batch_fn(8)[0], x)
    assert [b[0].tolist() for b in fixed_windows(tokens, 8, 4, 2)] == [b[0].tolist() for b in fixed_windows(
        tokens, 8, 4, 2)]


def test_epoch_batches_cover_each_example_once_per_epoch():
    x, y = torch.arange(10).float()[:, None], torch.arange(10)
    batch_fn = epoch_batches(x, y, 4, seed=0)
    epoch = [batch_fn(i) for i in range(3)]  # 4 + 4 + 2
    assert [len(b[1]) for b in epoch] == [4, 4, 2]
    assert sorted(torch.cat([b[1] for b in epoch]).tolist()) == list(range(10))
    assert torch.equal(batch_fn(1)[1], epoch[1][1])  # a pure function of the index
    assert not torch.equal(torch.cat([batch_fn(i)[1] for i in range(3, 6)]), torch.cat([b[1] for b in epoch]))


def test_batch_count_and_to_device():
    batch = (torch.zeros(4, 6, dtype=torch.long), torch.zeros(4, 6, dtype=torch.long))
    assert batch_count(batch, "examples") == 4 and batch_count(batch, "tokens") == 24
    with pytest.raises(ValueError, match="units"):
        batch_count(batch, "words")
    moved = to_device(batch, "cpu")
    assert isinstance(moved, tuple) and moved[0].device.type == "cpu"


def test_tf_data_windows_equal_the_torch_windows():
    from utils.datasets import tf_window_dataset, torch_window_loader, window_arrays

    ids = np.arange(200) % 37
    order = np.random.default_rng(0).permutation(len(ids) - 16)
    torch_batches = [tuple(t.numpy() for t in b) for b in torch_window_loader(ids, 16, 8, order=order)]
    tf_batches = [tuple(t.numpy() for t in b) for b in tf_window_dataset(ids, 16, 8, order=order)]
    assert len(torch_batches) == len(tf_batches) == 23  # 184 windows: 23 batches, the last of 0 + 8
    np.testing.assert_array_equal(torch_batches[0][0][0], ids[order[0]:order[0] + 16])
    for (tx, ty), (fx, fy) in zip(torch_batches, tf_batches, strict=True):
        np.testing.assert_array_equal(tx, fx)
        np.testing.assert_array_equal(ty, fy)
        np.testing.assert_array_equal(tx[:, 1:], ty[:, :-1])  # y is x shifted by one
    x, y = window_arrays(ids, 16, [0, 5])
    np.testing.assert_array_equal(x[1], ids[5:21])
    np.testing.assert_array_equal(y[1], ids[6:22])
