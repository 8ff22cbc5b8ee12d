"""``utils.lora``: LoRA from scratch, on the book's GPT and against Hugging Face's ``peft``.

What each test guards against: a random B (first output differs from the base), a forgotten or inverted
``alpha / rank`` (peft's outputs differ), a base left trainable (parameter count, base weights change), a
merge that drops the scale or the bias (merged outputs differ).
"""

from __future__ import annotations

import copy
import importlib

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from utils import lora
from utils.evaluation import lm_loss
from utils.gpt import GPT, GPTConfig
from utils.loop import train_step
from utils.optim import make_adamw
from utils.pretrained import load_pretrained

CONFIG = GPTConfig(vocab_size=65, block_size=16, n_layer=2, n_head=2, n_embd=32)
TARGETS = ("c_attn", "attn.c_proj")  # attention's C -> 3C and C -> C projections, not the MLP's c_proj
RANK, ALPHA = 4, 8.0  # alpha != rank, so an inverted scale (rank / alpha) changes the outputs


def _tokens(seed: int, batch: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, CONFIG.vocab_size, (batch, CONFIG.block_size + 1), generator=generator)
    return ids[:, :-1], ids[:, 1:]  # x, y: (B, T)


def _base_and_adapted() -> tuple[GPT, GPT]:
    torch.manual_seed(0)
    base = GPT(CONFIG).eval()
    adapted = copy.deepcopy(base)
    lora.apply_lora(adapted, TARGETS, rank=RANK, alpha=ALPHA)
    return base, adapted


def _train(model: nn.Module, steps: int) -> None:
    optimizer = make_adamw(model, lr=1e-2)
    for step in range(steps):
        train_step(model, optimizer, [_tokens(100 + step)], lm_loss, grad_clip=1.0)


def test_output_at_initialisation_equals_the_base_model_exactly():
    base, adapted = _base_and_adapted()
    x, _ = _tokens(1)
    with torch.no_grad():
        assert torch.equal(adapted(x)[0], base(x)[0])
    layer = adapted.transformer.h[0].attn.c_attn
    assert isinstance(layer, lora.LoRALinear)
    assert layer.lora_A.abs().sum() > 0  # A random: zero A and zero B would both get zero gradients


def test_a_lora_layer_freezes_its_base_weight_and_bias_through_training():
    torch.manual_seed(0)
    layer = lora.LoRALinear(nn.Linear(32, 48), RANK, ALPHA)
    assert {name for name, p in layer.named_parameters() if p.requires_grad} == {"lora_A", "lora_B"}
    assert lora.trainable_parameter_count(layer) == lora.lora_parameter_count(32, 48, RANK) == 320
    weight, bias = layer.base.weight.detach().clone(), layer.base.bias.detach().clone()
    optimizer = torch.optim.AdamW(layer.parameters(), lr=1e-2)  # handed every parameter, frozen ones too
    x, target = torch.randn(16, 32), torch.randn(16, 48)
    for _ in range(3):
        train_step(layer, optimizer, [(x, target)], lambda m, b: (F.mse_loss(m(b[0]), b[1]), {}))
    assert layer.lora_B.abs().max() > 1e-3
    assert torch.equal(layer.base.weight, weight) and torch.equal(layer.base.bias, bias)


def test_trainable_parameter_count_is_the_formula():
    base, adapted = _base_and_adapted()
    C, L = CONFIG.n_embd, CONFIG.n_layer
    per_block = lora.lora_parameter_count(C, 3 * C, RANK) + lora.lora_parameter_count(C, C, RANK)
    assert per_block == RANK * 6 * C
    assert lora.trainable_parameter_count(adapted) == L * per_block == 1536
    assert lora.trainable_parameter_count(base) == base.num_parameters()  # nothing else touched
    assert adapted.num_parameters() == base.num_parameters() + L * per_block


