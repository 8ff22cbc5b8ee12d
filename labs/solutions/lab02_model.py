"""Reference solutions of lab 2 (``labs/lab02_model.ipynb``); see ``lab00_first_run.py``."""

import math

import torch


def causal_mask(T):
    return torch.tril(torch.ones(T, T, dtype=torch.bool))  # (T, T): row = query, column = key


def attention_forward(attn, x):
    B, T, C = x.shape
    H = attn.n_head
    q, k, v = attn.c_attn(x).split(C, dim=2)  # each (B, T, C)
    q = q.view(B, T, H, C // H).transpose(1, 2)  # (B, H, T, Q)
    k = k.view(B, T, H, C // H).transpose(1, 2)  # (B, H, T, Q)
    v = v.view(B, T, H, C // H).transpose(1, 2)  # (B, H, T, Q)
    scores = q @ k.transpose(-2, -1) / math.sqrt(C // H)  # (B, H, T, T)
    scores = scores.masked_fill(~causal_mask(T), float("-inf"))
    weights = torch.softmax(scores, dim=-1)  # (B, H, T, T), rows sum to 1
    y = (weights @ v).transpose(1, 2).reshape(B, T, C)  # (B, T, C)
    return attn.c_proj(y)
