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

from utils.checks import CheckFailed, call, checker, passed, unchanged


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


#: float32's rounding unit: a float32 answer rounds x, the mean and the std at about this relative size.
_EPS32 = float(np.finfo(np.float32).eps)


def _near(z: np.ndarray, expected: np.ndarray, x: np.ndarray, x_train: np.ndarray) -> bool:
    """``z`` equals ``expected`` to float32 precision. Element by element, a float32 answer is off by a few
    roundings of the numbers it subtracts, divided by the std: up to about ``3 eps32 (|x| + |mean|) / std``
    (measured), which is far above 1e-6 near z = 0 when |x| >> std (feature 2: 0.5 +- 0.1). The tolerance
    is 16 such roundings plus 1e-5 relative: still orders of magnitude below every mistake's difference."""
    mean, std = x_train.mean(axis=0), x_train.std(axis=0)
    rounding = _EPS32 * (np.abs(x) + np.abs(mean)) / np.where(std > 0, std, 1.0)
    return bool(np.all(np.abs(z - expected) <= 1e-5 * np.abs(expected) + 16 * rounding))


def _transformed(scaler: Any, x: np.ndarray, what: str) -> np.ndarray:
    """``scaler.transform(x)`` as a float64 array, with ``x`` checked for edits made in place."""
    original = x.copy()
    result = call(scaler.transform, x)
    if not unchanged(x, original):
        raise CheckFailed(f"transform changed the array it was given ({what}): work on a new array "
                          "(`x - mean` makes one; `x -= mean` overwrites the caller's data)")
    if result is None:
        raise CheckFailed("transform returned None: did you forget the `return`?")
    z = np.asarray(result.detach() if hasattr(result, "detach") else result, dtype=np.float64)
    if z.shape != x.shape:
        raise CheckFailed(f"transform returned shape {z.shape} for input {x.shape} ({what}): return one "
                          "standardised value per input value")
    return z


def _fitted(scaler_class: Callable[[], Any], x: np.ndarray) -> Any:
    """A new scaler fitted on ``x``; ``fit`` must leave ``x`` unchanged and return the scaler itself."""
    scaler = call(scaler_class)
    original = x.copy()
    returned = call(scaler.fit, x)
    if not unchanged(x, original):
        raise CheckFailed("fit changed the array it was given: compute the statistics without modifying x "
                          "(no `x -= ...` or `x /= ...`)")
    if returned is not scaler:
        raise CheckFailed(f"fit returned {type(returned).__name__}, not the scaler: end fit with `return self`, "
                          "so that FeatureScaler().fit(x_train).transform(x) works")
    return scaler


def _scaler_mistake(z_test: np.ndarray, x_train: np.ndarray, x_test: np.ndarray) -> str | None:
    """The classic mistake that ``z_test`` reproduces, or None."""
    mean, std = x_train.mean(axis=0), x_train.std(axis=0)
    both = np.concatenate([x_train, x_test])
    candidates = [
        (_standardise(x_test, x_test.mean(axis=0), x_test.std(axis=0)),
         "statistics from the test split: transform recomputes mean and std from the data it is given. "
         "Compute them once in fit (from the training split), store them on self and reuse them in transform"),
        (_standardise(x_test, mean, x_train.std(axis=0, ddof=1)),
         "the standard deviation uses ddof=1 (the sample std, torch.std's default); standardisation as in "
         "scikit-learn uses the population std, ddof=0 (numpy's default)"),
        (_standardise(x_test, x_train.mean(), x_train.std()),
         "one mean and one std for the whole array: the statistics must be per feature (one per column, "
         "axis=0)"),
        (x_test - mean, "centred but not scaled: divide by the per-feature standard deviation too"),
        (x_test / np.where(std > 0, std, 1.0), "scaled but not centred: subtract the per-feature mean first"),
        (_standardise(x_test, both.mean(axis=0), both.std(axis=0)),
         "statistics from training and test rows together: fit on the training split only"),
        ((x_test - x_test.mean(axis=1, keepdims=True)) / x_test.std(axis=1, keepdims=True),
         "statistics per row (axis=1): a feature's statistics run down its column (axis=0)"),
    ]
    for wrong, message in candidates:
        if _near(z_test, wrong, x_test, x_train):
            return message
    return None


def _scaler_symptom(z_train: np.ndarray, x_train: np.ndarray) -> str | None:
    """What the standardised training split shows by itself, whatever the scaler computed: every feature
    that varies must come out with mean 0 and (population) standard deviation 1."""
    varying = x_train.std(axis=0) > 0
    means, stds = z_train[:, varying].mean(axis=0), z_train[:, varying].std(axis=0)
    if np.abs(means).max() > 1e-3:
        return (f"transform(x_train) must have mean 0 in every feature, and yours has means "
                f"{np.round(means, 3).tolist()}: subtract the mean of each training column (not a median, a "
                "minimum or a mean over some of the rows)")
    if np.abs(stds - 1).max() > 1e-3:
        return (f"transform(x_train) must have standard deviation 1 in every feature that varies, and yours "
                f"has {np.round(stds, 3).tolist()}: divide by each column's standard deviation (the square root "
                "of its variance, over all training rows)")
    return None


