"""Fine-tuning the book's pretrained GPT for a new task: a classifier built on it, the four ways of training
that classifier (strategies), what each costs in memory, and reading the answer a fine-tuned language model
writes.

``GPTClassifier``
    A copy of the pretrained GPT without its language-model head, and a new ``nn.Linear`` head on the mean
    of its hidden states over the real (non-padding) positions: x (B, T) -> logits (B, K).
``prepare_strategy``
    Sets which parameters train and returns the AdamW that trains them: ``"full"`` (everything, one rate),
    ``"frozen"`` (the head only), ``"discriminative"`` (everything, the body at a lower rate than the head),
    ``"lora"`` (rank-r adapters on attention, ``utils.lora``, and the head). ``expected_trainable`` gives
    each one's trainable-parameter count by formula.
``greedy_continuations`` / ``answers_to_labels``
    The first characters a language model writes after each prompt, and the division they name.
``across_seeds`` / ``accuracy_difference_se`` / ``mean_difference_se``
    Comparing configurations that were each run under several seeds: per-seed values with their mean, standard
    deviation and spread, and the standard error of a difference of two accuracies (one validation sample;
    two seed means).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
import torch
import torch.nn as nn

from utils import lora
from utils.chapters.ch06_verses import PAD
from utils.gpt import GPT, GPTConfig, parameter_count_formula
from utils.optim import make_adamw

STRATEGIES = ("full", "frozen", "discriminative", "lora")
#: The layers LoRA adapts: every block's query/key/value projection (C -> 3C) and attention output (C -> C).
LORA_TARGETS = ("c_attn", "attn.c_proj")


class GPTClassifier(nn.Module):
    """A pretrained GPT body and a new linear head: x (B, T) token ids, right-padded with ``PAD`` ->
    logits (B, n_classes).

    The body is a deep copy of ``gpt`` whose language-model head is replaced by the identity, so it returns
    its last hidden states (B, T, C) instead of next-token logits; the pretrained model is left untouched.
    Pooling: the mean of the hidden states over each row's real positions. A character model's state at
    one position is mostly about the next character; the mean gathers the evidence of every word read.
    Right padding comes after the real positions, which under causal attention cannot see it, and is left
    out of the mean, so an example's logits do not depend on how wide its batch was padded.
    """

    def __init__(self, gpt: GPT, n_classes: int) -> None:
        super().__init__()
        self.body = copy.deepcopy(gpt)
        self.body.lm_head = nn.Identity()  # the tied matrix stays, as the token embedding
        self.head = nn.Linear(gpt.config.n_embd, n_classes)  # (C -> K), PyTorch's default initialisation

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, T) -> the mean of the body's hidden states over each row's real positions: (B, C)."""
        real = (x != PAD).unsqueeze(-1).to(torch.float32)  # (B, T, 1): 1 at real tokens, 0 at padding
        counts = real.sum(dim=1)  # (B, 1)
        if bool((counts == 0).any()):
            raise ValueError("a row of x is all padding: every example needs at least one token")
        hidden, _ = self.body(x.clamp(min=0))  # (B, T, C); PAD becomes id 0, then is left out
        return (hidden * real).sum(dim=1) / counts  # (B, C)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pooled(x))  # (B, K)


def freeze(module: nn.Module) -> None:
    """``requires_grad = False`` for every parameter of ``module``: the optimizer leaves them alone."""
    for p in module.parameters():
        p.requires_grad_(False)


