"""Tokenizers the book trains itself, offline: characters, and byte-pair encoding (BPE) over UTF-8 bytes.

Both map text to a list of integer token ids and back, with ``decode(encode(text)) == text`` for every text
they accept, and both save as a plain dictionary (``to_dict`` / ``from_dict``) of strings, integers and lists,
so that a checkpoint holding one loads with ``torch.load(..., weights_only=True)``.

``CharTokenizer``
    One id per distinct character of the training text (65 for Tiny Shakespeare), ids in sorted character
    order. Text with a character it never saw raises ``KeyError``.
``BPETokenizer``
    GPT-2 style byte-level BPE: the text is split into word-like pieces by a regular expression, each piece
    into its UTF-8 bytes (ids 0-255), then the most frequent adjacent pair is merged into a new id, again and
    again, until the vocabulary has ``vocab_size`` ids. Any text round-trips (there is no unknown token).
    Training keeps pair counts up to date incrementally, so 200 KB of text to 512 ids takes about a second.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

#: Splits text into the pieces BPE merges within (never across): a word with its leading space, a number, a
#: run of punctuation, or whitespace. GPT-2's pattern, with Python-``re`` classes instead of ``\p{L}``/``\p{N}``.
PRETOKENIZE_PATTERN = (r"'(?:s|t|re|ve|m|ll|d)| ?[^\W\d_]+| ?\d+| ?[^\s\w]+|_+|\s+(?!\S)|\s+")


class CharTokenizer:
    """A character-level tokenizer: token id = index of the character in the sorted alphabet of the text.

    ``CharTokenizer.fit(text)`` builds it; ``encode(str) -> list[int]`` (ids in ``[0, vocab_size)``),
    ``decode(list[int]) -> str``.
    """

    def __init__(self, chars: Sequence[str]) -> None:
        chars = list(chars)
        if len(set(chars)) != len(chars) or any(len(c) != 1 for c in chars):
            raise ValueError("chars must be distinct single characters")
        self.chars: list[str] = chars
        self.stoi: dict[str, int] = {c: i for i, c in enumerate(chars)}

    @classmethod
    def fit(cls, text: str) -> CharTokenizer:
        """The tokenizer whose alphabet is every distinct character of ``text``, sorted."""
        return cls(sorted(set(text)))

    @property
    def vocab_size(self) -> int:
        """Number of distinct token ids."""
        return len(self.chars)

    def encode(self, text: str) -> list[int]:
        """``text`` (n characters) -> n token ids. Raises ``KeyError`` naming a character it never saw."""
        try:
            return [self.stoi[c] for c in text]
        except KeyError as exc:
            raise KeyError(f"character {exc.args[0]!r} is not in this tokenizer's alphabet of {self.vocab_size} "
                           "characters: fit it on text that contains it, or clean the text first") from None

    def decode(self, ids: Iterable[int]) -> str:
        """Token ids -> the text they stand for (one character per id)."""
        return "".join(self.chars[int(i)] for i in ids)

    def to_dict(self) -> dict[str, Any]:
        """A plain dict (weights_only-safe in a torch checkpoint) that ``from_dict`` turns back into this."""
        return {"kind": "char", "chars": "".join(self.chars)}

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> CharTokenizer:
        if state.get("kind") != "char":
            raise ValueError(f"not a CharTokenizer state: kind={state.get('kind')!r}")
        return cls(list(state["chars"]))

    def __repr__(self) -> str:
        return f"CharTokenizer(vocab_size={self.vocab_size})"


def _merge(ids: list[int], pair: tuple[int, int], new_id: int) -> list[int]:
    """Replace every non-overlapping occurrence of ``pair`` in ``ids`` (left to right) by ``new_id``."""
    out: list[int] = []
    i, n = 0, len(ids)
    while i < n:
        if i + 1 < n and ids[i] == pair[0] and ids[i + 1] == pair[1]:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


class BPETokenizer:
    """Byte-level byte-pair encoding. Ids 0-255 are the bytes; id ``256 + k`` is the k-th learned merge.

    ``BPETokenizer.train(text, vocab_size)`` learns ``vocab_size - 256`` merges from ``text``;
    ``encode(str) -> list[int]`` applies them in the order learned (lowest rank first, as GPT-2 does);
    ``decode(list[int]) -> str`` concatenates the bytes of the ids and decodes UTF-8.
    """

    def __init__(self, merges: Sequence[tuple[int, int]], pattern: str = PRETOKENIZE_PATTERN) -> None:
        self.merges: list[tuple[int, int]] = [(int(a), int(b)) for a, b in merges]
        self.pattern = pattern
        self._regex = re.compile(pattern)
        self.ranks: dict[tuple[int, int], int] = {pair: rank for rank, pair in enumerate(self.merges)}
        self.vocab: list[bytes] = [bytes([i]) for i in range(256)]
        for a, b in self.merges:
            self.vocab.append(self.vocab[a] + self.vocab[b])
        self._cache: dict[str, list[int]] = {}

    # ------------------------------------------------------------------ training
    @classmethod
    def train(cls, text: str, vocab_size: int, pattern: str = PRETOKENIZE_PATTERN) -> BPETokenizer:
        """Learn merges from ``text`` until there are ``vocab_size`` ids (>= 256), or no pair occurs twice.

        Deterministic: among pairs with the same count, the smallest ``(id, id)`` pair is merged first.
        """
        if vocab_size < 256:
            raise ValueError(f"a byte-level BPE needs vocab_size >= 256 (the bytes), got {vocab_size}")
        regex = re.compile(pattern)
        piece_counts = Counter(regex.findall(text))
        words: list[list[int]] = [list(piece.encode("utf-8")) for piece in piece_counts]
        freqs: list[int] = list(piece_counts.values())
        pair_counts: Counter[tuple[int, int]] = Counter()
        where: defaultdict[tuple[int, int], set[int]] = defaultdict(set)
        for w, (ids, freq) in enumerate(zip(words, freqs, strict=True)):
            for pair in zip(ids, ids[1:], strict=False):
                pair_counts[pair] += freq
                where[pair].add(w)
        merges: list[tuple[int, int]] = []
        for new_id in range(256, vocab_size):
            if not pair_counts:
                break
            best = max(pair_counts.items(), key=lambda item: (item[1], (-item[0][0], -item[0][1])))
            pair, count = best
            if count < 2:
                break
            merges.append(pair)
            for w in list(where[pair]):
                ids, freq = words[w], freqs[w]
                for old in zip(ids, ids[1:], strict=False):  # forget this word's pairs ...
                    pair_counts[old] -= freq
                    if pair_counts[old] <= 0:
                        del pair_counts[old]
                    where[old].discard(w)
                ids = _merge(ids, pair, new_id)
                words[w] = ids
                for new in zip(ids, ids[1:], strict=False):  # ... and count the merged word's pairs
                    pair_counts[new] += freq
                    where[new].add(w)
            where.pop(pair, None)
        return cls(merges, pattern)

    # ------------------------------------------------------------------ using
    @property
    def vocab_size(self) -> int:
        """256 byte ids plus one id per merge."""
        return 256 + len(self.merges)

    def _encode_piece(self, piece: str) -> list[int]:
        cached = self._cache.get(piece)
        if cached is not None:
            return cached
        ids = list(piece.encode("utf-8"))
        while len(ids) >= 2:
            ranked = [(self.ranks.get(p, len(self.ranks)), p) for p in zip(ids, ids[1:], strict=False)]
            rank, pair = min(ranked)
            if rank == len(self.ranks):
                break
            ids = _merge(ids, pair, 256 + rank)
        if len(self._cache) < 100_000:
            self._cache[piece] = ids
        return ids

    def encode(self, text: str) -> list[int]:
        """``text`` -> token ids in ``[0, vocab_size)``; usually 2-4 times fewer ids than UTF-8 bytes."""
        out: list[int] = []
        for piece in self._regex.findall(text):
            out.extend(self._encode_piece(piece))
        return out

    def decode(self, ids: Iterable[int]) -> str:
        """Token ids -> text. Ids that end inside a multi-byte character decode to U+FFFD."""
        return b"".join(self.vocab[int(i)] for i in ids).decode("utf-8", errors="replace")

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes one id stands for (``b' the'`` for a learned word piece)."""
        return self.vocab[token_id]

    def to_dict(self) -> dict[str, Any]:
        """A plain dict (weights_only-safe in a torch checkpoint) that ``from_dict`` turns back into this."""
        return {"kind": "bpe", "merges": [[a, b] for a, b in self.merges], "pattern": self.pattern}

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> BPETokenizer:
        if state.get("kind") != "bpe":
            raise ValueError(f"not a BPETokenizer state: kind={state.get('kind')!r}")
        return cls([tuple(pair) for pair in state["merges"]], state["pattern"])

    def __repr__(self) -> str:
        return f"BPETokenizer(vocab_size={self.vocab_size})"


def tokenizer_from_dict(state: dict[str, Any]) -> CharTokenizer | BPETokenizer:
    """Rebuild whichever tokenizer ``state`` describes (by its ``kind``: ``"char"`` or ``"bpe"``)."""
    kinds: dict[str, Any] = {"char": CharTokenizer, "bpe": BPETokenizer}
    if state.get("kind") not in kinds:
        raise ValueError(f"unknown tokenizer kind {state.get('kind')!r}; expected one of {sorted(kinds)}")
    return kinds[state["kind"]].from_dict(state)
