"""Tokenizers: round trips, pinned ids on Tiny Shakespeare, determinism, weights_only-safe saving."""

from __future__ import annotations

import io

import pytest
import torch

from utils.datasets import load_tinyshakespeare
from utils.tokenizers import BPETokenizer, CharTokenizer, tokenizer_from_dict


@pytest.fixture(scope="module")
def text() -> str:
    return load_tinyshakespeare()


@pytest.fixture(scope="module")
def bpe(text: str) -> BPETokenizer:
    return BPETokenizer.train(text[:200_000], vocab_size=300)


def test_char_tokenizer_pinned_ids(text: str) -> None:
    tok = CharTokenizer.fit(text)
    assert tok.vocab_size == 65
    assert tok.chars[:3] == ["\n", " ", "!"]
    # the same ids as nanoGPT's shakespeare_char preparation
    assert tok.encode("First Citizen") == [18, 47, 56, 57, 58, 1, 15, 47, 58, 47, 64, 43, 52]
    assert tok.decode(tok.encode(text)) == text


def test_char_tokenizer_unknown_character(text: str) -> None:
    tok = CharTokenizer.fit(text)
    with pytest.raises(KeyError, match="not in this tokenizer's alphabet"):
        tok.encode("café")


def test_bpe_pinned_merges_and_ids(bpe: BPETokenizer) -> None:
    assert bpe.vocab_size == 300
    assert bpe.merges[:4] == [(32, 116), (104, 101), (111, 117), (32, 97)]  # ' t', 'he', 'ou', ' a'
    assert bpe.token_bytes(256 + 8) == b" the"
    assert bpe.encode("First Citizen:") == [70, 105, 114, 296, 32, 67, 270, 105, 122, 279, 58]


def test_bpe_round_trip_any_text(text: str, bpe: BPETokenizer) -> None:
    sample = text[-50_000:]
    ids = bpe.encode(sample)
    assert max(ids) < bpe.vocab_size and min(ids) >= 0
    assert bpe.decode(ids) == sample
    assert len(ids) < len(sample)  # it compresses
    odd = "naïve café — 東京 🙂\r\n\tend  "
    assert bpe.decode(bpe.encode(odd)) == odd  # byte-level: no unknown token


def test_bpe_deterministic_and_vocab_parameter(text: str, bpe: BPETokenizer) -> None:
    again = BPETokenizer.train(text[:200_000], vocab_size=300)
    assert again.merges == bpe.merges
    bigger = BPETokenizer.train(text[:200_000], vocab_size=400)
    assert bigger.vocab_size == 400 and bigger.merges[:44] == bpe.merges
    assert len(bigger.encode(text[:20_000])) < len(bpe.encode(text[:20_000]))
    with pytest.raises(ValueError, match="256"):
        BPETokenizer.train("abc", vocab_size=100)


@pytest.mark.parametrize("kind", ["char", "bpe"])
def test_to_dict_is_weights_only_safe(kind: str, text: str, bpe: BPETokenizer) -> None:
    tok = CharTokenizer.fit(text) if kind == "char" else bpe
    buffer = io.BytesIO()
    torch.save({"tokenizer": tok.to_dict()}, buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)["tokenizer"]
    restored = tokenizer_from_dict(state)
    assert type(restored) is type(tok)
    sample = text[1000:3000]
    assert restored.encode(sample) == tok.encode(sample)
    assert restored.decode(restored.encode(sample)) == sample
