"""Answers to lab 6: a LoRA layer by hand, what each fine-tuning strategy trains, SFT labels."""

from __future__ import annotations

import copy
import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from tests.checker_cases import Cases, Wrong
from utils import lora

# ---------------------------------------------------------------- lab06.lora_linear: right


class ParameterLoRA(nn.Module):
    """The reference: A and B as parameters, matmuls."""

    def __init__(self, base, rank, alpha, init_b=nn.init.zeros_, init_a=None, scale=None):
        super().__init__()
        self.base = base
        base.requires_grad_(False)
        self.scale = alpha / rank if scale is None else scale
        self.lora_A = nn.Parameter(torch.empty(rank, base.in_features))
        (init_a or (lambda a: nn.init.kaiming_uniform_(a, a=math.sqrt(5))))(self.lora_A)
        self.lora_B = nn.Parameter(torch.empty(base.out_features, rank))
        init_b(self.lora_B)

    def forward(self, x):
        return self.base(x) + self.scale * (x @ self.lora_A.T @ self.lora_B.T)

    def delta(self):
        return self.scale * self.lora_B @ self.lora_A  # (out, in)

    @torch.no_grad()
    def merge(self):
        merged = nn.Linear(self.base.in_features, self.base.out_features)
        merged.weight.copy_(self.base.weight + self.delta())
        merged.bias.copy_(self.base.bias)
        return merged


class SubLayerLoRA(nn.Module):
    """peft's layout: A and B as bias-free nn.Linear sub-layers; einsum for the merge."""

    def __init__(self, base, rank, alpha):
        super().__init__()
        self.base, self.scale = base, alpha / rank
        for p in base.parameters():
            p.requires_grad = False
        self.lora_A = nn.Linear(base.in_features, rank, bias=False)  # weight (r, in), Kaiming
        self.lora_B = nn.Linear(rank, base.out_features, bias=False)
        nn.init.zeros_(self.lora_B.weight)

    def forward(self, x):
        return self.base(x) + self.lora_B(self.lora_A(x)) * self.scale

    def merge(self):
        delta = torch.einsum("or,ri->oi", self.lora_B.weight, self.lora_A.weight).detach()
        merged = copy.deepcopy(self.base)
        merged.weight = nn.Parameter(self.base.weight.detach() + self.scale * delta)
        return merged


def factory_with_normal_init(base, rank, alpha):
    """A function, not a class: a frozen copy of the base, normal A, F.linear and addmm."""

    class Adapted(nn.Module):
        def __init__(self):
            super().__init__()
            self.frozen = copy.deepcopy(base).requires_grad_(False)
            self.lora_A = nn.Parameter(torch.randn(rank, base.in_features) / base.in_features**0.5)
            self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank))

        def forward(self, x):
            update = F.linear(F.linear(x, self.lora_A), self.lora_B)
            return self.frozen(x) + update * (alpha / rank)

        def merge(self):
            with torch.no_grad():
                weight = torch.addmm(self.frozen.weight, self.lora_B, self.lora_A, alpha=alpha / rank)
                merged = nn.Linear(base.in_features, base.out_features)
                merged.load_state_dict({"weight": weight, "bias": self.frozen.bias})
            return merged

    return Adapted()


class DropoutZeroLoRA(ParameterLoRA):
    """peft's layout with lora_dropout = 0: an nn.Dropout(0.0) on the low-rank branch's input, the identity."""

    def __init__(self, base, rank, alpha):
        super().__init__(base, rank, alpha)
        self.lora_dropout = nn.Dropout(p=0.0)

    def forward(self, x):
        return self.base(x) + self.scale * (self.lora_dropout(x) @ self.lora_A.T @ self.lora_B.T)


# ---------------------------------------------------------------- lab06.lora_linear: wrong


def random_b(base, rank, alpha):
    return ParameterLoRA(base, rank, alpha, init_b=nn.init.normal_)


def zero_a_too(base, rank, alpha):
    return ParameterLoRA(base, rank, alpha, init_a=nn.init.zeros_)


def zero_a_random_b(base, rank, alpha):
    """The initialisations swapped: A zero, B random. B A = 0, so the first output is the base's, but B's
    gradient (through x A^T = 0) is zero at the first step; A's is not."""
    return ParameterLoRA(base, rank, alpha, init_a=nn.init.zeros_, init_b=nn.init.normal_)


class DropoutLoRA(DropoutZeroLoRA):
    """peft's lora_dropout = 0.1 on the branch's input: right in eval mode only, and the lab uses (and
    merges) the layer in training mode."""

    def __init__(self, base, rank, alpha):
        super().__init__(base, rank, alpha)
        self.lora_dropout = nn.Dropout(p=0.1)


