"""A decoder-only transformer (GPT) in PyTorch: the model the book pretrains (chapter 5) and fine-tunes.

nanoGPT's design, written to be read: token + position embeddings, ``n_layer`` pre-norm residual blocks
(causal self-attention through ``F.scaled_dot_product_attention``, then a 4x MLP with GELU), a final
LayerNorm, and an output projection that shares its weights with the token embedding (weight tying).
Initialisation as nanoGPT writes it: every weight normal with std 0.02 (the value of GPT-1's paper, kept by
GPT-2), biases zero, and the two projections that write into the residual stream with std
``0.02 / sqrt(2 * n_layer)`` (GPT-2's paper scales residual layers by 1/sqrt(N); this form is nanoGPT's).

Shapes: B batch, T sequence length (<= block_size), C = n_embd, H = n_head, Q = C / H (head size),
V = vocab_size, L = n_layer.

Counting, by formula (asserted against the module in ``tests/test_gpt.py`` and chapter 2):
    parameters  N = V*C + block_size*C + L*(12*C^2 + 13*C) + 2*C       (bias=True)
                N = V*C + block_size*C + L*(12*C^2 + 2*C) + C          (bias=False)
    training FLOPs per token = 6*N' + 12*L*H*Q*T = 6*N' + 12*L*C*T, with N' = N minus the position
    embedding (the token embedding stays: as the tied output layer it does a matmul per token) and T =
    block_size. 6 = 2 (multiply + add) x 3 (forward, and backward at twice the cost); the second term is the
    attention scores and weighted sum, which have no parameters (PaLM appendix B; nanoGPT's MFU estimate).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from utils import validate


@dataclass
class GPTConfig:
    """Hyper-parameters of a ``GPT``. A plain dataclass: ``dataclasses.asdict(config)`` saves it."""

    vocab_size: int  # V, number of token ids
    block_size: int  # maximum context length T, in tokens
    n_layer: int  # L, number of transformer blocks
    n_head: int  # H, attention heads per block
    n_embd: int  # C, width of the residual stream (divisible by n_head)
    dropout: float = 0.0  # on attention weights, residual branches and embeddings (training only)
    bias: bool = True  # biases in Linear layers and LayerNorms

    def __post_init__(self) -> None:
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            validate.check_whole(name, getattr(self, name), 1)
        validate.check_number("dropout", self.dropout, 0.0, below=1.0)
        if self.n_embd % self.n_head:
            divisors = [h for h in range(1, min(self.n_embd, 64) + 1) if self.n_embd % h == 0]
            raise ValueError(f"n_head={self.n_head} is not allowed with n_embd={self.n_embd}: n_embd must be "
                             f"divisible by n_head (each head gets n_embd / n_head channels); choose n_head "
                             f"from {divisors}")


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention in which position t attends to positions 0..t only.

    One Linear makes queries, keys and values for all heads at once (C -> 3C); heads are split off the
    channel axis, attention runs in each head (scores scaled by 1/sqrt(Q), future masked), the heads are
    concatenated back and projected (C -> C) into the residual stream.
    """

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.n_head = config.n_head
        self.n_embd = config.n_embd
        self.dropout = config.dropout
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape  # (B, T, C)
        H = self.n_head
        q, k, v = self.c_attn(x).split(C, dim=2)  # each (B, T, C)
        q = q.view(B, T, H, C // H).transpose(1, 2)  # (B, H, T, Q)
        k = k.view(B, T, H, C // H).transpose(1, 2)  # (B, H, T, Q)
        v = v.view(B, T, H, C // H).transpose(1, 2)  # (B, H, T, Q)
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0,
                                           is_causal=True)  # (B, H, T, Q)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C): heads side by side again
        return self.resid_dropout(self.c_proj(y))  # (B, T, C)


class MLP(nn.Module):
    """Position-wise feed-forward network: C -> 4C, GELU, 4C -> C."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.gelu(self.c_fc(x))  # (B, T, 4C)
        return self.dropout(self.c_proj(x))  # (B, T, C)


class Block(nn.Module):
    """A pre-norm transformer block: ``x + attn(ln_1(x))``, then ``x + mlp(ln_2(x))``.

    The residual stream ``x`` passes through unchanged; each branch reads a normalised copy and adds its
    output back, so the gradient reaches early blocks through the identity path.
    """

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))  # (B, T, C)
        x = x + self.mlp(self.ln_2(x))  # (B, T, C)
        return x


class GPT(nn.Module):
    """The language model: ``forward(idx, targets)`` -> ``(logits, loss)``; ``generate`` samples text."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.vocab_size, config.n_embd),  # token embedding (V, C)
            wpe=nn.Embedding(config.block_size, config.n_embd),  # position embedding (block_size, C)
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
            ln_f=nn.LayerNorm(config.n_embd, bias=config.bias),
        ))
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)  # (C -> V)
        self.transformer.wte.weight = self.lm_head.weight  # weight tying: one (V, C) matrix, two uses
        self.apply(self._init_weights)
        residual_std = 0.02 / math.sqrt(2 * config.n_layer)  # 2 residual additions per block
        for name, parameter in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(parameter, mean=0.0, std=residual_std)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_parameters(self, non_embedding: bool = False) -> int:
        """Number of distinct parameters (the tied matrix counted once). ``non_embedding=True`` leaves out the
        position embedding, as nanoGPT does; the token embedding stays, because it is also the output layer."""
        total = sum(p.numel() for p in self.parameters())
        if non_embedding:
            total -= self.transformer.wpe.weight.numel()
        return total

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """idx: (B, T) int64 token ids, T <= block_size. targets: (B, T) int64, or None; -100 = ignored.

        Returns logits (B, T, V) (unnormalised log-probabilities of the next token at each position) and
        the mean cross-entropy over the non-ignored target tokens in nats (a scalar), or None without targets.
        """
        B, T = idx.shape
        if T > self.config.block_size:
            raise ValueError(f"sequence of length {T} is longer than block_size={self.config.block_size}")
        pos = torch.arange(T, dtype=torch.long, device=idx.device)  # (T,)
        x = self.transformer.wte(idx) + self.transformer.wpe(pos)  # (B, T, C) + (T, C) -> (B, T, C)
        x = self.transformer.drop(x)  # (B, T, C)
        for block in self.transformer.h:
            x = block(x)  # (B, T, C)
        x = self.transformer.ln_f(x)  # (B, T, C)
        logits = self.lm_head(x)  # (B, T, V)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(B * T, -1), targets.reshape(B * T), ignore_index=-100)  # ()
        return logits, loss

    @torch.no_grad()
    def generate(self, idx: torch.Tensor, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """Extend idx (B, T0) by ``max_new_tokens`` sampled tokens -> (B, T0 + max_new_tokens).

        Each step feeds the last ``block_size`` tokens, divides the last position's logits by ``temperature``
        (0 = greedy: always the most likely token), keeps the ``top_k`` largest if given, and samples from the
        softmax with ``generator`` (pass a seeded ``torch.Generator`` for reproducible text).
        Switch to ``model.eval()`` first when dropout > 0.
        """
        for _ in range(max_new_tokens):
            context = idx[:, -self.config.block_size:]  # (B, <= block_size)
            logits, _ = self(context)
            logits = logits[:, -1, :]  # (B, V)
            if temperature == 0:
                next_id = logits.argmax(dim=-1, keepdim=True)  # (B, 1)
            else:
                logits = logits / temperature
                if top_k is not None:
                    kth = torch.topk(logits, min(top_k, logits.size(-1))).values[:, -1:]  # (B, 1)
                    logits = logits.masked_fill(logits < kth, float("-inf"))
                probs = F.softmax(logits, dim=-1)  # (B, V)
                next_id = torch.multinomial(probs, num_samples=1, generator=generator)  # (B, 1)
            idx = torch.cat([idx, next_id], dim=1)  # (B, T + 1)
        return idx


def parameter_count_formula(config: GPTConfig, non_embedding: bool = False) -> int:
    """Parameters of ``GPT(config)`` by formula (see the module docstring); equals ``num_parameters``."""
    C, L = config.n_embd, config.n_layer
    per_block = 12 * C * C + (13 * C if config.bias else 2 * C)  # attn 4C^2 (+4C), MLP 8C^2 (+5C), 2 LNs
    final_norm = 2 * C if config.bias else C
    total = config.vocab_size * C + config.block_size * C + L * per_block + final_norm
    return total - config.block_size * C if non_embedding else total


def flops_per_token(config: GPTConfig) -> int:
    """Training FLOPs (forward + backward) per token at full context ``T = block_size``:
    ``6 * N + 12 * L * H * Q * T`` with N = ``parameter_count_formula(config, non_embedding=True)``
    (all parameters except the position embedding)."""
    N = parameter_count_formula(config, non_embedding=True)
    L, H, Q, T = config.n_layer, config.n_head, config.n_embd // config.n_head, config.block_size
    return 6 * N + 12 * L * H * Q * T


def config_to_dict(config: GPTConfig) -> dict[str, int | float | bool]:
    """The config as a plain dict (weights_only-safe in a checkpoint); ``GPTConfig(**d)`` rebuilds it."""
    return asdict(config)
