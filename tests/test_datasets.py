"""Data helpers: the hash-checked corpus, contiguous splits, sliding windows, standardisation, augmentation."""

from __future__ import annotations

import numpy as np
import pytest

from utils import datasets
from utils.datasets import (
    SlidingWindowDataset,
    Standardizer,
    augment_images,
    inject_missing,
    load_tinyshakespeare,
    train_val_split_text,
    window_arrays,
)
from utils.integrity import IntegrityError, sha256_file


def test_tinyshakespeare_loads_and_is_checked() -> None:
    text = load_tinyshakespeare()
    assert len(text) == 1_115_394
    assert len(set(text)) == 65
    assert text.startswith("First Citizen:\nBefore we proceed")


def test_tinyshakespeare_hash_mismatch(tmp_path) -> None:
    bad = tmp_path / "tinyshakespeare.txt"
    bad.write_text("First Citizen:\nnot the real file\n")
    with pytest.raises(IntegrityError) as info:
        load_tinyshakespeare(bad)
    message = str(info.value)
    assert str(bad) in message and datasets.TINYSHAKESPEARE_SHA256 in message
    assert sha256_file(bad) in message and "git checkout" in message
    with pytest.raises(FileNotFoundError):
        load_tinyshakespeare(tmp_path / "missing.txt")


def test_split_is_contiguous_without_overlap() -> None:
    text = "abcdefghij" * 10
    train, val = train_val_split_text(text, 0.1)
    assert (len(train), len(val)) == (90, 10) and train + val == text
    ids = np.arange(1001)
    train_ids, val_ids = train_val_split_text(ids, 0.25)
    assert len(train_ids) == 750 and train_ids[-1] + 1 == val_ids[0]
    with pytest.raises(ValueError):
        train_val_split_text(text, 1.0)


def test_clean_text_idempotent() -> None:
    raw = "a  \r\nb\t c\r\n\r\n\r\n\r\nd"
    clean = datasets.clean_text(raw)
    assert clean == "a\nb  c\n\nd"
    assert datasets.clean_text(clean) == clean


def test_sliding_window_dataset_shift_by_one() -> None:
    import torch

    ids = list(range(100, 120))  # 20 ids
    ds = SlidingWindowDataset(ids, block_size=4)
    assert len(ds) == 16  # windows starting at 0..15: the target of the last one ends at id 19
    x, y = ds[0]
    assert x.dtype == torch.long and x.shape == (4,) and y.shape == (4,)
    assert x.tolist() == [100, 101, 102, 103] and y.tolist() == [101, 102, 103, 104]
    x, y = ds[len(ds) - 1]
    assert y.tolist()[-1] == 119
    assert ds[-1][0].tolist() == x.tolist()
    with pytest.raises(IndexError):
        ds[16]
    strided = SlidingWindowDataset(ids, block_size=4, stride=4)
    assert len(strided) == 4 and strided[1][0].tolist() == [104, 105, 106, 107]


def test_window_arrays_and_loader_agree() -> None:
    ids = np.random.default_rng(0).integers(0, 50, size=200)
    order = np.random.default_rng(1).permutation(200 - 8)
    loader = datasets.torch_window_loader(ids, block_size=8, batch_size=16, order=order)
    x, y = next(iter(loader))
    ax, ay = window_arrays(ids, 8, order[:16])
    assert x.shape == (16, 8) and np.array_equal(x.numpy(), ax) and np.array_equal(y.numpy(), ay)
    assert np.array_equal(ax[:, 1:], ay[:, :-1])
    assert sum(len(bx) for bx, _ in loader) == 192


def test_standardizer_uses_fit_statistics_and_imputes() -> None:
    rng = np.random.default_rng(0)
    train = rng.normal(5.0, 2.0, size=(500, 3))
    test = rng.normal(6.0, 2.0, size=(100, 3))
    scaler = Standardizer().fit(train)
    z = scaler.transform(train)
    assert np.allclose(z.mean(0), 0, atol=1e-12) and np.allclose(z.std(0), 1)
    assert np.all(scaler.transform(test).mean(0) > 0.2)  # test statistics were not used
    from sklearn.preprocessing import StandardScaler

    assert np.allclose(scaler.transform(test), StandardScaler().fit(train).transform(test))
    holes = inject_missing(train, 0.1, seed=0)
    assert 0.08 < np.isnan(holes).mean() < 0.12
    filled = Standardizer().fit(holes).transform(holes)
    assert not np.isnan(filled).any()
    assert np.allclose(filled[np.isnan(holes)], 0.0)
    constant = Standardizer().fit(np.ones((4, 2)))
    assert np.all(constant.scale_ == 1)
    assert np.allclose(scaler.inverse_transform(z), train)



def test_standardizer_with_missing_values_equals_scikit_learn() -> None:
    """With NaNs: the same statistics as StandardScaler (which also ignores NaNs when fitting), and NaN -> the
    training mean, as SimpleImputer(strategy="mean") then StandardScaler would give (chapter 1 relies on it)."""
    from sklearn.impute import SimpleImputer
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(1)
    train = inject_missing(rng.normal(3.0, [1.0, 10.0, 0.1], size=(300, 3)), 0.1, seed=1)
    test = inject_missing(rng.normal(3.0, [1.0, 10.0, 0.1], size=(50, 3)), 0.1, seed=2)
    ours = Standardizer().fit(train)
    theirs = StandardScaler().fit(train)
    np.testing.assert_allclose(ours.mean_, theirs.mean_, rtol=1e-12)
    np.testing.assert_allclose(ours.scale_, theirs.scale_, rtol=1e-12)
    mean_filled = SimpleImputer(strategy="mean").fit(train).transform(test)
    np.testing.assert_allclose(ours.transform(test), theirs.transform(mean_filled), atol=1e-12)

def test_augment_images_shape_range_and_seed() -> None:
    images = np.zeros((5, 8, 8))
    images[:, 2:6, 3:5] = 1.0
    a = augment_images(images, seed=0)
    b = augment_images(images, seed=0)
    assert a.shape == (5, 8, 8) and a.dtype == np.float32
    assert np.array_equal(a, b) and 0 <= a.min() and a.max() <= 1
    assert not np.allclose(a, images)
    plain = augment_images(images, seed=0, max_shift=0, max_rotation_deg=0, noise_std=0)
    assert np.allclose(plain, images, atol=1e-6)  # no transformation = identity