class DropoutOnTheWholeInput(DropoutLoRA):
    """The dropout on the input of both paths: the base layer no longer computes what it did."""

    def forward(self, x):
        x = self.lora_dropout(x)
        return self.base(x) + self.scale * (x @ self.lora_A.T @ self.lora_B.T)


class DropoutEvenInEval(ParameterLoRA):
    """F.dropout with training=True: random in eval mode too."""

    def forward(self, x):
        dropped = F.dropout(x, p=0.1, training=True)
        return self.base(x) + self.scale * (dropped @ self.lora_A.T @ self.lora_B.T)


def forgets_the_scale(base, rank, alpha):
    return ParameterLoRA(base, rank, alpha, scale=1.0)


def inverted_scale(base, rank, alpha):
    return ParameterLoRA(base, rank, alpha, scale=rank / alpha)


def integer_division_scale(base, rank, alpha):
    return ParameterLoRA(base, rank, alpha, scale=alpha // rank)


def alpha_not_divided(base, rank, alpha):
    return ParameterLoRA(base, rank, alpha, scale=alpha)


def base_not_frozen(base, rank, alpha):
    layer = ParameterLoRA(base, rank, alpha)
    base.requires_grad_(True)
    return layer


def bias_left_trainable(base, rank, alpha):
    """Froze the weight only."""
    layer = ParameterLoRA(base, rank, alpha)
    base.bias.requires_grad_(True)
    return layer


class AdaptsTheBiasToo(ParameterLoRA):
    """An extra trainable bias beside A and B."""

    def __init__(self, base, rank, alpha):
        super().__init__(base, rank, alpha)
        self.lora_bias = nn.Parameter(torch.zeros(base.out_features))

    def forward(self, x):
        return super().forward(x) + self.lora_bias


class ForgetsTheBaseBias(ParameterLoRA):
    def forward(self, x):
        return F.linear(x, self.base.weight) + self.scale * (x @ self.lora_A.T @ self.lora_B.T)


class MergesInPlace(ParameterLoRA):
    @torch.no_grad()
    def merge(self):
        self.base.weight += self.delta()
        return self.base


class MergeWithoutScale(ParameterLoRA):
    @torch.no_grad()
    def merge(self):
        merged = copy.deepcopy(self.base)
        merged.weight += self.lora_B @ self.lora_A
        return merged


class MergeReturnsTheBase(ParameterLoRA):
    def merge(self):
        return copy.deepcopy(self.base)


class MergeDropsTheBias(ParameterLoRA):
    @torch.no_grad()
    def merge(self):
        merged = nn.Linear(self.base.in_features, self.base.out_features, bias=False)
        merged.weight.copy_(self.base.weight + self.delta())
        return merged


class TransposedA(ParameterLoRA):
    def __init__(self, base, rank, alpha):
        super().__init__(base, rank, alpha)
        self.lora_A = nn.Parameter(self.lora_A.detach().T.clone())  # (in, r)

    def forward(self, x):
        return self.base(x) + self.scale * (x @ self.lora_A @ self.lora_B.T)


class BuiltOnTheBooks(lora.LoRALinear):
    """Subclasses the book's layer instead of writing one."""


def wraps_the_books(base, rank, alpha):
    return lora.LoRALinear(base, rank, alpha)


# ---------------------------------------------------------------- lab06.freeze_for_strategy: right


def _check_strategy(strategy):
    if strategy not in ("frozen", "full", "lora"):
        raise ValueError(f"unknown strategy {strategy!r}")


def freeze_with_apply_lora(model, strategy):
    _check_strategy(strategy)
    if strategy == "lora":
        lora.apply_lora(model, ["c_attn", "attn.c_proj"], rank=8, alpha=16.0, keep_trainable=("head.",))
        return model
    for p in model.parameters():
        p.requires_grad_(strategy == "full")
    model.head.requires_grad_(True)
    return model


def freeze_by_name_with_own_adapters(model, strategy):
    _check_strategy(strategy)
    for name, p in model.named_parameters():
        p.requires_grad = strategy == "full" or name.startswith("head.")
    if strategy == "lora":
        for block in model["body"].transformer.h:
            block.attn.c_attn = ParameterLoRA(block.attn.c_attn, 8, 16)
            block.attn.c_proj = ParameterLoRA(block.attn.c_proj, 8, 16)
    return model


def freeze_modules_then_adapt_the_body(model, strategy):
    _check_strategy(strategy)
    model.body.requires_grad_(strategy == "full")
    model.head.requires_grad_(True)
    if strategy == "lora":
        lora.apply_lora(model.body, ["attn.c_attn", "attn.c_proj"], rank=8, alpha=16)
    return model


# ---------------------------------------------------------------- lab06.freeze_for_strategy: wrong


def head_frozen_too(model, strategy):
    _check_strategy(strategy)
    model.requires_grad_(strategy == "full")
    if strategy == "lora":
        lora.apply_lora(model, ["c_attn", "attn.c_proj"], 8, 16.0)  # no keep_trainable: head frozen
    return model


def freezes_nothing(model, strategy):
    _check_strategy(strategy)
    if strategy == "lora":
        return freeze_with_apply_lora(model, strategy)
    return model


def eval_instead_of_freezing(model, strategy):
    _check_strategy(strategy)
    if strategy == "frozen":
        model.body.eval()
        return model
    return freeze_with_apply_lora(model, strategy)


def freeze_selected(model, strategy, frozen):
    """"frozen" freezes only what ``frozen(name, module)`` selects; the other strategies are right."""
    if strategy != "frozen":
        return freeze_with_apply_lora(model, strategy)
    for name, module in model.body.named_modules():
        if frozen(name, module):
            module.requires_grad_(False)
    return model


def forgets_the_embeddings(model, strategy):
    return freeze_selected(model, strategy, lambda name, m: name.startswith(("transformer.h", "transformer.ln_f")))


def forgets_the_layer_norms(model, strategy):
    return freeze_selected(model, strategy, lambda name, m: isinstance(m, nn.Linear | nn.Embedding))


def freezes_only_linears(model, strategy):
    return freeze_selected(model, strategy, lambda name, m: isinstance(m, nn.Linear))


def freezes_only_weights(model, strategy):
    if strategy != "frozen":
        return freeze_with_apply_lora(model, strategy)
    for name, p in model.body.named_parameters():
        p.requires_grad_(not name.endswith("weight"))
    return model


def full_freezes_the_body(model, strategy):
    return freeze_with_apply_lora(model, "frozen" if strategy == "full" else strategy)


def lora_on_every_projection(model, strategy):
    if strategy != "lora":
        return freeze_with_apply_lora(model, strategy)
    lora.apply_lora(model, ["c_attn", "c_proj"], 8, 16.0, keep_trainable=("head.",))  # MLP's c_proj too
    return model


def lora_of_rank_4(model, strategy):
    if strategy != "lora":
        return freeze_with_apply_lora(model, strategy)
    lora.apply_lora(model, ["c_attn", "attn.c_proj"], 4, 16.0, keep_trainable=("head.",))
    return model


def lora_with_alpha_equal_to_rank(model, strategy):
    if strategy != "lora":
        return freeze_with_apply_lora(model, strategy)
    lora.apply_lora(model, ["c_attn", "attn.c_proj"], 8, 8.0, keep_trainable=("head.",))
    return model


def lora_on_c_attn_only(model, strategy):
    if strategy != "lora":
        return freeze_with_apply_lora(model, strategy)
    lora.apply_lora(model, ["c_attn"], 8, 16.0, keep_trainable=("head.",))
    return model


def lora_without_freezing(model, strategy):
    if strategy != "lora":
        return freeze_with_apply_lora(model, strategy)
    for block in model.body.transformer.h:
        block.attn.c_attn = ParameterLoRA(block.attn.c_attn, 8, 16.0)
        block.attn.c_proj = ParameterLoRA(block.attn.c_proj, 8, 16.0)
    for p in model.body.parameters():  # meant to unfreeze the adapters; unfreezes everything
        p.requires_grad_(True)
    return model


def lora_with_random_b(model, strategy):
    if strategy != "lora":
        return freeze_with_apply_lora(model, strategy)
    model.requires_grad_(False)
    model.head.requires_grad_(True)
    for block in model.body.transformer.h:
        block.attn.c_attn = random_b(block.attn.c_attn, 8, 16.0)
        block.attn.c_proj = random_b(block.attn.c_proj, 8, 16.0)
    return model


def accepts_any_strategy(model, strategy):
    return freeze_with_apply_lora(model, strategy if strategy in ("full", "lora") else "frozen")


def forgets_to_return(model, strategy):
    freeze_with_apply_lora(model, strategy)


# ---------------------------------------------------------------- lab06.sft_labels: right


def labels_by_lists(prompt_ids, answer_ids, length, pad_id):
    sequence = prompt_ids + answer_ids
    padding = length - len(sequence) + 1
    labels = [-100] * (len(prompt_ids) - 1) + answer_ids + [-100] * padding
    return torch.tensor(sequence[:-1] + [pad_id] * padding), torch.tensor(labels)


def labels_by_shifting_a_tensor(prompt_ids, answer_ids, length, pad_id):
    """Inputs keep the last answer token (its label is -100, so it is never scored)."""
    n, p = len(prompt_ids) + len(answer_ids), len(prompt_ids)
    inputs = torch.full((length,), pad_id)
    inputs[:n] = torch.tensor(prompt_ids + answer_ids)
    targets = torch.full((length,), -100)
    targets[:n - 1] = inputs[1:n]
    targets[:p - 1] = -100
    return inputs, targets


def labels_by_numpy(prompt_ids, answer_ids, length, pad_id):
    sequence = np.array(prompt_ids + answer_ids)
    inputs = np.full(length, pad_id)
    inputs[:len(sequence) - 1] = sequence[:-1]
    labels = np.full(length, -100)
    for t in range(len(sequence) - 1):
        if t + 1 >= len(prompt_ids):
            labels[t] = sequence[t + 1]
    return inputs, labels


# ---------------------------------------------------------------- lab06.sft_labels: wrong


def _labels(prompt_ids, answer_ids, length, pad_id, first_scored, masked=-100, pad_label=-100):
    """Targets t + 1 >= first_scored kept; the others ``masked``; padding ``pad_label``."""
    sequence = prompt_ids + answer_ids
    inputs = sequence[:-1] + [pad_id] * (length - len(sequence) + 1)
    labels = [pad_label] * length
    for t in range(len(sequence) - 1):
        labels[t] = sequence[t + 1] if t + 1 >= first_scored else masked
    return inputs, labels


def prompt_not_masked(prompt_ids, answer_ids, length, pad_id):
    return _labels(prompt_ids, answer_ids, length, pad_id, first_scored=0)


def first_answer_masked(prompt_ids, answer_ids, length, pad_id):
    return _labels(prompt_ids, answer_ids, length, pad_id, first_scored=len(prompt_ids) + 1)


def last_prompt_kept(prompt_ids, answer_ids, length, pad_id):
    return _labels(prompt_ids, answer_ids, length, pad_id, first_scored=len(prompt_ids) - 1)


def masks_with_zero(prompt_ids, answer_ids, length, pad_id):
    return _labels(prompt_ids, answer_ids, length, pad_id, len(prompt_ids), masked=0, pad_label=0)


def padding_not_masked(prompt_ids, answer_ids, length, pad_id):
    return _labels(prompt_ids, answer_ids, length, pad_id, len(prompt_ids), pad_label=pad_id)


def answer_masked(prompt_ids, answer_ids, length, pad_id):
    inputs, labels = _labels(prompt_ids, answer_ids, length, pad_id, first_scored=0)
    return inputs, [v if t + 1 < len(prompt_ids) else -100 for t, v in enumerate(labels)]


def not_shifted(prompt_ids, answer_ids, length, pad_id):
    sequence = prompt_ids + answer_ids
    padding = [pad_id] * (length - len(sequence))
    labels = [-100] * len(prompt_ids) + answer_ids + [-100] * len(padding)
    return sequence + padding, labels


def pads_inputs_with_minus_100(prompt_ids, answer_ids, length, pad_id):
    inputs, labels = labels_by_lists(prompt_ids, answer_ids, length, pad_id)
    n = len(prompt_ids) + len(answer_ids)
    inputs[n - 1:] = -100
    return inputs, labels


def extends_the_prompt_in_place(prompt_ids, answer_ids, length, pad_id):
    p = len(prompt_ids)
    prompt_ids += answer_ids
    padding = length - len(prompt_ids) + 1
    return prompt_ids[:-1] + [pad_id] * padding, [-100] * (p - 1) + answer_ids + [-100] * padding


def returns_them_swapped(prompt_ids, answer_ids, length, pad_id):
    inputs, labels = labels_by_lists(prompt_ids, answer_ids, length, pad_id)
    return labels, inputs


def float_labels(prompt_ids, answer_ids, length, pad_id):
    inputs, labels = labels_by_lists(prompt_ids, answer_ids, length, pad_id)
    return inputs, labels.float()


def not_padded(prompt_ids, answer_ids, length, pad_id):
    sequence = prompt_ids + answer_ids
    return sequence[:-1], [-100] * (len(prompt_ids) - 1) + answer_ids


CASES = {
    "lab06.lora_linear": Cases(
        correct=[ParameterLoRA, SubLayerLoRA, factory_with_normal_init, DropoutZeroLoRA],
        wrong=[
            Wrong(random_b, "lora_B starts random"),
            Wrong(zero_a_too, "lora_A starts at zero as well", forbidden=("A's gradient is not zero",)),
            Wrong(zero_a_random_b, "lora_A starts at zero and lora_B random",
                  forbidden=("and so is A's", "A's gradient is zero")),
            Wrong(DropoutLoRA, "on the low-rank branch's input, as peft's lora_dropout"),
            Wrong(DropoutOnTheWholeInput, "on the base layer's input"),
            Wrong(DropoutEvenInEval, "a different output at each call"),
            Wrong(forgets_the_scale, "the scale alpha/rank is missing"),
            Wrong(inverted_scale, "the scale is inverted"),
            Wrong(integer_division_scale, "integer division"),
            Wrong(alpha_not_divided, "multiplied by alpha but not divided by the rank"),
            Wrong(base_not_frozen, "the base layer is not frozen"),
            Wrong(bias_left_trainable, "a bias is trainable"),
            Wrong(AdaptsTheBiasToo, "a bias is trainable"),
            Wrong(ForgetsTheBaseBias, "bias is missing from the output"),
            Wrong(MergesInPlace, "merge() changed the adapted layer in place"),
            Wrong(MergeWithoutScale, "merge() leaves out alpha / rank"),
            Wrong(MergeReturnsTheBase, "without the update B A"),
            Wrong(MergeDropsTheBias, "lost the base layer's bias"),
            Wrong(TransposedA, "lora_A has shape"),
            Wrong(BuiltOnTheBooks, "utils.lora.LoRALinear"),
            Wrong(wraps_the_books, "utils.lora.LoRALinear"),
        ],
    ),
    "lab06.freeze_for_strategy": Cases(
        correct=[freeze_with_apply_lora, freeze_by_name_with_own_adapters, freeze_modules_then_adapt_the_body],
        wrong=[
            Wrong(head_frozen_too, "the head is frozen too"),
            Wrong(freezes_nothing, "strategy 'frozen': the body is left trainable"),
            Wrong(eval_instead_of_freezing, "strategy 'frozen': the body is left trainable: set requires_grad to False on every "
                                            "parameter of model.body; eval() freezes nothing"),
            Wrong(forgets_the_embeddings, "the token and position embeddings (wte, wpe) are still trainable"),
            Wrong(forgets_the_layer_norms, "the LayerNorm parameters (ln_1, ln_2, ln_f) are still trainable"),
            Wrong(freezes_only_linears, "only the nn.Linear layers were frozen"),
            Wrong(freezes_only_weights, "the biases of the body are still trainable"),
            Wrong(full_freezes_the_body, "full fine-tuning trains every parameter"),
            Wrong(lora_on_every_projection, "adapters on layers other than the attention's c_attn and c_proj"),
            Wrong(lora_of_rank_4, "check the rank"),
            Wrong(lora_with_alpha_equal_to_rank, "check the alpha"),
            Wrong(lora_on_c_attn_only, "no adapter on ['h.0.attn.c_proj', 'h.1.attn.c_proj']"),
            Wrong(lora_without_freezing, "strategy 'lora': the body is left trainable"),
            Wrong(lora_with_random_b, "changed the model's output at the start"),
            Wrong(accepts_any_strategy, "an unknown strategy must raise a ValueError"),
            Wrong(forgets_to_return, "must return the model it was given"),
        ],
    ),
    "lab06.sft_labels": Cases(
        correct=[labels_by_lists, labels_by_shifting_a_tensor, labels_by_numpy],
        wrong=[
            Wrong(prompt_not_masked, "the prompt is not masked"),
            Wrong(first_answer_masked, "the first answer token's target is masked too"),
            Wrong(last_prompt_kept, "the last prompt token is still a target"),
            Wrong(masks_with_zero, "masked with 0 instead of -100"),
            Wrong(padding_not_masked, "the padding is not masked"),
            Wrong(answer_masked, "the answer is masked instead of the prompt"),
            Wrong(not_shifted, "the labels are not shifted"),
            Wrong(pads_inputs_with_minus_100, "the inputs are padded with -100"),
            Wrong(extends_the_prompt_in_place, "changed the prompt or answer list"),
            Wrong(returns_them_swapped, "the two are swapped"),
            Wrong(float_labels, "holds floats"),
            Wrong(not_padded, "padded to length"),
        ],
    ),
}
