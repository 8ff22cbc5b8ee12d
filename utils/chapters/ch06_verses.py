"""The fine-tuning chapter's data: King James verses made readable by the pretrained character tokenizer, the
one train/test split of the division task, and the tensors each kind of fine-tuning trains on.

Characters
    The pretrained GPT reads the 65 characters of Tiny Shakespeare. ``unknown_characters`` counts those of a
    text it lacks; ``KJV_CHARACTER_POLICY`` says what becomes of each in the Bible (dropped: 444 brackets in
    4.1 million characters); ``apply_character_policy`` applies it and raises on any character the policy
    does not cover, so a new corpus cannot slip an unseen character past the tokenizer.
The task
    ``division_split``: verses -> (train, test), stratified by division; ``train_val_test_split``: verses ->
    (train, validation, test), the three parts chapter 6 uses. ``DIVISIONS``: class index order.
Tensors
    ``encode_prefixes``: the first ``length`` characters of each verse, right-padded with ``PAD`` (-1,
    an id no character has), for a classifier. ``encode_stream``: verses joined into one token stream, for
    continued pretraining. ``sft_example`` / ``encode_sft``: "prompt + answer" sequences whose targets are
    ``IGNORE_INDEX`` (-100) on the prompt, so the language-model loss scores the answer only.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch

from utils.datasets import KJV_DIVISIONS

#: The classes of the division task, in canonical order: label i is ``DIVISIONS[i]``.
DIVISIONS: tuple[str, ...] = tuple(KJV_DIVISIONS)
#: The id that marks padding in ``encode_prefixes``: no character has it.
PAD = -1
#: The target ``F.cross_entropy`` skips (its default ``ignore_index``, as in ``utils.gpt.GPT.forward``).
IGNORE_INDEX = -100
#: What the King James text does with the characters Tiny Shakespeare lacks: "(" ")" "[" "]" are dropped
#: (replaced by the empty string). The words inside the brackets stay; only the marks go.
KJV_CHARACTER_POLICY: dict[str, str] = {"(": "", ")": "", "[": "", "]": ""}
#: Between a prompt and its answer in supervised fine-tuning, and after the answer: a line break.
SFT_SEPARATOR = "\n"


def unknown_characters(texts: Iterable[str], tokenizer: Any) -> Counter:
    """``{character: occurrences}`` of every character of ``texts`` missing from ``tokenizer.stoi``."""
    counts: Counter = Counter()
    for text in texts:
        counts.update(ch for ch in text if ch not in tokenizer.stoi)
    return counts


def apply_character_policy(texts: Sequence[str], tokenizer: Any,
                           policy: Mapping[str, str] = KJV_CHARACTER_POLICY) -> tuple[list[str], Counter]:
    """``texts`` with every character that ``policy`` names replaced (``""`` = dropped), and the count of
    each replacement. A character the tokenizer lacks and the policy does not name raises ``ValueError``."""
    missing = {ch for ch in unknown_characters(texts, tokenizer) if ch not in policy}
    if missing:
        raise ValueError(f"characters {sorted(missing)} are not in the tokenizer's alphabet and the policy "
                         "says nothing about them: add each to the policy (a replacement, or '' to drop it)")
    table = str.maketrans(dict(policy))
    replaced = Counter(ch for text in texts for ch in text if ch in policy)
    return [text.translate(table) for text in texts], replaced


def division_split(verses: Any, test_size: float = 0.2, seed: int = 0) -> tuple[Any, Any]:
    """``(train, test)`` rows of ``verses`` (``datasets.load_kjv()``), stratified by ``division`` so both
    keep its class balance, shuffled by ``seed``. The one split of the division task: every model of the
    chapter (baselines included) trains on rows of ``train`` and is scored on rows of ``test``. The
    original row numbers are kept as the index."""
    from sklearn.model_selection import train_test_split

    return train_test_split(verses, test_size=test_size, stratify=verses["division"], random_state=seed)


def train_val_test_split(verses: Any, val_size: float = 0.1, test_size: float = 0.2,
                         seed: int = 0) -> tuple[Any, Any, Any]:
    """``(train, validation, test)`` rows of ``verses``, each stratified by ``division`` and disjoint.

    ``test_size`` of all the verses are the test set: ``division_split(verses, test_size, seed)``, so the
    test rows are those ``division_split`` gives with the same arguments. ``val_size`` of the remaining
    verses validate (``division_split`` of the rest, seed + 1), the others train. Every comparison and every
    choice is made on the validation rows; the test rows score the chosen model once, at the end."""
    rest, test = division_split(verses, test_size=test_size, seed=seed)
    train, val = division_split(rest, test_size=val_size, seed=seed + 1)
    return train, val, test


def division_labels(divisions: Iterable[str]) -> torch.Tensor:
    """Division names -> class indices into ``DIVISIONS``: (N,) int64."""
    index = {name: i for i, name in enumerate(DIVISIONS)}
    return torch.tensor([index[name] for name in divisions], dtype=torch.long)


def encode_prefixes(texts: Sequence[str], tokenizer: Any, length: int) -> torch.Tensor:
    """The first ``length`` characters of each text as token ids, right-padded with ``PAD``: (N, length)
    int64. Right padding leaves every real position's causal context unchanged. An empty text raises."""
    ids = torch.full((len(texts), length), PAD, dtype=torch.long)  # (N, T)
    for row, text in enumerate(texts):
        if not text:
            raise ValueError(f"text {row} is empty: a classifier needs at least one character")
        encoded = tokenizer.encode(text[:length])
        ids[row, :len(encoded)] = torch.tensor(encoded)
    return ids


