"""Reference solutions of lab 5 (``labs/lab05_pretraining.ipynb``); see ``lab00_first_run.py``."""

import torch

from utils import hooks


def next_token_probs(logits, temperature, top_k):
    if temperature == 0:  # greedy: all the probability on the first largest logit
        best = logits.argmax(dim=-1)  # (B,)
        return torch.nn.functional.one_hot(best, logits.shape[-1]).to(logits.dtype)
    scaled = logits / temperature  # a new tensor: the caller's logits stay as they are
    if top_k is not None:
        kth = torch.topk(scaled, min(top_k, scaled.shape[-1])).values[:, -1:]  # (B, 1)
        scaled = scaled.masked_fill(scaled < kth, float("-inf"))  # ties with the k-th stay
    return torch.softmax(scaled, dim=-1)  # (B, V)


def redone_steps(max_steps, checkpoint_every, steps_done):
    saved = [s for s in range(steps_done) if hooks.due(checkpoint_every, s, max_steps - 1)]
    resumes_at = saved[-1] + 1 if saved else 0  # a checkpoint after step s records s + 1
    return list(range(resumes_at, steps_done))