def prepare_strategy(model: GPTClassifier, strategy: str, lr: float, *, body_lr: float | None = None,
                     rank: int = 8, alpha: float = 16.0, weight_decay: float = 0.0) -> torch.optim.AdamW:
    """Set, in place, which parameters of ``model`` train under ``strategy`` and return their AdamW.

    full: every parameter at ``lr``. frozen: the body frozen, the head at ``lr``. discriminative: the body
    at ``body_lr`` (required, below ``lr``) and the head at ``lr``, in named groups (``body.decay``,
    ``head.no_decay``...) whose rates the training loop logs one scalar each. lora: the body frozen, rank-
    ``rank`` adapters (scale ``alpha / rank``) on ``LORA_TARGETS``, the adapters and the head at ``lr``.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}: choose one of {STRATEGIES}")
    if strategy == "frozen":
        freeze(model.body)
    elif strategy == "lora":
        lora.apply_lora(model, LORA_TARGETS, rank=rank, alpha=alpha, keep_trainable=("head.",))
    elif strategy == "discriminative":
        if body_lr is None or not 0 < body_lr < lr:
            raise ValueError(f"discriminative learning rates need 0 < body_lr < lr, got body_lr={body_lr}, "
                             f"lr={lr}")
        return make_adamw(model, lr, weight_decay, lr_by_prefix={"body.": body_lr, "head.": lr})
    return make_adamw(model, lr, weight_decay)


def expected_trainable(strategy: str, config: GPTConfig, n_classes: int, rank: int = 8) -> int:
    """Trainable parameters of ``prepare_strategy(GPTClassifier(GPT(config), n_classes), strategy)``, by
    formula: the head has C*K + K; the body ``parameter_count_formula(config)``; LoRA adds
    r(C + 3C) + r(C + C) = 6rC per block (``lora.lora_parameter_count``)."""
    C = config.n_embd
    head = C * n_classes + n_classes
    adapters = config.n_layer * (lora.lora_parameter_count(C, 3 * C, rank) + lora.lora_parameter_count(C, C, rank))
    counts = {"full": parameter_count_formula(config) + head, "frozen": head,
              "discriminative": parameter_count_formula(config) + head, "lora": adapters + head}
    if strategy not in counts:
        raise ValueError(f"unknown strategy {strategy!r}: choose one of {STRATEGIES}")
    return counts[strategy]


# --------------------------------------------------------------------------------------------- answers


@torch.no_grad()
def greedy_continuations(model: GPT, prompts: torch.Tensor, n_tokens: int) -> torch.Tensor:
    """The ``n_tokens`` most likely next tokens, one after the other, after each prompt.

    prompts: (N, T) ids right-padded with ``PAD`` (``finetune_data.encode_prefixes``), with room for
    ``n_tokens`` more: T >= longest prompt + n_tokens. Returns (N, n_tokens) int64. Causal attention means a
    row's logits at its last real position ignore the padding after it.
    """
    lengths = (prompts != PAD).sum(dim=1)  # (N,)
    if int(lengths.max()) + n_tokens > prompts.shape[1]:
        raise ValueError(f"no room for {n_tokens} tokens after a prompt of {int(lengths.max())} in width "
                         f"{prompts.shape[1]}: pad the prompts wider")
    was_training = model.training
    model.eval()
    x, rows = prompts.clamp(min=0), torch.arange(len(prompts))  # (N, T), (N,)
    written = []
    for k in range(n_tokens):
        logits, _ = model(x[:, :int(lengths.max()) + k])  # (N, T', V)
        token = logits[rows, lengths + k - 1].argmax(dim=-1)  # (N,): the next token after each prompt
        x[rows, lengths + k] = token
        written.append(token)
    model.train(was_training)
    return torch.stack(written, dim=1)  # (N, n_tokens)


def distinguishing_length(names: tuple[str, ...]) -> int:
    """The fewest leading characters that tell every name apart (2 for the ten divisions)."""
    for k in range(1, max(map(len, names)) + 1):
        if len({name[:k] for name in names}) == len(names):
            return k
    raise ValueError(f"two of the names are equal: {names}")


def answers_to_labels(texts: list[str], names: tuple[str, ...]) -> torch.Tensor:
    """The index into ``names`` of the name each text starts like (over ``distinguishing_length`` characters),
    or -1 when it starts like none: (N,) int64."""
    k = distinguishing_length(names)
    by_prefix = {name[:k]: i for i, name in enumerate(names)}
    return torch.tensor([by_prefix.get(text[:k], -1) for text in texts], dtype=torch.long)


# --------------------------------------------------------------------------------------------- across seeds


def across_seeds(values: Mapping[Any, Sequence[float]]) -> pd.DataFrame:
    """``{configuration: [value under seed 0, seed 1, ...]}`` -> one row per configuration: the values
    (columns ``s0``, ``s1``, ...), their ``mean``, standard deviation ``sd`` (n - 1 in the denominator) and
    ``spread`` (largest minus smallest). Every configuration needs the same number of seeds, at least two."""
    counts = {len(v) for v in values.values()}
    if len(counts) != 1 or min(counts) < 2:
        raise ValueError(f"every configuration needs the same number of seeds, at least 2; got {sorted(counts)}")
    table = pd.DataFrame({config: list(map(float, v)) for config, v in values.items()}).T
    table.columns = [f"s{i}" for i in range(table.shape[1])]
    per_seed = table.copy()
    table["mean"] = per_seed.mean(axis=1)
    table["sd"] = per_seed.std(axis=1, ddof=1)
    table["spread"] = per_seed.max(axis=1) - per_seed.min(axis=1)
    return table


def accuracy_difference_se(p: float, n: int) -> float:
    """Standard error of the difference of two accuracies near ``p`` (0..1), each measured on ``n`` examples:
    sqrt(2 p (1 - p) / n), as if the two were measured independently. Two models scored on the same examples
    tend to be right on the same ones, which makes the true standard error smaller: this errs on the safe
    side. For p = 0.3 and n = 512: 0.029."""
    if not 0 <= p <= 1 or n < 1:
        raise ValueError(f"need 0 <= p <= 1 and n >= 1, got p={p}, n={n}")
    return math.sqrt(2 * p * (1 - p) / n)


def mean_difference_se(p: float, n: int, sd_a: float, sd_b: float, n_seeds: int) -> float:
    """Standard error of the difference of two configurations' mean accuracies (near ``p``), each the mean
    over ``n_seeds`` seeds, every run scored on the same ``n`` examples: sqrt(2p(1-p)/n + (sd_a^2 + sd_b^2) /
    n_seeds). The first term is which examples were drawn (``accuracy_difference_se``): shared by all the
    seeds, so averaging seeds does not shrink it. The second is the training randomness, ``sd_a`` and
    ``sd_b`` being each configuration's standard deviation across its seeds (``across_seeds``)."""
    if n_seeds < 1:
        raise ValueError(f"n_seeds must be >= 1, got {n_seeds}")
    return math.sqrt(accuracy_difference_se(p, n) ** 2 + (sd_a**2 + sd_b**2) / n_seeds)