def encode_stream(texts: Sequence[str], tokenizer: Any, separator: str = "\n") -> torch.Tensor:
    """``texts`` joined by ``separator`` and encoded: one 1-D int64 stream, for language modelling."""
    return torch.tensor(tokenizer.encode(separator.join(texts)), dtype=torch.long)


def sft_example(prompt: str, answer: str, tokenizer: Any, length: int,
                mask_prompt: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """One supervised fine-tuning example: the text ``prompt + SFT_SEPARATOR + answer + SFT_SEPARATOR``
    as next-token inputs and targets, each (length,) int64.

    x[t] is token t, y[t] token t + 1 (as in pretraining). With ``mask_prompt``, the targets that are
    prompt or separator tokens (``y[t]`` for ``t + 1 < n_prompt``, n_prompt = tokens of prompt and
    separator) are ``IGNORE_INDEX``, so the loss scores only the answer and its closing separator; padding
    (x = 0, y = ``IGNORE_INDEX``) fills the rest. The text must fit: ``tokens - 1 <= length``.
    """
    ids = tokenizer.encode(prompt + SFT_SEPARATOR + answer + SFT_SEPARATOR)
    n_prompt = len(tokenizer.encode(prompt + SFT_SEPARATOR))  # positions of the prompt and separator
    if len(ids) - 1 > length:
        raise ValueError(f"prompt + answer take {len(ids) - 1} positions, more than length={length}: "
                         "shorten the prompt")
    x = torch.zeros(length, dtype=torch.long)  # (T,) padding id 0: its targets are ignored
    y = torch.full((length,), IGNORE_INDEX, dtype=torch.long)  # (T,)
    x[:len(ids) - 1] = torch.tensor(ids[:-1])
    y[:len(ids) - 1] = torch.tensor(ids[1:])
    if mask_prompt:
        y[:n_prompt - 1] = IGNORE_INDEX  # the targets that are prompt or separator tokens
    return x, y


def encode_sft(prompts: Sequence[str], answers: Sequence[str], tokenizer: Any, length: int,
               mask_prompt: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """``sft_example`` for each (prompt, answer) pair, stacked: x, y each (N, length) int64."""
    pairs = [sft_example(p, a, tokenizer, length, mask_prompt) for p, a in zip(prompts, answers, strict=True)]
    return torch.stack([x for x, _ in pairs]), torch.stack([y for _, y in pairs])
