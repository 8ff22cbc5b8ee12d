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
        if mask is None:
            raise CheckFailed(f"causal_mask({size}) returned None: did you forget the `return`?")
        if not isinstance(mask, torch.Tensor):
            raise CheckFailed(f"causal_mask({size}) returned a {type(mask).__name__}; return a torch tensor")
        if mask.shape != (size, size):
            raise CheckFailed(f"causal_mask({size}) has shape {tuple(mask.shape)}; expected ({size}, {size}): "
                              "one row per query position, one column per key position")
        if mask.dtype != torch.bool:
            if mask.is_floating_point() and torch.isinf(mask).any():
                raise CheckFailed("an additive float mask (0 and -inf): this exercise wants the bool one "
                                  "(True = may attend), from which the additive one is built later")
            raise CheckFailed(f"dtype {mask.dtype}: return a bool mask (True = may attend), dtype=torch.bool")
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
    mask: "causal", "none", "transposed", "multiply" or "after_softmax"; scale: "sqrt_q", "none", "q" or "sqrt_c";
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
    elif mask == "multiply":
        scores = scores * allowed
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
    ({"mask": "multiply"}, "the scores are multiplied by the mask: a masked score becomes 0, and exp(0) still "
                           "gives the future a weight. Fill masked scores with -inf (masked_fill) instead"),
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
    ({"softmax_dim": 1}, "softmax over the wrong axis (the heads): normalise each query's scores over the "
                         "keys, the last axis (dim=-1)"),
    ({"softmax_dim": 0}, "softmax over the wrong axis (the batch): normalise each query's scores over the "
                         "keys, the last axis (dim=-1)"),
    ({"project": False}, "the output projection is missing: apply attention.c_proj to the merged heads"),
]


def _sealed(attention: Any) -> Any:
    """A copy of ``attention`` whose ``attn(x)`` raises: the exercise computes attention from its layers."""
    import torch

    from utils.gpt import CausalSelfAttention

    class SealedAttention(CausalSelfAttention):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise CheckFailed("attention_forward called attn(x) itself, which is the answer it should compute: "
                              "use its layers (attn.c_attn, attn.c_proj) and attn.n_head instead")

    sealed = SealedAttention.__new__(SealedAttention)
    sealed.__dict__.update(attention.__dict__)
    return sealed


def _expected(attention: Any, x: Any) -> Any:
    from utils.gpt import CausalSelfAttention

    return CausalSelfAttention.forward(attention, x)


def _answer(attention_forward: Callable[[Any, Any], Any], attention: Any, x: Any, what: str) -> Any:
    """The reader's output for ``x``, checked for type, shape and edits of ``x``."""
    import torch

    original = x.clone()
    got = call(attention_forward, _sealed(attention), x)
    if not torch.equal(x, original):
        raise CheckFailed(f"attention_forward changed its input x ({what}): x is the residual stream the "
                          "caller still needs; compute new tensors and leave x as it was")
    if not isinstance(got, torch.Tensor):
        raise CheckFailed(f"returned a {type(got).__name__}; return the (B, T, C) tensor")
    if got.shape != x.shape:
        raise CheckFailed(f"output shape {tuple(got.shape)} for x of shape {tuple(x.shape)} ({what}); expected "
                          "(B, T, C): merge the heads back and apply the output projection")
    return got


#: (n_embd, n_head, batch, T, input scale, what) of the regimes after the first: one head, one position, a
#: longer sequence, and inputs large enough that exp() of an unshifted score overflows in float32.
_REGIMES = [(8, 1, 1, 5, 1.0, "one head"), (32, 4, 1, 1, 1.0, "T = 1"), (32, 4, 3, 11, 1.0, "T = 11"),
            (32, 4, 2, 6, 5.0, "large inputs")]


