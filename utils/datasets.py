"""The book's data, offline: Tiny Shakespeare (shipped with ``utils``, hash-checked), and the preprocessing
steps chapter 1 teaches, as functions the later chapters reuse.

Text
    ``load_tinyshakespeare`` (1,115,394 characters, SHA-256 verified on every load), ``clean_text``,
    ``train_val_split_text`` (contiguous: the last ``val_fraction`` is validation), ``SlidingWindowDataset``
    (next-token examples ``x = ids[i:i+T]``, ``y = ids[i+1:i+T+1]``), and the same windows batched by torch
    (``torch_window_loader``) and by ``tf.data`` (``tf_window_dataset``) in an order both share.
    ``shakespeare_data``: the 90 % / 10 % split as token tensors, with a character tokenizer fitted on the
    training part only: what the book's GPT trains on.
    ``load_kjv``: the King James Bible (31,103 verses, SHA-256 verified), with each verse's book and its
    division (``KJV_DIVISIONS``: Law, History, Wisdom, Prophets, Gospels, Epistles...), for fine-tuning.
Tabular
    ``inject_missing`` (missing completely at random) and ``Standardizer`` (per-feature mean and standard
    deviation fitted on the training split, NaN-aware, missing values imputed with the training mean).
Images
    ``load_digits_pixels``: scikit-learn's 1,797 handwritten 8x8 digits (shipped with scikit-learn), the one
    loader every chapter uses; ``digits_split``: the shuffled 1,200 / 597 split of chapters 4 and 7 and their
    labs, as tensors. ``augment_images`` (random shifts, small rotations and Gaussian noise for small grey
    images such as these digits).

Nothing here imports torch or TensorFlow at import time; the functions that need one import it when called.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from utils.integrity import check_sha256

#: The folder of the data files shipped with ``utils`` (package data).
DATA_DIR = Path(__file__).resolve().parent / "data"
#: SHA-256 of ``utils/data/tinyshakespeare.txt`` (Karpathy's char-rnn file, 1,115,394 bytes).
TINYSHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"


def load_tinyshakespeare(path: str | Path | None = None, expected_sha256: str = TINYSHAKESPEARE_SHA256) -> str:
    """The Tiny Shakespeare corpus as one string (1,115,394 characters, 65 distinct, 40,000 lines).

    The file's SHA-256 is checked first; a mismatch raises ``utils.integrity.IntegrityError`` naming the file,
    the expected and the actual hash. ``path`` defaults to the copy shipped in ``utils/data``.
    """
    path = Path(path) if path is not None else DATA_DIR / "tinyshakespeare.txt"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist. It ships with the `utils` package (utils/data/); "
                                "reinstall the book's package (`pip install -e .`) or restore the file with git")
    check_sha256(path, expected_sha256, "An editor changing line endings does this, for example. Restore it "
                 "with `git checkout -- utils/data/tinyshakespeare.txt` or reinstall the package; every number "
                 "in the book depends on the exact bytes.")
    return path.read_text(encoding="utf-8")


def shakespeare_data(val_fraction: float = 0.1):
    """``(tokenizer, train_ids, val_ids)``: the contiguous 90 % / 10 % split of Tiny Shakespeare as 1-D int64
    tensors, with a ``CharTokenizer`` fitted on the *training* split only (split before you fit)."""
    import torch

    from utils.tokenizers import CharTokenizer

    train_text, val_text = train_val_split_text(load_tinyshakespeare(), val_fraction)
    tokenizer = CharTokenizer.fit(train_text)
    return (tokenizer, torch.tensor(tokenizer.encode(train_text), dtype=torch.long),
            torch.tensor(tokenizer.encode(val_text), dtype=torch.long))


def clean_text(text: str) -> str:
    """Normalise text for a character model: Unicode NFC, ``\\r\\n``/``\\r`` -> ``\\n``, tabs -> space,
    trailing spaces removed from each line, runs of 3+ newlines -> 2. Idempotent: clean(clean(t)) == clean(t)."""
    text = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n").replace("\t", " ")
    text = re.sub(r"[ ]+\n", "\n", text)
    return re.sub(r"\n{3,}", "\n\n", text)


Seq = TypeVar("Seq", str, list, np.ndarray)  # anything sliceable: a text or a sequence of token ids


def train_val_split_text(text: Seq, val_fraction: float = 0.1) -> tuple[Seq, Seq]:
    """Split a text (or a sequence of token ids) into ``(train, val)``: the first ``1 - val_fraction`` and the
    last ``val_fraction``, contiguous, no overlap (``len(train) = floor(n * (1 - val_fraction))``).

    Contiguous on purpose: a random split of overlapping windows would put the same characters in both sets.
    """
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    cut = math.floor(len(text) * (1 - val_fraction))
    return text[:cut], text[cut:]


class SlidingWindowDataset:
    """Next-token examples from a 1-D sequence of token ids: a map-style dataset for ``torch.utils.data``.

    ids: (N,) integers. Example ``i`` (``0 <= i < len``) is ``x = ids[s : s+T]`` and ``y = ids[s+1 : s+T+1]``
    with ``s = i * stride`` and ``T = block_size``, both ``(T,)`` int64 torch tensors: ``y[t]`` is the token
    that follows ``x[t]``. ``len = (N - T - 1) // stride + 1`` (every window whose target fits).
    It implements ``__len__`` and ``__getitem__``, the whole protocol ``DataLoader`` needs; torch is imported
    when the dataset is created.
    """

    def __init__(self, ids: Sequence[int] | np.ndarray | Any, block_size: int, stride: int = 1) -> None:
        import torch

        if block_size < 1 or stride < 1:
            raise ValueError(f"block_size and stride must be >= 1, got {block_size}, {stride}")
        self.ids = torch.as_tensor(np.asarray(ids), dtype=torch.long).reshape(-1)  # (N,)
        if len(self.ids) < block_size + 1:
            raise ValueError(f"{len(self.ids)} ids are too few for one window of {block_size} + 1 (the target)")
        self.block_size = block_size
        self.stride = stride

    def __len__(self) -> int:
        return (len(self.ids) - self.block_size - 1) // self.stride + 1

    def __getitem__(self, index: int):
        if not -len(self) <= index < len(self):
            raise IndexError(f"window {index} out of range for {len(self)} windows")
        start = (index % len(self)) * self.stride
        chunk = self.ids[start:start + self.block_size + 1]  # (T + 1,)
        return chunk[:-1], chunk[1:]  # x (T,), y (T,)


def window_arrays(ids: Sequence[int] | np.ndarray, block_size: int, starts: Sequence[int] | np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray]:
    """NumPy windows at given start offsets: ``x[b] = ids[s_b : s_b+T]``, ``y[b] = ids[s_b+1 : s_b+T+1]``.
    Returns x, y of shape (len(starts), T), int64."""
    ids = np.asarray(ids, dtype=np.int64)
    offsets = np.asarray(starts, dtype=np.int64)[:, None] + np.arange(block_size)[None, :]  # (B, T)
    return ids[offsets], ids[offsets + 1]


def torch_window_loader(ids: Sequence[int] | np.ndarray, block_size: int, batch_size: int,
                        order: Sequence[int] | np.ndarray | None = None):
    """A ``torch.utils.data.DataLoader`` over ``SlidingWindowDataset(ids, block_size)`` that visits the
    windows in ``order`` (default: 0, 1, 2, ...) and yields ``x, y`` batches of shape (B, T), int64; the last
    batch may be smaller. Pass a permutation from your own seeded generator to shuffle reproducibly."""
    from torch.utils.data import DataLoader

    dataset = SlidingWindowDataset(ids, block_size)
    sampler = list(range(len(dataset))) if order is None else [int(i) for i in order]
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, drop_last=False)


def tf_window_dataset(ids: Sequence[int] | np.ndarray, block_size: int, batch_size: int,
                      order: Sequence[int] | np.ndarray | None = None):
    """The same batches as ``torch_window_loader`` as a ``tf.data.Dataset`` of ``(x, y)`` int64 tensors of
    shape (B, T): a dataset of window starts, batched, then each batch gathered from the id tensor."""
    import tensorflow as tf

    ids = np.asarray(ids, dtype=np.int64)
    count = len(ids) - block_size  # windows whose target fits (stride 1)
    starts = np.arange(count, dtype=np.int64) if order is None else np.asarray(order, dtype=np.int64)
    table = tf.constant(ids)  # (N,)
    positions = tf.range(block_size, dtype=tf.int64)  # (T,)

    def gather(batch_starts):  # (B,) -> x (B, T), y (B, T)
        offsets = batch_starts[:, None] + positions[None, :]
        return tf.gather(table, offsets), tf.gather(table, offsets + 1)

    return tf.data.Dataset.from_tensor_slices(starts).batch(batch_size).map(gather)


# ------------------------------------------------------------------------------------------------ tabular


def inject_missing(x: np.ndarray, fraction: float, seed: int = 0) -> np.ndarray:
    """A float copy of ``x`` (n, d) with ``fraction`` of its entries, chosen uniformly at random (missing
    completely at random), set to NaN."""
    if not 0 <= fraction < 1:
        raise ValueError(f"fraction must be in [0, 1), got {fraction}")
    out = np.array(x, dtype=np.float64, copy=True)
    mask = np.random.default_rng(seed).random(out.shape) < fraction
    out[mask] = np.nan
    return out


class Standardizer:
    """Per-feature standardisation ``(x - mean) / std`` with statistics fitted on one split (the training one).

    ``fit(x)``: x (n, d); NaNs are ignored, ``std`` is the population standard deviation (ddof=0, as
    scikit-learn's ``StandardScaler``); a constant feature gets std 1. ``transform(x)`` -> (n, d) float64,
    with missing values (NaN) replaced by 0, i.e. imputed with the *training* mean. Attributes after ``fit``:
    ``mean_`` (d,), ``scale_`` (d,), ``n_samples_`` (rows it was fitted on).
    """

    def __init__(self) -> None:
        self.mean_: np.ndarray | None = None
        self.scale_: np.ndarray | None = None
        self.n_samples_: int = 0

    def fit(self, x: np.ndarray) -> Standardizer:
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2:
            raise ValueError(f"expected a 2-D array (samples, features), got shape {x.shape}")
        self.mean_ = np.nanmean(x, axis=0)  # (d,)
        std = np.nanstd(x, axis=0)  # (d,)
        self.scale_ = np.where(std > 0, std, 1.0)
        self.n_samples_ = x.shape[0]
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        if self.mean_ is None or self.scale_ is None:
            raise RuntimeError("call fit(x_train) before transform")
        z = (np.asarray(x, dtype=np.float64) - self.mean_) / self.scale_  # (n, d)
        return np.nan_to_num(z, nan=0.0)

    def fit_transform(self, x: np.ndarray) -> np.ndarray:
        return self.fit(x).transform(x)

    def inverse_transform(self, z: np.ndarray) -> np.ndarray:
        if self.mean_ is None or self.scale_ is None:
            raise RuntimeError("call fit(x_train) before inverse_transform")
        return np.asarray(z, dtype=np.float64) * self.scale_ + self.mean_


# ------------------------------------------------------------------------------------------------ images


#: The digits' intensities run from 0 to this (4-bit grey levels).
DIGITS_MAX = 16


def load_digits_pixels(scaled: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1,797 handwritten digits: pixels (1797, 64) float32, divided by ``DIGITS_MAX`` into
    [0, 1] when ``scaled`` (a fixed constant: nothing is fitted, nothing can leak), else the raw 0..16; and
    the digits (1797,) int64. ``pixels.reshape(-1, 8, 8)`` gives the images."""
    from sklearn.datasets import load_digits

    pixels, digits = load_digits(return_X_y=True)
    pixels = pixels.astype(np.float32)
    return (pixels / DIGITS_MAX if scaled else pixels), digits.astype(np.int64)


def digits_split(seed: int = 0):
    """The digits scaled to [0, 1], shuffled from ``seed``: the first 1,200 for training, the rest (597) for
    validation, as tensors: x_train (1200, 64), y_train (1200,), x_val (597, 64), y_val (597,)."""
    import torch

    pixels, digits = load_digits_pixels()
    x, y = torch.from_numpy(pixels), torch.from_numpy(digits)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    x, y = x[order], y[order]  # (1797, 64), (1797,)
    return x[:1200], y[:1200], x[1200:], y[1200:]


def augment_images(images: np.ndarray, seed: int = 0, max_shift: float = 1.0, max_rotation_deg: float = 12.0,
                   noise_std: float = 0.05) -> np.ndarray:
    """Randomly shifted, rotated and noised copies of grey images.

    images: (N, H, W) with values in [0, 1]. Each image gets its own shift (uniform in ``+-max_shift``
    pixels, each axis), rotation about its centre (uniform in ``+-max_rotation_deg`` degrees), bilinear
    interpolation with zero fill, then Gaussian noise of ``noise_std``; the result is clipped to [0, 1].
    Returns (N, H, W) float32. Labels are unchanged: these transformations do not change which digit it is.
    """
    from scipy import ndimage

    images = np.asarray(images, dtype=np.float64)
    if images.ndim != 3:
        raise ValueError(f"expected (N, H, W) images, got shape {images.shape}")
    rng = np.random.default_rng(seed)
    n, h, w = images.shape
    centre = np.array([(h - 1) / 2, (w - 1) / 2])
    out = np.empty_like(images)
    for i in range(n):
        angle = np.deg2rad(rng.uniform(-max_rotation_deg, max_rotation_deg))
        shift = rng.uniform(-max_shift, max_shift, size=2)
        rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        # affine_transform maps output coordinates o to input coordinates R o + offset
        offset = centre - rotation @ (centre + shift)
        out[i] = ndimage.affine_transform(images[i], rotation, offset=offset, order=1, mode="constant", cval=0.0)
    out += rng.normal(scale=noise_std, size=out.shape)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


# ------------------------------------------------------------------------------------------------ the Bible

#: SHA-256 of ``utils/data/kjv.jsonl.gz`` (the gzip file's bytes; 1,526,176 bytes, 31,103 verses).
KJV_SHA256 = "173cd32aeb705f0d120be3bbb9cbbdca484243fd047696b17a7bced680debb1b"

#: The 66 books in canonical order, grouped into the ten divisions of the common Protestant scheme: the Old
#: Testament's Law (Pentateuch), History,
#: Wisdom (poetry), Major and Minor Prophets; the New Testament's Gospels, Acts (the church's history),
#: Pauline Epistles (Romans-Philemon), General Epistles (Hebrews-Jude: Hebrews counts here, its author
#: unnamed) and Revelation (prophecy). The one table of the scheme; ``load_kjv`` labels verses with it.
KJV_DIVISIONS: dict[str, tuple[str, ...]] = {
    "Law": ("Genesis", "Exodus", "Leviticus", "Numbers", "Deuteronomy"),
    "History": ("Joshua", "Judges", "Ruth", "1 Samuel", "2 Samuel", "1 Kings", "2 Kings", "1 Chronicles",
                "2 Chronicles", "Ezra", "Nehemiah", "Esther"),
    "Wisdom": ("Job", "Psalms", "Proverbs", "Ecclesiastes", "Song of Solomon"),
    "Major Prophets": ("Isaiah", "Jeremiah", "Lamentations", "Ezekiel", "Daniel"),
    "Minor Prophets": ("Hosea", "Joel", "Amos", "Obadiah", "Jonah", "Micah", "Nahum", "Habakkuk", "Zephaniah",
                       "Haggai", "Zechariah", "Malachi"),
    "Gospels": ("Matthew", "Mark", "Luke", "John"),
    "Acts": ("Acts",),
    "Pauline Epistles": ("Romans", "1 Corinthians", "2 Corinthians", "Galatians", "Ephesians", "Philippians",
                         "Colossians", "1 Thessalonians", "2 Thessalonians", "1 Timothy", "2 Timothy", "Titus",
                         "Philemon"),
    "General Epistles": ("Hebrews", "James", "1 Peter", "2 Peter", "1 John", "2 John", "3 John", "Jude"),
    "Revelation": ("Revelation",),
}


def kjv_division(book: str) -> str:
    """The division (a key of ``KJV_DIVISIONS``) of one of the 66 books, spelled as in the KJV file."""
    for division, books in KJV_DIVISIONS.items():
        if book in books:
            return division
    raise KeyError(f"{book!r} is not one of the 66 books of KJV_DIVISIONS (spelled as 'Song of Solomon', "
                   "'1 Samuel', ...)")


def load_kjv(path: str | Path | None = None, expected_sha256: str = KJV_SHA256):
    """The King James Bible (1611), one verse per row: a pandas DataFrame of 31,103 rows in canonical
    order with columns ``citation`` ("Genesis 1:1"), ``text``, ``book``, ``chapter`` and ``verse`` (int64),
    and ``division`` (``kjv_division(book)``, one of the 10 keys of ``KJV_DIVISIONS``).

    The gzip file's SHA-256 is checked before it is read (``utils.integrity.IntegrityError`` on a mismatch).
    ``path`` defaults to the copy shipped in ``utils/data``.
    """
    import gzip
    import json

    import pandas as pd

    path = Path(path) if path is not None else DATA_DIR / "kjv.jsonl.gz"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist. It ships with the `utils` package (utils/data/); "
                                "reinstall the book's package (`pip install -e .`) or restore the file with git")
    check_sha256(path, expected_sha256, "Restore it with `git checkout -- utils/data/kjv.jsonl.gz` or "
                 "reinstall the package; the fine-tuning chapter's numbers depend on the exact verses.")
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        verses = pd.DataFrame([json.loads(line) for line in handle])
    verses["division"] = verses["book"].map(kjv_division)
    return verses[["citation", "text", "book", "chapter", "verse", "division"]]
