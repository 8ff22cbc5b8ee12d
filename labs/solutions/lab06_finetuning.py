"""Reference solutions of lab 6 (``labs/lab06_finetuning.ipynb``); see ``lab00_first_run.py``."""

import math

import torch
import torch.nn as nn

from utils import lora


class LoRALayer(nn.Module):
    def __init__(self, base, rank, alpha):
        super().__init__()
        self.base = base
        for parameter in base.parameters():  # the pretrained weight and bias stay as they are
            parameter.requires_grad_(False)
        self.scale = alpha / rank
        self.lora_A = nn.Parameter(torch.empty(rank, base.in_features))  # (r, in)
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # random, as nn.Linear's weight
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank))  # (out, r): B A = 0 at first

    def forward(self, x):  # (..., in) -> (..., out)
        return self.base(x) + self.scale * (x @ self.lora_A.T @ self.lora_B.T)

    @torch.no_grad()
    def merge(self):
        base = self.base
        merged = nn.Linear(base.in_features, base.out_features, bias=base.bias is not None)
        merged.weight.copy_(base.weight + self.scale * self.lora_B @ self.lora_A)  # (out, in)
        if base.bias is not None:
            merged.bias.copy_(base.bias)
        return merged


def freeze_for(model, strategy):
    if strategy not in ("frozen", "full", "lora"):
        raise ValueError(f"unknown strategy {strategy!r}: use 'frozen', 'full' or 'lora'")
    if strategy == "lora":  # freezes everything but the adapters and the head
        targets = ["attn.c_attn", "attn.c_proj"]  # a bare "c_proj" would take the MLP's too
        lora.apply_lora(model, targets, rank=8, alpha=16.0, keep_trainable=("head.",))
        return model
    for parameter in model.parameters():
        parameter.requires_grad_(strategy == "full")
    for parameter in model.head.parameters():  # a new head starts random: it always trains
        parameter.requires_grad_(True)
    return model


def sft_labels(prompt_ids, answer_ids, length, pad_id):
    sequence = list(prompt_ids) + list(answer_ids)  # P + A tokens
    padding = length - len(sequence) + 1  # the last token is only ever a target
    input_ids = sequence[:-1] + [pad_id] * padding
    # position t predicts token t + 1: the first P - 1 targets are prompt tokens
    labels = [-100] * (len(prompt_ids) - 1) + list(answer_ids) + [-100] * padding
    return torch.tensor(input_ids), torch.tensor(labels)
