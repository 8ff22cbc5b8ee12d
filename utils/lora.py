"""LoRA (low-rank adaptation, Hu et al. 2021) written from scratch: a frozen ``nn.Linear`` plus a trainable
low-rank update.

A linear layer computes ``y = x W^T + b`` with W of shape (out, in). LoRA freezes W and b and learns
``delta W = (alpha / r) * B A`` with A (r, in) and B (out, r), r much smaller than in and out:

    y = x W^T + b + (alpha / r) * (x A^T) B^T        x (..., in) -> x A^T (..., r) -> (..., out)

so the layer trains ``r * (in + out)`` numbers instead of ``in * out``. B starts at zero, hence
``delta W = 0`` and the adapted model's first output is exactly the pretrained one; A starts random (B's
gradient is ``x A^T`` times the output gradient, so a zero A as well would leave both stuck at zero). A is
initialised as ``nn.Linear`` initialises its weight (Kaiming-uniform, ``a = sqrt(5)``: uniform in
``+-1/sqrt(in)``), as Microsoft's reference ``loralib`` and ``peft`` do by default, so ``x A^T`` has the scale
of a freshly initialised layer's output whatever the width. ``alpha / r`` keeps the update's size roughly
independent of the rank, so changing r does not mean retuning the learning rate.

After training, ``merge()`` folds the update into an ordinary ``nn.Linear`` (``W + (alpha / r) B A``): the
same outputs, no extra cost at inference. No dropout on the LoRA branch (peft's ``lora_dropout=0``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F


def lora_parameter_count(in_features: int, out_features: int, rank: int) -> int:
    """Trainable numbers of one LoRA adapter, by formula: A (rank, in) + B (out, rank) = rank * (in + out)."""
    return rank * (in_features + out_features)


class LoRALinear(nn.Module):
    """``base(x) + (alpha / rank) * x A^T B^T``: a frozen ``nn.Linear`` (weight and bias) and a trainable
    rank-``rank`` update. x (..., in) -> (..., out). ``lora_A`` (rank, in), ``lora_B`` (out, rank) = 0."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float) -> None:
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise TypeError(f"LoRALinear adapts an nn.Linear, got {type(base).__name__}")
        if rank < 1:
            raise ValueError(f"rank must be a positive integer, got {rank}")
        self.base = base
        for p in base.parameters():  # the pretrained weight and bias never change
            p.requires_grad_(False)
        self.rank, self.alpha = rank, alpha
        self.scale = alpha / rank
        weight = base.weight
        self.lora_A = nn.Parameter(torch.empty(rank, base.in_features, device=weight.device, dtype=weight.dtype))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank, device=weight.device, dtype=weight.dtype))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # as nn.Linear.reset_parameters does

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        down = F.linear(x, self.lora_A)  # (..., rank)
        return self.base(x) + self.scale * F.linear(down, self.lora_B)  # (..., out)

    def delta_weight(self) -> torch.Tensor:
        """The update to the base weight, ``(alpha / rank) * B @ A``: (out, in)."""
        return self.scale * (self.lora_B @ self.lora_A)

    @torch.no_grad()
    def merged_weight(self) -> torch.Tensor:
        """``W + (alpha / rank) * B @ A``: (out, in), a new tensor (the base weight is left as it is)."""
        return self.base.weight + self.delta_weight()

    @torch.no_grad()
    def merge(self) -> nn.Linear:
        """A plain ``nn.Linear`` computing what this layer computes (to float rounding): merged weight, the
        base's bias copied. Its parameters are new tensors and trainable again."""
        base = self.base
        merged = nn.Linear(base.in_features, base.out_features, bias=base.bias is not None,
                           device=base.weight.device, dtype=base.weight.dtype)
        merged.weight.copy_(self.merged_weight())
        if base.bias is not None:
            merged.bias.copy_(base.bias)
        return merged

    def extra_repr(self) -> str:
        return f"rank={self.rank}, alpha={self.alpha}, scale={self.scale:g}"


def _matches(module_name: str, target: str) -> bool:
    """``target`` names the module itself or a suffix of its dotted name ("c_attn", "attn.c_proj")."""
    return module_name == target or module_name.endswith("." + target)


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, module)


def apply_lora(model: nn.Module, target_names: Sequence[str], rank: int, alpha: float,
               keep_trainable: Sequence[str] = ()) -> list[str]:
    """Replace, in place, every ``nn.Linear`` whose dotted name is or ends with one of ``target_names`` by a
    ``LoRALinear``; freeze every other parameter except those whose name starts with a prefix in
    ``keep_trainable`` (e.g. ``("head.",)`` for a new classification head). Returns the adapted names.

    In ``utils.gpt.GPT``, ``"c_attn"`` names the query/key/value projection of every block (C -> 3C) and
    ``"attn.c_proj"`` the attention output (C -> C); a bare ``"c_proj"`` would also take the MLP's.
    """
    names = [name for name, module in model.named_modules()
             if isinstance(module, nn.Linear) and any(_matches(name, t) for t in target_names)]
    missing = [t for t in target_names if not any(_matches(name, t) for name in names)]
    if missing:
        linears = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
        raise ValueError(f"no nn.Linear named {missing} in the model; its linear layers are {linears}")
    for p in model.parameters():
        p.requires_grad_(False)
    for name in names:
        _set_submodule(model, name, LoRALinear(model.get_submodule(name), rank, alpha))
    _unfreeze(model, keep_trainable)
    return names


def _unfreeze(model: nn.Module, prefixes: Sequence[str]) -> None:
    """Make trainable every parameter whose name starts with one of ``prefixes``. Tied parameters are
    listed under each of their names, so a prefix finds a shared matrix under either."""
    named = list(model.named_parameters(remove_duplicate=False))
    for prefix in prefixes:
        chosen = [p for name, p in named if name.startswith(prefix)]
        if not chosen:
            raise ValueError(f"keep_trainable prefix {prefix!r} matches no parameter of the model")
        for p in chosen:
            p.requires_grad_(True)


def merge_lora(model: nn.Module) -> nn.Module:
    """Replace, in place, every ``LoRALinear`` in ``model`` by its ``merge()``: an ordinary model again."""
    for name in [n for n, m in model.named_modules() if isinstance(m, LoRALinear)]:
        _set_submodule(model, name, model.get_submodule(name).merge())
    return model


def trainable_parameter_count(model: nn.Module) -> int:
    """Numbers the optimizer would update: parameters with ``requires_grad`` (a tied matrix counted once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
