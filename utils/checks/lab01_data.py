"""Checkers of lab 1 (``labs/lab01_data.ipynb``): a train-only feature scaler and a next-token window dataset.

Each checker runs the reader's code on small inputs chosen so that the classic mistakes give recognisably
different answers (test statistics, a sample standard deviation, a global instead of a per-feature
statistic; a target not shifted, shifted twice or backwards, one window too many or too few), and names the
mistake it recognises.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from utils.checks import CheckFailed, call, checker, passed


def _scaler_data() -> tuple[np.ndarray, np.ndarray]:
    """A training split (200, 5) and a test split (50, 5) from a shifted distribution; feature 4 of the
    training split is constant."""
    rng = np.random.default_rng(7)
    means, scales = np.array([10.0, -3.0, 0.5, 1000.0, 2.0]), np.array([2.0, 0.5, 0.1, 300.0, 1.0])
    train = rng.normal(means, scales, size=(200, 5))
    train[:, 4] = 2.0
    test = rng.normal(means + scales, scales * 1.5, size=(50, 5))
    return train, test


def _standardise(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    return (x - mean) / np.where(std > 0, std, 1.0)


@checker("lab01.scaler")
def check_scaler(scaler_class: Callable[[], Any]) -> None:
    """``scaler_class()`` has ``fit(x_train)`` (learns per-feature mean and population std from the training
    split only) and ``transform(x)`` -> ``(x - mean) / std``, with std 1 for a constant feature."""
    x_train, x_test = _scaler_data()
    train_copy, test_copy = x_train.copy(), x_test.copy()
    scaler = call(scaler_class)
    call(scaler.fit, x_train)
    z_test = np.asarray(call(scaler.transform, x_test), dtype=float)
    z_train = np.asarray(call(scaler.transform, x_train), dtype=float)
    if not (np.array_equal(x_train, train_copy) and np.array_equal(x_test, test_copy)):
        raise CheckFailed("fit or transform changed the array it was given: work on a copy "
                          "(`x - mean` makes a new array; `x -= mean` changes the caller's data)")
    if z_test.shape != x_test.shape:
        raise CheckFailed(f"transform returned shape {z_test.shape} for input {x_test.shape}: return one "
                          "standardised value per input value")
    if not np.all(np.isfinite(z_train)):
        bad = sorted(set(np.argwhere(~np.isfinite(z_train))[:, 1].tolist()))
        raise CheckFailed(f"non-finite values (NaN or inf) in feature(s) {bad}: feature 4 is constant in the "
                          "training split, so its std is 0. Divide by 1 for such a feature "
                          "(np.where(std > 0, std, 1.0))")
    mean, std = x_train.mean(axis=0), x_train.std(axis=0)
    expected = _standardise(x_test, mean, std)
    if np.allclose(z_test, expected, rtol=1e-6, atol=1e-8):
        if not np.allclose(z_train, _standardise(x_train, mean, std), rtol=1e-6, atol=1e-8):
            raise CheckFailed("transform(x_test) is right but transform(x_train) is not: transform must not "
                              "depend on which split it is called with")
        passed("lab01.scaler")
        return
    diagnoses = [
        (_standardise(x_test, x_test.mean(axis=0), x_test.std(axis=0)),
         "statistics from the test split: transform recomputes mean and std from the data it is given, so the "
         "test split gets mean 0 and std 1 exactly. Compute them once in fit (from the training split), store "
         "them (self.mean_, self.std_) and reuse them in transform"),
        (_standardise(x_test, mean, x_train.std(axis=0, ddof=1)),
         "the standard deviation uses ddof=1 (the sample std, torch.std's default); standardisation as in "
         "scikit-learn uses the population std: np.std(x, axis=0) (ddof=0)"),
        (_standardise(x_test, x_train.mean(), x_train.std()),
         "one mean and one std for the whole array: the statistics must be per feature (one per column), "
         "np.mean(x, axis=0)"),
        (x_test - mean, "centred but not scaled: divide by the per-feature standard deviation too"),
        (x_test / np.where(std > 0, std, 1.0), "scaled but not centred: subtract the per-feature mean first"),
        (_standardise(x_test, np.concatenate([x_train, x_test]).mean(axis=0),
                      np.concatenate([x_train, x_test]).std(axis=0)),
         "statistics from training and test rows together: fit on the training split only"),
    ]
    for wrong, message in diagnoses:
        if wrong.shape == z_test.shape and np.allclose(z_test, wrong, rtol=1e-6, atol=1e-8):
            raise CheckFailed(message)
    row_wise = (x_test - x_test.mean(axis=1, keepdims=True)) / x_test.std(axis=1, keepdims=True)
    if np.allclose(z_test, row_wise, rtol=1e-6, atol=1e-8):
        raise CheckFailed("statistics per row (axis=1): a feature's statistics run down its column (axis=0)")
    worst = np.unravel_index(np.abs(z_test - expected).argmax(), z_test.shape)
    raise CheckFailed(f"transform(x_test) differs from (x_test - mean_train) / std_train: at row {worst[0]}, "
                      f"feature {worst[1]} you return {z_test[worst]:.4f}, expected {expected[worst]:.4f}")


@checker("lab01.windows")
def check_windows(dataset_class: Callable[..., Any]) -> None:
    """``dataset_class(ids, block_size)``: ``len = N - block_size``; item i is ``(ids[i:i+T], ids[i+1:i+T+1])``,
    two int64 tensors of shape (T,)."""
    import torch

    ids = torch.arange(100, 140)  # 40 distinct ids, so every shift is recognisable
    block = 5
    dataset = call(dataset_class, ids, block)
    n_expected = len(ids) - block
    length = call(len, dataset)
    if length == n_expected + 1:
        raise CheckFailed(f"len is {length}, one too many: the last window's target would run past the end. A "
                          f"window starting at i needs ids up to i + block_size, so there are N - block_size = "
                          f"{n_expected} windows")
    if length == n_expected - 1:
        raise CheckFailed(f"len is {length}, one too few: the window starting at N - block_size - 1 (its "
                          f"target ends at the last id) is missing. There are N - block_size = {n_expected}")
    if length != n_expected:
        raise CheckFailed(f"len is {length} for {len(ids)} ids and block_size {block}; expected N - block_size "
                          f"= {n_expected} (one window per start 0 .. N - block_size - 1)")
    for index in (1, 17, 0, n_expected - 1):
        item = call(dataset.__getitem__, index)
        if not (isinstance(item, tuple | list) and len(item) == 2):
            raise CheckFailed(f"dataset[{index}] must be a pair (x, y), got {type(item).__name__}")
        x, y = item
        if not (isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor)):
            raise CheckFailed(f"dataset[{index}] must hold torch tensors (DataLoader stacks them into "
                              f"batches), got {type(x).__name__} and {type(y).__name__}")
        if x.dtype != torch.long or y.dtype != torch.long:
            raise CheckFailed(f"dtypes {x.dtype}, {y.dtype}: token ids must be int64 (torch.long), which "
                              "nn.Embedding and cross_entropy expect")
        want_x, want_y = ids[index:index + block], ids[index + 1:index + block + 1]
        if y.numel() == 1 and y.reshape(-1)[0].item() == ids[index + block].item():
            raise CheckFailed("y is a single next token: a GPT predicts the next token at every position, so y "
                              "is the whole window shifted by one, ids[i+1 : i+block_size+1]")
        if x.shape != (block,) or y.shape != (block,):
            raise CheckFailed(f"dataset[{index}] has shapes {tuple(x.shape)}, {tuple(y.shape)}; both must be "
                              f"({block},) = (block_size,)")
        if not torch.equal(x, want_x):
            raise CheckFailed(f"x of window {index} is {x.tolist()}, expected ids[{index}:{index + block}] = "
                              f"{want_x.tolist()}")
        if torch.equal(y, x):
            raise CheckFailed("y equals x: the target must be the input shifted by one token "
                              "(y[t] is the token after x[t]: ids[i+1 : i+block_size+1])")
        if index + block + 2 <= len(ids) and torch.equal(y, ids[index + 2:index + block + 2]):
            raise CheckFailed("off by one: y is shifted by two tokens; y = ids[i+1 : i+block_size+1]")
        if index >= 1 and torch.equal(y, ids[index - 1:index + block - 1]):
            raise CheckFailed("y is shifted the wrong way (it holds the previous tokens); y = "
                              "ids[i+1 : i+block_size+1]")
        if not torch.equal(y, want_y):
            raise CheckFailed(f"y of window {index} is {y.tolist()}, expected ids[{index + 1}:{index + block + 1}]"
                              f" = {want_y.tolist()}")
    from torch.utils.data import DataLoader

    bx, by = next(iter(DataLoader(dataset, batch_size=4)))
    if bx.shape != (4, block) or not torch.equal(bx[:, 1:], by[:, :-1]):
        raise CheckFailed(f"a DataLoader batch has shapes {tuple(bx.shape)}, {tuple(by.shape)}; expected "
                          f"(4, {block}) each, with y shifted by one")
    passed("lab01.windows")
