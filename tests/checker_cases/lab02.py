"""Answers to lab 2: a causal mask, a multi-head attention forward pass."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from tests.checker_cases import Cases, Wrong

# ---------------------------------------------------------------- lab02.causal_mask


def mask_tril(T):
    return torch.tril(torch.ones(T, T, dtype=torch.bool))


def mask_compare_positions(T):
    positions = torch.arange(T)
    return positions[:, None] >= positions[None, :]


def mask_loops(T):
    mask = torch.zeros(T, T, dtype=torch.bool)
    for i in range(T):
        for j in range(i + 1):
            mask[i, j] = True
    return mask


def mask_not_future(T):
    return ~torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)


def mask_inverted(T):
    return torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)


def mask_transposed(T):
    return torch.triu(torch.ones(T, T, dtype=torch.bool))


def mask_without_diagonal(T):
    return torch.tril(torch.ones(T, T, dtype=torch.bool), diagonal=-1)


def mask_float_ones(T):
    return torch.tril(torch.ones(T, T))


def mask_additive(T):
    return torch.zeros(T, T).masked_fill(~mask_tril(T), float("-inf"))


def mask_numpy(T):
    return np.tril(np.ones((T, T), dtype=bool))


def mask_fixed_size(T):
    return torch.tril(torch.ones(5, 5, dtype=torch.bool))


def mask_one_step_ahead(T):
    return torch.tril(torch.ones(T, T, dtype=torch.bool), diagonal=1)


def mask_without_return(T):
    torch.tril(torch.ones(T, T, dtype=torch.bool))


def mask_four_dimensional(T):
    return mask_tril(T)[None, None]


def mask_sliding_window(T):
    """Only the last three positions: a local-attention mask, not the causal one."""
    return mask_tril(T) & ~torch.tril(torch.ones(T, T, dtype=torch.bool), diagonal=-3)


# ---------------------------------------------------------------- lab02.attention: right


def _heads(t, B, T, H):
    return t.view(B, T, H, t.shape[-1] // H).transpose(1, 2)


def attention_reference(attn, x):
    B, T, C = x.shape
    H = attn.n_head
    q, k, v = (_heads(t, B, T, H) for t in attn.c_attn(x).split(C, dim=2))
    scores = q @ k.transpose(-2, -1) / math.sqrt(C // H)
    scores = scores.masked_fill(~mask_tril(T), float("-inf"))
    y = (torch.softmax(scores, dim=-1) @ v).transpose(1, 2).reshape(B, T, C)
    return attn.c_proj(y)


def attention_sdpa(attn, x):
    B, T, C = x.shape
    q, k, v = (_heads(t, B, T, attn.n_head) for t in attn.c_attn(x).split(C, dim=2))
    y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    return attn.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))


def attention_head_loop_big_negative(attn, x):
    """One head at a time, weights by matrix products, masked with -1e9 and a hand-written stable softmax."""
    B, T, C = x.shape
    H, Q = attn.n_head, C // attn.n_head
    qkv = x @ attn.c_attn.weight.T + attn.c_attn.bias
    outputs = []
    for h in range(H):
        q = qkv[..., h * Q:(h + 1) * Q]
        k = qkv[..., C + h * Q:C + (h + 1) * Q]
        v = qkv[..., 2 * C + h * Q:2 * C + (h + 1) * Q]
        scores = torch.einsum("btq,bsq->bts", q, k) / Q**0.5
        scores = torch.where(mask_tril(T), scores, torch.tensor(-1e9))
        e = torch.exp(scores - scores.max(dim=-1, keepdim=True).values)
        outputs.append((e / e.sum(dim=-1, keepdim=True)) @ v)
    return attn.c_proj(torch.cat(outputs, dim=-1))


# ---------------------------------------------------------------- lab02.attention: wrong


def _attention(attn, x, *, mask="causal", divisor=None, softmax_dim=-1, merge=True, project=True, split=None):
    B, T, C = x.shape
    H = attn.n_head
    q, k, v = attn.c_attn(x).split(C, dim=2)
    q, k, v = (split(t, B, T, H) if split else _heads(t, B, T, H) for t in (q, k, v))
    scores = q @ k.transpose(-2, -1) / (math.sqrt(C // H) if divisor is None else divisor(C, H))
    if mask == "causal":
        scores = scores.masked_fill(~mask_tril(T), float("-inf"))
    elif mask == "transposed":
        scores = scores.masked_fill(~mask_tril(T).T, float("-inf"))
    elif mask == "multiply":
        scores = scores * mask_tril(T)
    elif mask == "no_diagonal":
        scores = scores.masked_fill(~mask_without_diagonal(T), float("-inf"))
    weights = torch.softmax(scores, dim=softmax_dim)
    if mask == "after_softmax":
        weights = weights * mask_tril(T)
    y = weights @ v
    y = y.transpose(1, 2).reshape(B, T, C) if merge else y.reshape(B, T, C)
    return attn.c_proj(y) if project else y


def attention_no_mask(attn, x):
    return _attention(attn, x, mask="none")


def attention_transposed_mask(attn, x):
    return _attention(attn, x, mask="transposed")


def attention_mask_multiplied(attn, x):
    return _attention(attn, x, mask="multiply")


def attention_mask_after_softmax(attn, x):
    return _attention(attn, x, mask="after_softmax")


def attention_diagonal_masked(attn, x):
    return _attention(attn, x, mask="no_diagonal")


def attention_not_scaled(attn, x):
    return _attention(attn, x, divisor=lambda C, H: 1.0)


def attention_scaled_by_head_size(attn, x):
    return _attention(attn, x, divisor=lambda C, H: C // H)


def attention_scaled_by_width(attn, x):
    return _attention(attn, x, divisor=lambda C, H: math.sqrt(C))


def attention_interleaved_heads(attn, x):
    return _attention(attn, x, split=lambda t, B, T, H: t.view(B, T, t.shape[-1] // H, H).permute(0, 3, 1, 2))


def attention_heads_reshaped_directly(attn, x):
    return _attention(attn, x, split=lambda t, B, T, H: t.reshape(B, H, T, t.shape[-1] // H))


def attention_merge_without_transpose(attn, x):
    return _attention(attn, x, merge=False)


def attention_softmax_over_queries(attn, x):
    return _attention(attn, x, softmax_dim=-2)


def attention_softmax_over_heads(attn, x):
    return _attention(attn, x, softmax_dim=1)


def attention_without_projection(attn, x):
    return _attention(attn, x, project=False)


def attention_four_heads_assumed(attn, x):
    B, T, C = x.shape
    q, k, v = (_heads(t, B, T, 4) for t in attn.c_attn(x).split(C, dim=2))
    scores = (q @ k.transpose(-2, -1) / math.sqrt(C // 4)).masked_fill(~mask_tril(T), float("-inf"))
    return attn.c_proj((torch.softmax(scores, dim=-1) @ v).transpose(1, 2).reshape(B, T, C))


def attention_calls_the_module(attn, x):
    return attn(x)


def attention_normalises_x_in_place(attn, x):
    x /= x.norm(dim=-1, keepdim=True) / math.sqrt(x.shape[-1])
    return attention_reference(attn, x)


def attention_unstable_softmax(attn, x):
    B, T, C = x.shape
    H = attn.n_head
    q, k, v = (_heads(t, B, T, H) for t in attn.c_attn(x).split(C, dim=2))
    scores = (q @ k.transpose(-2, -1) / math.sqrt(C // H)).masked_fill(~mask_tril(T), float("-inf"))
    e = scores.exp()
    return attn.c_proj(((e / e.sum(dim=-1, keepdim=True)) @ v).transpose(1, 2).reshape(B, T, C))


def attention_fixed_length_mask(attn, x):
    B, T, C = x.shape
    H = attn.n_head
    q, k, v = (_heads(t, B, T, H) for t in attn.c_attn(x).split(C, dim=2))
    scores = (q @ k.transpose(-2, -1) / math.sqrt(C // H)).masked_fill(~mask_tril(6), float("-inf"))
    return attn.c_proj((torch.softmax(scores, dim=-1) @ v).transpose(1, 2).reshape(B, T, C))


CASES = {
    "lab02.causal_mask": Cases(
        correct=[mask_tril, mask_compare_positions, mask_loops, mask_not_future],
        wrong=[
            Wrong(mask_inverted, "inverted"),
            Wrong(mask_transposed, "transposed"),
            Wrong(mask_without_diagonal, "the diagonal is masked"),
            Wrong(mask_float_ones, "dtype torch.float32"),
            Wrong(mask_additive, "additive float mask"),
            Wrong(mask_numpy, "return a torch tensor"),
            Wrong(mask_fixed_size, "causal_mask(1) has shape (5, 5)"),
            Wrong(mask_one_step_ahead, "position 0 may attend to position 1"),
            Wrong(mask_without_return, "forget the `return`"),
            Wrong(mask_four_dimensional, "has shape (1, 1, 5, 5)"),
            Wrong(mask_sliding_window, "may not attend to position"),
        ],
    ),
    "lab02.attention": Cases(
        correct=[attention_reference, attention_sdpa, attention_head_loop_big_negative],
        wrong=[
            Wrong(attention_no_mask, "no causal mask is applied"),
            Wrong(attention_transposed_mask, "it is transposed"),
            Wrong(attention_mask_multiplied, "multiplied by the mask"),
            Wrong(attention_mask_after_softmax, "applied after the softmax"),
            Wrong(attention_diagonal_masked, "the diagonal is masked"),
            Wrong(attention_not_scaled, "the scores are not scaled"),
            Wrong(attention_scaled_by_head_size, "divided by the head size"),
            Wrong(attention_scaled_by_width, "divided by sqrt(n_embd)"),
            Wrong(attention_interleaved_heads, "you interleaved them"),
            Wrong(attention_heads_reshaped_directly, "reshaping (B, T, C) straight to (B, H, T, Q)"),
            Wrong(attention_merge_without_transpose, "wrong head merge"),
            Wrong(attention_softmax_over_queries, "softmax over the wrong axis: normalise"),
            Wrong(attention_softmax_over_heads, "wrong axis (the heads)"),
            Wrong(attention_without_projection, "the output projection is missing"),
            Wrong(attention_four_heads_assumed, "wrong for 1 head"),
            Wrong(attention_calls_the_module, "called attn(x) itself"),
            Wrong(attention_normalises_x_in_place, "changed its input x"),
            Wrong(attention_unstable_softmax, "overflows"),
            Wrong(attention_fixed_length_mask, "raised RuntimeError"),
        ],
    ),
}


# ------------------------------------------------- wrong answers named from the symptom (issue 19)


def attention_scaled_by_sqrt_twice_head(attn, x):
    """Divides by sqrt(2 Q): a scale no listed mistake has."""
    return _attention(attn, x, divisor=lambda C, H: math.sqrt(2 * C // H))


def attention_weights_squared(attn, x):
    """Squares the softmax weights and renormalises: sharper than softmax."""
    B, T, C = x.shape
    H = attn.n_head
    q, k, v = (_heads(t, B, T, H) for t in attn.c_attn(x).split(C, dim=2))
    scores = (q @ k.transpose(-2, -1) / math.sqrt(C // H)).masked_fill(~mask_tril(T), float("-inf"))
    weights = torch.softmax(scores, dim=-1) ** 2
    y = (weights / weights.sum(dim=-1, keepdim=True)) @ v
    return attn.c_proj(y.transpose(1, 2).reshape(B, T, C))


def attention_keys_as_values(attn, x):
    """Weights the keys instead of the values (q, k, k)."""
    B, T, C = x.shape
    H = attn.n_head
    q, k, _ = (_heads(t, B, T, H) for t in attn.c_attn(x).split(C, dim=2))
    scores = (q @ k.transpose(-2, -1) / math.sqrt(C // H)).masked_fill(~mask_tril(T), float("-inf"))
    y = (torch.softmax(scores, dim=-1) @ k).transpose(1, 2).reshape(B, T, C)
    return attn.c_proj(y)


def attention_projected_twice(attn, x):
    return attn.c_proj(attention_reference(attn, x))


CASES["lab02.attention"].wrong.extend([
    Wrong(attention_scaled_by_sqrt_twice_head, "The weights over the earlier positions are wrong"),
    Wrong(attention_weights_squared, "The weights over the earlier positions are wrong"),
    Wrong(attention_keys_as_values, "position 0 is wrong"),
    Wrong(attention_projected_twice, "position 0 is wrong"),
])