def _diagnose_main(attention_forward: Callable[[Any, Any], Any], attention: Any, x: Any, got: Any) -> None:
    """``got`` differs from the reference for the main regime: raise the diagnosis that fits it."""
    import torch

    for options, message in _MISTAKES:
        if torch.allclose(got, _variant(attention, x, **options), rtol=1e-4, atol=1e-5, equal_nan=True):
            raise CheckFailed(message)
    if torch.isnan(got).any():
        rows = torch.isnan(got).any(dim=-1).any(dim=0).nonzero().flatten().tolist()
        if rows == [0]:
            raise CheckFailed("NaN at position 0 only: its row of scores is entirely -inf, so the diagonal is "
                              "masked. A position must be allowed to attend to itself")
        raise CheckFailed(f"NaN in the output at positions {rows}: some row of weights is 0/0 (a row of "
                          "scores that is entirely -inf, or weights normalised over a fully masked axis)")
    changed = x.clone()
    changed[:, 4:] += 1.0
    moved = (_answer(attention_forward, attention, changed, "x changed at positions 4-5")[:, :4]
             - got[:, :4]).abs().max().item()
    if moved > 1e-5:
        raise CheckFailed(f"the mask leaks the future: changing positions 4-5 changed the outputs at "
                          f"positions 0-3 by up to {moved:.3g}")
    expected = _expected(attention, x)
    if torch.isfinite(got).all():
        # position 0 attends only to itself: its output is proj(v_0) whatever the scores and their softmax
        if torch.allclose(got[:, 0], expected[:, 0], rtol=1e-4, atol=1e-5):
            raise CheckFailed("position 0 is right but the later positions are not, and nothing leaks from the "
                              "future: position 0 attends only to itself, so its output does not depend on "
                              "the weights. The weights over the earlier positions are wrong: the scaling of "
                              "the scores (1/sqrt(C / n_head)) or their softmax over the keys")
        raise CheckFailed("position 0 is wrong: it attends only to itself, so its output is the projection of "
                          "its own value vector whatever the scores. The values (the third part of c_attn), the "
                          "head split or merge, or the output projection are wrong, not the attention weights")
    error = (got - expected).abs().max().item()
    raise CheckFailed(f"the output differs from CausalSelfAttention by up to {error:.3g}; nothing leaks from the "
                      "future, so compare your scaling (1/sqrt(C / n_head)), the softmax axis, the head split "
                      "and merge, and the projection with the steps above")


@checker("lab02.attention")
def check_attention(attention_forward: Callable[[Any, Any], Any]) -> None:
    """``attention_forward(attn, x)``: x (B, T, C) -> (B, T, C), equal to ``attn(x)`` for a
    ``utils.gpt.CausalSelfAttention`` ``attn`` (causal, scaled by 1/sqrt(head size), heads split from the
    channel axis), computed by hand from ``attn.c_attn``, ``attn.c_proj`` and ``attn.n_head``, without changing
    ``x``, for any head count and sequence length, and for inputs large enough to overflow exp()."""
    import torch

    attention = _reference_module(n_embd=32, n_head=4, seed=0)  # Q = 8: sqrt(Q), Q and sqrt(C) all differ
    x = torch.randn(2, 6, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        got = _answer(attention_forward, attention, x, "B = 2, T = 6, 4 heads")
        if not torch.allclose(got, _expected(attention, x), rtol=1e-4, atol=1e-5):
            _diagnose_main(attention_forward, attention, x, got)
        for seed, (n_embd, n_head, batch, length, scale, what) in enumerate(_REGIMES, start=2):
            module = _reference_module(n_embd=n_embd, n_head=n_head, seed=seed)
            inputs = scale * torch.randn(batch, length, n_embd, generator=torch.Generator().manual_seed(seed))
            expected = _expected(module, inputs)
            got = _answer(attention_forward, module, inputs, what)
            if torch.allclose(got, expected, rtol=1e-4, atol=1e-4 * scale):
                continue
            if what == "one head":
                raise CheckFailed("right for 4 heads but wrong for 1 head: read the head count from "
                                  "attn.n_head instead of assuming it")
            if what == "large inputs" and not torch.isfinite(got).all():
                raise CheckFailed("NaN or inf for large inputs (scores in the thousands): exp() of an unshifted "
                                  "score overflows. Use torch.softmax, or subtract each row's max score first")
            error = (got - expected).abs().max().item()
            raise CheckFailed(f"right for the first input but wrong for {what} (largest difference {error:.3g}): "
                              "take B, T and C from x.shape and the head count from attn.n_head")
    passed("lab02.attention")
