"""The checkers of labs 1 and 2 accept a right answer and name each classic mistake."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from utils.checks import CHECKERS, CheckFailed, all_checkers, lab01_data, lab02_model
from utils.datasets import SlidingWindowDataset

# ----------------------------------------------------------------------------------------- lab 1: scaler


def make_scaler(mean_fn, std_fn, test_stats: bool = False, in_place: bool = False):
    class Scaler:
        def fit(self, x):
            self.mean_, std = mean_fn(x), std_fn(x)
            self.std_ = np.where(std > 0, std, 1.0) if np.ndim(std) else (std or 1.0)
            return self

        def transform(self, x):
            if test_stats:
                self.fit(x)
            if in_place:
                x -= self.mean_
                x /= self.std_
                return x
            return (x - self.mean_) / self.std_

    return Scaler


RIGHT_SCALER = make_scaler(lambda x: x.mean(0), lambda x: x.std(0))


class NoConstantGuard:
    def fit(self, x):
        self.mean_, self.std_ = x.mean(0), x.std(0)
        return self

    def transform(self, x):
        with np.errstate(divide="ignore", invalid="ignore"):
            return (x - self.mean_) / self.std_


class NotImplementedScaler:
    def fit(self, x):
        raise NotImplementedError("fit me")

    def transform(self, x):
        raise NotImplementedError("transform me")


def test_scaler_accepts_right_answer(capsys):
    lab01_data.check_scaler(RIGHT_SCALER)
    assert "PASSED lab01.scaler" in capsys.readouterr().out


@pytest.mark.parametrize("scaler, words", [
    (make_scaler(lambda x: x.mean(0), lambda x: x.std(0), test_stats=True), "statistics from the test split"),
    (make_scaler(lambda x: x.mean(0), lambda x: x.std(0, ddof=1)), "ddof=1"),
    (make_scaler(lambda x: x.mean(), lambda x: x.std()), "per feature"),
    (make_scaler(lambda x: x.mean(0), lambda x: np.ones(x.shape[1])), "not scaled"),
    (make_scaler(lambda x: np.zeros(x.shape[1]), lambda x: x.std(0)), "not centred"),
    (make_scaler(lambda x: x.mean(0), lambda x: x.std(0), in_place=True), "changed the array"),
    (NoConstantGuard, "constant"),
    (NotImplementedScaler, "not implemented yet"),
])
def test_scaler_names_the_mistake(scaler, words):
    with pytest.raises(CheckFailed, match=words):
        lab01_data.check_scaler(scaler)


# ----------------------------------------------------------------------------------------- lab 1: windows


def make_windows(length_offset: int = 0, shift: int = 1, single_target: bool = False, dtype=torch.long):
    class Windows(torch.utils.data.Dataset):
        def __init__(self, ids, block_size):
            self.ids, self.t = torch.as_tensor(ids).to(dtype), block_size

        def __len__(self):
            return len(self.ids) - self.t + length_offset

        def __getitem__(self, i):
            x = self.ids[i:i + self.t]
            if single_target:
                return x, self.ids[i + self.t]
            return x, self.ids[i + shift:i + shift + self.t]

    return Windows


def test_windows_accepts_right_answers(capsys):
    lab01_data.check_windows(make_windows())
    lab01_data.check_windows(SlidingWindowDataset)
    assert capsys.readouterr().out.count("PASSED lab01.windows") == 2


@pytest.mark.parametrize("dataset, words", [
    (make_windows(shift=0), "y equals x"),
    (make_windows(shift=2), "off by one"),
    (make_windows(shift=-1), "wrong way"),
    (make_windows(length_offset=1), "one too many"),
    (make_windows(length_offset=-1), "one too few"),
    (make_windows(single_target=True), "single next token"),
    (make_windows(dtype=torch.int32), "int64"),
])
def test_windows_names_the_mistake(dataset, words):
    with pytest.raises(CheckFailed, match=words):
        lab01_data.check_windows(dataset)


# ----------------------------------------------------------------------------------------- lab 2: mask


@pytest.mark.parametrize("mask_fn, words", [
    (lambda T: torch.ones(T, T, dtype=torch.bool), "leaks the future"),
    (lambda T: ~torch.tril(torch.ones(T, T, dtype=torch.bool)), "inverted"),
    (lambda T: torch.triu(torch.ones(T, T, dtype=torch.bool)), "transposed"),
    (lambda T: torch.tril(torch.ones(T, T, dtype=torch.bool), diagonal=-1), "diagonal is masked"),
    (lambda T: torch.tril(torch.ones(T, T)), "bool"),
    (lambda T: torch.tril(torch.ones(T, T, dtype=torch.bool), diagonal=1), "leaks the future"),
    (lambda T: torch.tril(torch.ones(T, T + 1, dtype=torch.bool)), "shape"),
])
def test_causal_mask_names_the_mistake(mask_fn, words):
    with pytest.raises(CheckFailed, match=words):
        lab02_model.check_causal_mask(mask_fn)


def test_causal_mask_accepts_tril(capsys):
    lab02_model.check_causal_mask(lambda T: torch.tril(torch.ones(T, T)).bool())
    assert "PASSED lab02.causal_mask" in capsys.readouterr().out


# ----------------------------------------------------------------------------------------- lab 2: attention


def attention(mask: str = "causal", scale: str = "sqrt_q", split: str = "right", merge: str = "right",
              softmax_dim: int = -1, project: bool = True, heads: int | None = None):
    """A reader's attention_forward with one mistake (written independently of the checker's variants)."""

    def forward(attn, x):
        B, T, C = x.shape
        H = heads or attn.n_head
        Q = C // H
        q, k, v = attn.c_attn(x).split(C, dim=2)
        if split == "interleaved":
            q, k, v = (t.view(B, T, Q, H).permute(0, 3, 1, 2) for t in (q, k, v))
        elif split == "no_transpose":
            q, k, v = (t.reshape(B, H, T, Q) for t in (q, k, v))
        else:
            q, k, v = (t.view(B, T, H, Q).transpose(1, 2) for t in (q, k, v))
        divisor = {"sqrt_q": math.sqrt(Q), "none": 1.0, "q": Q, "sqrt_c": math.sqrt(C)}[scale]
        scores = q @ k.transpose(-2, -1) / divisor
        keep = torch.tril(torch.ones(T, T, dtype=torch.bool))
        if mask == "causal":
            scores = scores.masked_fill(~keep, float("-inf"))
        elif mask == "transposed":
            scores = scores.masked_fill(~keep.T, float("-inf"))
        elif mask == "after_softmax":
            return attn.c_proj((scores.softmax(-1).masked_fill(~keep, 0.0) @ v).transpose(1, 2).reshape(B, T, C))
        elif mask == "strict":
            scores = scores.masked_fill(~torch.tril(keep, diagonal=-1), float("-inf"))
        y = scores.softmax(dim=softmax_dim) @ v
        y = y.reshape(B, T, C) if merge == "no_transpose" else y.transpose(1, 2).reshape(B, T, C)
        return attn.c_proj(y) if project else y

    return forward


def test_attention_accepts_right_answer(capsys):
    lab02_model.check_attention(attention())
    assert "PASSED lab02.attention" in capsys.readouterr().out


@pytest.mark.parametrize("options, words", [
    ({"mask": "none"}, "mask leaks the future"),
    ({"mask": "transposed"}, "mask leaks the future"),
    ({"mask": "strict"}, "NaN"),
    ({"mask": "after_softmax"}, "after the softmax"),
    ({"scale": "none"}, "wrong scaling"),
    ({"scale": "q"}, "wrong scaling: divided by the head size"),
    ({"scale": "sqrt_c"}, "wrong scaling: divided by sqrt\\(n_embd\\)"),
    ({"split": "interleaved"}, "wrong head split"),
    ({"split": "no_transpose"}, "wrong head split"),
    ({"merge": "no_transpose"}, "wrong head merge"),
    ({"softmax_dim": -2}, "softmax over the wrong axis"),
    ({"project": False}, "output projection is missing"),
    ({"heads": 1}, "head"),
])
def test_attention_names_the_mistake(options, words):
    with pytest.raises(CheckFailed, match=words):
        lab02_model.check_attention(attention(**options))


def test_attention_stub_says_not_implemented():
    def attention_forward(attn, x):
        raise NotImplementedError("write it")

    with pytest.raises(CheckFailed, match="not implemented yet. Hint: write it"):
        lab02_model.check_attention(attention_forward)


def test_registered_ids():
    all_checkers()
    for exercise in ("lab01.scaler", "lab01.windows", "lab02.causal_mask", "lab02.attention"):
        assert exercise in CHECKERS