@checker("lab01.scaler")
def check_scaler(scaler_class: Callable[[], Any]) -> None:
    """``scaler_class()`` has ``fit(x_train)`` (learns per-feature mean and population std from the training
    split only, std 1 for a constant feature; returns the scaler) and ``transform(x)`` ->
    ``(x - mean) / std``; neither changes its input. Answers computed in float32 are accepted: the
    tolerance is float32's rounding of the inputs (``_near``)."""
    x_train, x_test = _scaler_data()
    scaler = _fitted(scaler_class, x_train)
    z_test = _transformed(scaler, x_test, "the test split")
    z_train = _transformed(scaler, x_train, "the training split")
    mean, std = x_train.mean(axis=0), x_train.std(axis=0)
    if not np.all(np.isfinite(z_train)) or not np.all(np.isfinite(z_test)):
        bad = sorted(set(np.argwhere(~np.isfinite(np.concatenate([z_train, z_test])))[:, 1].tolist()))
        raise CheckFailed(f"non-finite values (NaN or inf) in feature(s) {bad}: feature 4 is constant in the "
                          "training split, so its std is 0. Use a std of 1 for such a feature")
    constant = np.abs(z_test[:, 4]).max()
    if constant > 1e3:
        raise CheckFailed(f"feature 4 is constant in the training split and its test values become as large "
                          f"as {constant:.3g}: a tiny epsilon added to a zero std still divides by almost 0. "
                          "Replace a zero std by 1 (scikit-learn's rule)")
    expected = _standardise(x_test, mean, std)
    if not _near(z_test, expected, x_test, x_train):
        message = _scaler_mistake(z_test, x_train, x_test)
        if message:
            raise CheckFailed(message)
        message = _scaler_symptom(z_train, x_train)
        if message:
            raise CheckFailed(message)
        worst = np.unravel_index(np.abs(z_test - expected).argmax(), z_test.shape)
        raise CheckFailed(f"transform(x_test) differs from (x_test - mean_train) / std_train: at row {worst[0]}, "
                          f"feature {worst[1]} you return {z_test[worst]:.4f}, expected {expected[worst]:.4f}")
    if not _near(z_train, _standardise(x_train, mean, std), x_train, x_train):
        raise CheckFailed("transform(x_test) is right but transform(x_train) is not: transform must not "
                          "depend on which split it is called with")
    _check_refit(scaler_class, scaler, x_train, x_test)
    passed("lab01.scaler")


def _check_refit(scaler_class: Callable[[], Any], first: Any, x_train: np.ndarray, x_test: np.ndarray) -> None:
    """A second scaler fitted on other data must not change the first; refitting must replace statistics."""
    other = x_train * 3.0 + 7.0
    second = _fitted(scaler_class, other)
    expected = _standardise(x_test, x_train.mean(axis=0), x_train.std(axis=0))
    if not _near(_transformed(first, x_test, "the test split"), expected, x_test, x_train):
        raise CheckFailed("fitting a second scaler changed the first one: the statistics are shared between "
                          "instances (class attributes or globals). Store them on self")
    call(second.fit, x_train)
    if not _near(_transformed(second, x_test, "the test split"), expected, x_test, x_train):
        raise CheckFailed("calling fit a second time did not replace the statistics of the first fit: each fit "
                          "must compute them afresh from the data it is given")


