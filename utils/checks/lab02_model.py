"""Checkers of lab 2 (``labs/lab02_model.ipynb``): a causal mask and a multi-head attention forward pass.

The attention checker compares the reader's function with ``utils.gpt.CausalSelfAttention`` on random inputs,
and when they differ, recomputes attention with each classic mistake (no mask, transposed mask, missing or
wrong scaling, wrong head split, wrong head merge, softmax over the wrong axis, no output projection) to say
which one it is.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from utils.checks import CheckFailed, call, checker, passed


@checker("lab02.causal_mask")
def check_causal_mask(causal_mask: Callable[[int], Any]) -> None:
    """``causal_mask(T)``: a (T, T) bool tensor, True where query position i may attend to key position j,
    i.e. for j <= i (the convention of ``F.scaled_dot_product_attention``'s boolean ``attn_mask``)."""
    import torch

    for size in (5, 1, 8):
        mask = call(causal_mask, size)
        if not isinstance(mask, torch.Tensor):
            raise CheckFailed(f"causal_mask({size}) returned a {type(mask).__name__}; return a torch tensor")
        if mask.shape != (size, size):
            raise CheckFailed(f"causal_mask({size}) has shape {tuple(mask.shape)}; expected ({size}, {size}): "
                              "one row per query position, one column per key position")
        if mask.dtype != torch.bool:
            raise CheckFailed(f"dtype {mask.dtype}: return a bool mask (True = may attend). An additive float "
                              "mask (0 and -inf) is the other convention; build it later from the bool one")
        allowed = torch.tril(torch.ones(size, size, dtype=torch.bool))
        if torch.equal(mask, allowed):
            continue
        if torch.equal(mask, ~allowed):
            raise CheckFailed("inverted: True must mean 'may attend'. Your mask allows exactly the future and "
                              "forbids the past and the token itself")
        if size > 1 and torch.equal(mask, allowed.T):
            raise CheckFailed("transposed: row i is the query, column j the key; position i may attend to "
                              "j <= i, the lower triangle (torch.tril), not the upper one")
        if torch.equal(mask, torch.tril(allowed, diagonal=-1)):
            raise CheckFailed("the diagonal is masked: a position must attend to itself. Otherwise position 0 "
                              "has nothing to attend to, and its softmax is 0/0 = NaN")
        future = torch.triu(torch.ones(size, size, dtype=torch.bool), diagonal=1)
        if (mask & future).any():
            i, j = (mask & future).nonzero()[0].tolist()
            raise CheckFailed(f"the mask leaks the future: position {i} may attend to position {j} > {i}")
        i, j = (allowed & ~mask).nonzero()[0].tolist()
        raise CheckFailed(f"position {i} may not attend to position {j} <= {i}: every earlier position and the "
                          "token itself must be allowed")
    passed("lab02.causal_mask")


def _reference_module(n_embd: int, n_head: int, seed: int):
    import torch

    from utils.gpt import CausalSelfAttention, GPTConfig

    torch.manual_seed(seed)
    attention = CausalSelfAttention(GPTConfig(vocab_size=2, block_size=16, n_layer=1, n_head=n_head,
                                              n_embd=n_embd)).eval()
    with torch.no_grad():  # larger than GPT-2 init, so that every mistake changes the output visibly
        for parameter in attention.parameters():
            parameter.normal_(0.0, 0.4)
    return attention


def _variant(attention: Any, x: Any, *, mask: str = "causal", scale: str = "sqrt_q", split: str = "right",
             merge: str = "right", softmax_dim: int = -1, project: bool = True):
    """Attention computed by hand, with one mistake switched on (the defaults compute it right).
    mask: "causal", "none", "transposed" or "after_softmax"; scale: "sqrt_q", "none", "q" or "sqrt_c";
    split / merge: "right", "interleaved" (split only) or "no_transpose"."""
    import torch

    B, T, C = x.shape
    H = attention.n_head
    Q = C // H
    q, k, v = attention.c_attn(x).split(C, dim=2)  # each (B, T, C)

    def heads(t):
        if split == "interleaved":
            return t.view(B, T, Q, H).permute(0, 3, 1, 2)  # head h = channels h, h+H, h+2H, ...
        if split == "no_transpose":
            return t.reshape(B, H, T, Q)  # positions and heads mixed
        return t.view(B, T, H, Q).transpose(1, 2)  # (B, H, T, Q)

    q, k, v = heads(q), heads(k), heads(v)
    divisor = {"sqrt_q": math.sqrt(Q), "none": 1.0, "q": float(Q), "sqrt_c": math.sqrt(C)}[scale]
    scores = q @ k.transpose(-2, -1) / divisor  # (B, H, T, T)
    allowed = torch.tril(torch.ones(T, T, dtype=torch.bool))
    if mask == "causal":
        scores = scores.masked_fill(~allowed, float("-inf"))
    elif mask == "transposed":
        scores = scores.masked_fill(~allowed.T, float("-inf"))
    weights = torch.softmax(scores, dim=softmax_dim)
    if mask == "after_softmax":
        weights = weights.masked_fill(~allowed, 0.0)
    y = weights @ v  # (B, H, T, Q)
    y = y.reshape(B, T, C) if merge == "no_transpose" else y.transpose(1, 2).reshape(B, T, C)
    return attention.c_proj(y) if project else y


_MISTAKES: list[tuple[dict[str, Any], str]] = [
    ({"mask": "none"}, "the mask leaks the future: no causal mask is applied, so position t attends to t+1, "
                       "t+2, ... Fill the scores above the diagonal with -inf before the softmax"),
    ({"mask": "transposed"}, "the mask leaks the future: it is transposed (upper triangle kept), so position t "
                             "sees the positions after it. Keep j <= i: torch.tril"),
    ({"mask": "after_softmax"}, "the mask is applied after the softmax: each row's weights no longer sum to 1 "
                                "(and the future still shaped the normalisation). Fill the scores with -inf "
                                "before the softmax"),
    ({"scale": "none"}, "wrong scaling: the scores are not scaled. Divide q @ k^T by sqrt(head size) = "
                        "sqrt(C / n_head), or the softmax saturates as the head size grows"),
    ({"scale": "q"}, "wrong scaling: divided by the head size; divide by its square root, sqrt(C / n_head)"),
    ({"scale": "sqrt_c"}, "wrong scaling: divided by sqrt(n_embd); the scale is per head: sqrt(C / n_head)"),
    ({"split": "interleaved"}, "wrong head split: head h must get the channels h*Q .. (h+1)*Q - 1 "
                               "(view(B, T, H, Q).transpose(1, 2)); you interleaved them (view(B, T, Q, H))"),
    ({"split": "no_transpose"}, "wrong head split: reshaping (B, T, C) straight to (B, H, T, Q) mixes positions "
                                "and heads; view(B, T, H, Q) first, then transpose(1, 2)"),
    ({"merge": "no_transpose"}, "wrong head merge: transpose (B, H, T, Q) back to (B, T, H, Q) before "
                                "reshaping to (B, T, C), or positions and heads are mixed"),
    ({"softmax_dim": -2}, "softmax over the wrong axis: normalise each query's scores over the keys, the last "
                          "axis (dim=-1)"),
    ({"project": False}, "the output projection is missing: apply attention.c_proj to the merged heads"),
]


@checker("lab02.attention")
def check_attention(attention_forward: Callable[[Any, Any], Any]) -> None:
    """``attention_forward(attn, x)``: x (B, T, C) -> (B, T, C), equal to ``attn(x)`` for a
    ``utils.gpt.CausalSelfAttention`` ``attn`` (causal, scaled by 1/sqrt(head size), heads split from the
    channel axis), computed by hand from ``attn.c_attn``, ``attn.c_proj`` and ``attn.n_head``."""
    import torch

    attention = _reference_module(n_embd=32, n_head=4, seed=0)  # Q = 8: sqrt(Q), Q and sqrt(C) all differ
    x = torch.randn(2, 6, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = attention(x)
        got = call(attention_forward, attention, x)
        if not isinstance(got, torch.Tensor):
            raise CheckFailed(f"returned a {type(got).__name__}; return the (B, T, C) tensor")
        if got.shape != expected.shape:
            raise CheckFailed(f"output shape {tuple(got.shape)}, expected {tuple(expected.shape)} = (B, T, C): "
                              "merge the heads back and apply the output projection")
        if torch.isnan(got).any():
            raise CheckFailed("NaN in the output: a row of scores is entirely -inf (is the diagonal masked?), "
                              "or the mask was applied after the softmax")
        if torch.allclose(got, expected, rtol=1e-4, atol=1e-5):
            single = _reference_module(n_embd=8, n_head=1, seed=2)
            x1 = torch.randn(1, 5, 8, generator=torch.Generator().manual_seed(3))
            if not torch.allclose(call(attention_forward, single, x1), single(x1), rtol=1e-4, atol=1e-5):
                raise CheckFailed("right for 4 heads but wrong for 1 head: read the head count from "
                                  "attn.n_head instead of assuming it")
            passed("lab02.attention")
            return
        for options, message in _MISTAKES:
            if torch.allclose(got, _variant(attention, x, **options), rtol=1e-4, atol=1e-5):
                raise CheckFailed(message)
        changed = x.clone()
        changed[:, 4:] += 1.0
        moved = (call(attention_forward, attention, changed)[:, :4] - got[:, :4]).abs().max().item()
        if moved > 1e-5:
            raise CheckFailed(f"the mask leaks the future: changing positions 4-5 changed the outputs at "
                              f"positions 0-3 by up to {moved:.3g}")
        single = _reference_module(n_embd=8, n_head=1, seed=2)
        x1 = torch.randn(1, 5, 8, generator=torch.Generator().manual_seed(3))
        if torch.allclose(call(attention_forward, single, x1), single(x1), rtol=1e-4, atol=1e-5):
            raise CheckFailed("right with one head, wrong with four: the head split or merge is wrong. Split "
                              "with view(B, T, H, Q).transpose(1, 2); merge with transpose(1, 2) then "
                              "reshape(B, T, C)")
        error = (got - expected).abs().max().item()
        raise CheckFailed(f"the output differs from CausalSelfAttention by up to {error:.3g}; the mask is causal, "
                          "so check the scaling (1/sqrt(C / n_head)), the softmax axis and the projection")