def test_the_shipped_pretrained_gpt_with_lora_starts_exactly_where_it_was():
    model, _, _ = load_pretrained()
    config = model.config
    x = torch.randint(0, config.vocab_size, (2, config.block_size), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        before = model(x)[0]
        lora.apply_lora(model, TARGETS, rank=RANK, alpha=ALPHA)
        after = model(x)[0]
    assert torch.equal(after, before)
    expected = config.n_layer * RANK * 6 * config.n_embd  # per block: r(C + 3C) + r(C + C)
    assert lora.trainable_parameter_count(model) == expected == 12_288


def test_keep_trainable_unfreezes_a_new_head_and_a_tied_matrix_by_either_name():
    model = nn.ModuleDict({"body": GPT(CONFIG), "head": nn.Linear(CONFIG.n_embd, 10)})
    adapted = lora.apply_lora(model, TARGETS, RANK, ALPHA, keep_trainable=("head.",))
    assert len(adapted) == 2 * CONFIG.n_layer
    head = 10 * CONFIG.n_embd + 10
    assert lora.trainable_parameter_count(model) == CONFIG.n_layer * RANK * 6 * CONFIG.n_embd + head
    lora.apply_lora(tied := GPT(CONFIG), ["c_attn"], RANK, ALPHA, keep_trainable=("lm_head.",))
    assert tied.transformer.wte.weight.requires_grad  # one matrix, named twice


def test_unknown_target_or_prefix_is_a_clear_error():
    with pytest.raises(ValueError, match=r"no nn.Linear named \['q_proj'\].*c_attn"):
        lora.apply_lora(GPT(CONFIG), ["q_proj"], RANK, ALPHA)
    with pytest.raises(ValueError, match="'classifier.' matches no parameter"):
        lora.apply_lora(GPT(CONFIG), ["c_attn"], RANK, ALPHA, keep_trainable=("classifier.",))


def test_training_moves_only_lora_and_merged_outputs_equal_unmerged():
    base, adapted = _base_and_adapted()
    _train(adapted, steps=5)
    pretrained = {name.replace(".base.", "."): tensor for name, tensor in adapted.state_dict().items()
                  if ".lora_" not in name}  # the adapted model's copy of every pretrained tensor
    assert pretrained.keys() == base.state_dict().keys()
    for name, tensor in base.state_dict().items():
        assert torch.equal(pretrained[name], tensor), f"{name} changed although it is frozen"
    layer = adapted.transformer.h[1].attn.c_proj
    assert layer.lora_B.abs().max() > 1e-3  # training moved B off zero: the merge below is not trivial
    x, _ = _tokens(2)
    with torch.no_grad():
        unmerged = adapted(x)[0]
        one = layer.merge()
        assert torch.allclose(one.weight, layer.base.weight + ALPHA / RANK * layer.lora_B @ layer.lora_A)
        merged = lora.merge_lora(adapted)(x)[0]
    assert not any(isinstance(m, lora.LoRALinear) for m in adapted.modules())
    assert torch.allclose(merged, unmerged, atol=1e-5, rtol=1e-5)


@pytest.fixture
def peft(monkeypatch):
    """peft, imported with the Hugging Face hub switched off: the tests build every module locally."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    return importlib.import_module("peft")


class _OneLayer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(32, 48)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


def test_same_outputs_as_peft_on_the_same_layer_and_weights(peft):
    torch.manual_seed(0)
    ours = _OneLayer()
    theirs = copy.deepcopy(ours)
    lora.apply_lora(ours, ["proj"], rank=RANK, alpha=ALPHA)
    with torch.no_grad():
        ours.proj.lora_B.normal_()  # as after training: a zero B would hide a wrong scale
    config = peft.LoraConfig(r=RANK, lora_alpha=ALPHA, target_modules=["proj"], lora_dropout=0.0,
                             init_lora_weights=False)
    peft.inject_adapter_in_model(config, theirs)
    layer = theirs.proj
    with torch.no_grad():
        layer.lora_A["default"].weight.copy_(ours.proj.lora_A)  # peft's A: a Linear(in, r), weight (r, in)
        layer.lora_B["default"].weight.copy_(ours.proj.lora_B)  # B: a Linear(r, out), weight (out, r)
        x = torch.randn(8, 5, 32)
        difference = (ours(x) - theirs(x)).abs().max().item()
        delta = (ours.proj.delta_weight() - layer.get_delta_weight("default")).abs().max().item()
    print(f"max |ours - peft|: outputs {difference:.2e}, delta W {delta:.2e}")
    assert layer.scaling["default"] == ours.proj.scale == ALPHA / RANK
    assert difference < 1e-5 and delta < 1e-6
    trainable = {n for n, p in theirs.named_parameters() if p.requires_grad}
    assert trainable == {"proj.lora_A.default.weight", "proj.lora_B.default.weight"}
    assert lora.trainable_parameter_count(theirs) == lora.trainable_parameter_count(ours)