def _check_length(length: Any, n_ids: int, block: int) -> None:
    n_expected = n_ids - block
    if not isinstance(length, int):
        raise CheckFailed(f"__len__ returned {type(length).__name__}; return an int")
    if length == n_expected + 1:
        raise CheckFailed(f"len is {length}, one too many: the last window's target would run past the end. A "
                          f"window starting at i needs ids up to i + block_size, so there are N - block_size = "
                          f"{n_expected} windows")
    if length == n_expected - 1:
        raise CheckFailed(f"len is {length}, one too few: the window starting at N - block_size - 1 (its "
                          f"target ends at the last id) is missing. There are N - block_size = {n_expected}")
    if length in (n_ids // block, (n_ids - 1) // block):
        raise CheckFailed(f"len is {length} for {n_ids} ids and block_size {block}: that counts non-overlapping "
                          f"chunks. The windows overlap, one per start position: N - block_size = {n_expected}")
    if length == n_ids:
        raise CheckFailed(f"len is {length}, the number of ids: a window needs block_size + 1 ids (its target "
                          f"runs one further), so only N - block_size = {n_expected} start positions have one")
    if length != n_expected:
        raise CheckFailed(f"len is {length} for {n_ids} ids and block_size {block}; expected N - block_size "
                          f"= {n_expected} (one window per start 0 .. N - block_size - 1)")


def _starts_at(window: Any, ids: Any, block: int) -> int | None:
    """The start j at which ``window`` equals ``ids[j : j + block]``, if there is one."""
    import torch

    for start in range(len(ids) - block + 1):
        if torch.equal(window, ids[start:start + block]):
            return start
    return None


def _check_item(item: Any, ids: Any, index: int, block: int) -> None:
    import torch

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
        raise CheckFailed(f"dataset[{index}] has shapes {tuple(x.shape)}, {tuple(y.shape)} for block_size "
                          f"{block}; both must be ({block},): use the block_size given to __init__")
    if not torch.equal(x, want_x):
        late = torch.equal(x, ids[index + 1:index + block + 1])
        start = _starts_at(x, ids, block)
        if start is not None and not late:
            raise CheckFailed(f"x of window {index} is ids[{start}:{start + block}]: window i must start at "
                              f"ids[i], and this one starts {start - index:+d} from it")
        if torch.equal(x, want_x.flip(0)):
            raise CheckFailed(f"x of window {index} holds the right ids in reverse order: keep their order, "
                              f"ids[{index}:{index + block}]")
        raise CheckFailed(f"x of window {index} is {x.tolist()}, expected ids[{index}:{index + block}] = "
                          f"{want_x.tolist()}" + (": window i must start at ids[i]" if late else ""))
    if torch.equal(y, x):
        raise CheckFailed("y equals x: the target must be the input shifted by one token "
                          "(y[t] is the token after x[t]: ids[i+1 : i+block_size+1])")
    if index + block + 2 <= len(ids) and torch.equal(y, ids[index + 2:index + block + 2]):
        raise CheckFailed("off by one: y is shifted by two tokens; y = ids[i+1 : i+block_size+1]")
    if index >= 1 and torch.equal(y, ids[index - 1:index + block - 1]):
        raise CheckFailed("y is shifted the wrong way (it holds the previous tokens); y = "
                          "ids[i+1 : i+block_size+1]")
    if block > 1 and torch.equal(y[:-1], want_y[:-1]) and y[-1] == x[0]:
        raise CheckFailed("the last target wraps around to the window's first token (as torch.roll does): the "
                          "target after x[-1] is the next id in the data, ids[i+block_size]")
    start = _starts_at(y, ids, block)
    if start is not None and start != index + 1:
        raise CheckFailed(f"y of window {index} is ids[{start}:{start + block}]: the target is the input shifted "
                          f"by exactly one token, ids[{index + 1}:{index + block + 1}]")
    if not torch.equal(y, want_y):
        raise CheckFailed(f"y of window {index} is {y.tolist()}, expected ids[{index + 1}:{index + block + 1}]"
                          f" = {want_y.tolist()}")


def _check_dataset(dataset: Any, ids: Any, block: int) -> None:
    from torch.utils.data import DataLoader

    n_expected = len(ids) - block
    _check_length(call(len, dataset), len(ids), block)
    for index in sorted({1, n_expected // 2, 0, n_expected - 1}):
        _check_item(call(dataset.__getitem__, index), ids, index, block)
    bx, by = next(iter(DataLoader(dataset, batch_size=4)))
    if bx.shape != (4, block) or not bx[:, 1:].equal(by[:, :-1]):
        raise CheckFailed(f"a DataLoader batch has shapes {tuple(bx.shape)}, {tuple(by.shape)}; expected "
                          f"(4, {block}) each, with y shifted by one")


@checker("lab01.windows")
def check_windows(dataset_class: Callable[..., Any]) -> None:
    """``dataset_class(ids, block_size)``: ``len = N - block_size``; item i is ``(ids[i:i+T], ids[i+1:i+T+1])``,
    two int64 tensors of shape (T,). Checked for two datasets at once (block sizes 5 and 3), which must not
    share their data, and for ``ids`` left unchanged."""
    import torch

    ids, other_ids = torch.arange(100, 140), torch.arange(300, 321)  # distinct ids: every shift is recognisable
    copies = ids.clone(), other_ids.clone()
    first = call(dataset_class, ids, 5)
    second = call(dataset_class, other_ids, 3)
    if not (unchanged(ids, copies[0]) and unchanged(other_ids, copies[1])):
        raise CheckFailed("the dataset changed the ids it was given: store them (or a converted copy) "
                          "without modifying them")
    _check_dataset(second, other_ids, 3)
    if call(len, first) == len(other_ids) - 3 or torch.equal(call(first.__getitem__, 0)[0][:3], other_ids[:3]):
        raise CheckFailed("creating a second dataset changed the first one: ids and block_size are shared "
                          "between instances (class attributes or globals). Store them on self in __init__")
    _check_dataset(first, ids, 5)
    passed("lab01.windows")
