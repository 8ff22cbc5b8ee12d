"""Tokenizers: round trips, pinned ids and merge order on Tiny Shakespeare, tie-breaking, agreement with Hugging
Face's byte-level BPE, determinism, weights_only-safe saving."""

from __future__ import annotations

import io
import json
import re
from collections import Counter

import pytest
import tokenizers as hf_tokenizers
import torch

from utils.datasets import load_tinyshakespeare
from utils.tokenizers import PRETOKENIZE_PATTERN, BPETokenizer, CharTokenizer, tokenizer_from_dict


@pytest.fixture(scope="module")
def text() -> str:
    return load_tinyshakespeare()


@pytest.fixture(scope="module")
def bpe(text: str) -> BPETokenizer:
    return BPETokenizer.train(text[:200_000], vocab_size=300)


@pytest.fixture(scope="module")
def opening(text: str) -> str:
    """The first 20,000 characters: realistic text, with tied pair counts among the first 20 merges."""
    return text[:20_000]


@pytest.fixture(scope="module")
def opening_bpe(opening: str) -> BPETokenizer:
    return BPETokenizer.train(opening, vocab_size=300)


#: (rank, the pair merged, the pair with the same count that lost the tie) in the opening's first 20 merges
TIES = [(5, (32, 119), (114, 101)), (12, (101, 110), (111, 110)), (17, (101, 114), (111, 114))]


def pair_counts_after(bpe: BPETokenizer, merges: int, text: str) -> Counter:
    """Adjacent-pair counts over the pre-tokenised ``text`` once the first ``merges`` merges are applied."""
    prefix = BPETokenizer(bpe.merges[:merges])
    counts: Counter = Counter()
    for piece in re.findall(PRETOKENIZE_PATTERN, text):
        ids = prefix.encode(piece)
        counts.update(zip(ids, ids[1:], strict=False))
    return counts


def test_bpe_merge_order_pinned_on_tiny_shakespeare(opening: str, opening_bpe: BPETokenizer) -> None:
    assert opening_bpe.merges[:20] == [
        (32, 116), (104, 101), (111, 117), (32, 97), (256, 257), (32, 119), (114, 101), (32, 115), (105, 110),
        (104, 97), (105, 116), (32, 109), (101, 110), (111, 110), (108, 108), (32, 121), (32, 98), (101, 114),
        (111, 114), (105, 115)]
    assert [opening_bpe.token_bytes(256 + i) for i in range(20)] == [
        b" t", b"he", b"ou", b" a", b" the", b" w", b"re", b" s", b"in", b"ha", b"it", b" m", b"en", b"on",
        b"ll", b" y", b" b", b"er", b"or", b"is"]
    assert len(opening_bpe.encode(opening)) == 14_261


@pytest.mark.parametrize("rank,winner,loser", TIES)
def test_bpe_breaks_a_tie_by_the_smaller_pair(opening: str, opening_bpe: BPETokenizer, rank, winner, loser) -> None:
    counts = pair_counts_after(opening_bpe, rank, opening)
    assert counts[winner] == counts[loser] == max(counts.values())  # a real tie, at the top
    assert opening_bpe.merges[rank] == winner and winner < loser
    assert opening_bpe.merges.index(loser) > rank  # the loser is merged later


def test_bpe_learns_the_tokens_of_hugging_face_byte_level_bpe(opening: str) -> None:
    """Same text, same settings: the same 64 tokens and the same token count; only tied merges differ in order."""
    book = BPETokenizer.train(opening, vocab_size=320)
    hf = hf_tokenizers.Tokenizer(hf_tokenizers.models.BPE())
    hf.pre_tokenizer = hf_tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = hf_tokenizers.decoders.ByteLevel()
    trainer = hf_tokenizers.trainers.BpeTrainer(vocab_size=320, show_progress=False,
                                                initial_alphabet=hf_tokenizers.pre_tokenizers.ByteLevel.alphabet())
    hf.train_from_iterator([opening], trainer=trainer)  # offline: trained from memory
    hf_merges = json.loads(hf.to_str())["model"]["merges"]
    hf_tokens = [hf.decoder.decode([a]) + hf.decoder.decode([b]) for a, b in hf_merges]
    book_tokens = [book.token_bytes(256 + i).decode() for i in range(len(book.merges))]
    assert len(hf_tokens) == len(book_tokens) == 64
    assert set(hf_tokens) == set(book_tokens) and hf_tokens != book_tokens
    assert hf_tokens.index(" w") > hf_tokens.index("re")  # the first tie (TIES[0]) goes the other way
    assert len(hf.encode(opening).ids) == len(book.encode(opening)) == 13_297
    assert hf.decode(hf.encode(opening).ids) == opening


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
