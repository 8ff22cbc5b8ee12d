"""The GPT of utils.gpt: shapes, causality, counts by formula, initialisation, loss at init, sampling."""

from __future__ import annotations

import io
import math

import pytest
import torch

from utils.gpt import GPT, GPTConfig, config_to_dict, flops_per_token, parameter_count_formula

SMALL = GPTConfig(vocab_size=65, block_size=16, n_layer=2, n_head=2, n_embd=32)


def make(config: GPTConfig = SMALL, seed: int = 1337) -> GPT:
    torch.manual_seed(seed)
    return GPT(config).eval()


def test_shapes_and_loss() -> None:
    model = make()
    idx = torch.randint(0, 65, (3, 10))
    logits, loss = model(idx)
    assert logits.shape == (3, 10, 65) and loss is None
    logits, loss = model(idx, torch.randint(0, 65, (3, 10)))
    assert loss.shape == () and loss.item() > 0
    with pytest.raises(ValueError, match="block_size"):
        model(torch.zeros(1, 17, dtype=torch.long))


def test_pinned_seeded_logits() -> None:
    logits, _ = make()(torch.arange(16).view(2, 8))
    expected = torch.tensor([0.4708850085735321, 0.17342105507850647, 0.30501601099967957, -0.150509774684906])
    torch.testing.assert_close(logits[0, 0, :4], expected, rtol=1e-4, atol=1e-5)
    assert abs(logits.sum().item() - 0.2621626853942871) < 1e-3


def test_causal_future_tokens_do_not_change_past_logits() -> None:
    model = make()
    idx = torch.randint(0, 65, (2, 12), generator=torch.Generator().manual_seed(0))
    changed = idx.clone()
    changed[:, 7:] = (changed[:, 7:] + 1) % 65
    a, _ = model(idx)
    b, _ = model(changed)
    torch.testing.assert_close(a[:, :7], b[:, :7], rtol=0, atol=1e-6)
    assert (a[:, 7:] - b[:, 7:]).abs().max() > 1e-3


@pytest.mark.parametrize("config", [
    SMALL,
    GPTConfig(vocab_size=65, block_size=64, n_layer=4, n_head=4, n_embd=128, bias=False),
    GPTConfig(vocab_size=512, block_size=128, n_layer=3, n_head=6, n_embd=96),
])
def test_parameter_count_formula(config: GPTConfig) -> None:
    model = make(config)
    assert model.num_parameters() == parameter_count_formula(config)
    assert model.num_parameters(non_embedding=True) == parameter_count_formula(config, non_embedding=True)
    assert model.num_parameters() - model.num_parameters(True) == config.block_size * config.n_embd
    assert model.lm_head.weight is model.transformer.wte.weight  # tied: counted once


def test_flops_per_token() -> None:
    config = GPTConfig(vocab_size=65, block_size=64, n_layer=4, n_head=4, n_embd=128)
    assert parameter_count_formula(config) == 809_856
    n = parameter_count_formula(config, non_embedding=True)
    assert n == 801_664
    assert flops_per_token(config) == 6 * 801_664 + 12 * 4 * 4 * 32 * 64 == 5_203_200


def test_gpt2_initialisation() -> None:
    config = GPTConfig(vocab_size=256, block_size=32, n_layer=8, n_head=4, n_embd=256)
    model = make(config)
    block = model.transformer.h[0]
    assert abs(block.attn.c_attn.weight.std().item() - 0.02) < 0.001
    assert abs(block.mlp.c_fc.weight.std().item() - 0.02) < 0.001
    scaled = 0.02 / math.sqrt(2 * config.n_layer)
    assert abs(block.attn.c_proj.weight.std().item() - scaled) < 0.0005
    assert abs(block.mlp.c_proj.weight.std().item() - scaled) < 0.0005
    assert block.attn.c_attn.bias.abs().max().item() == 0


def test_loss_at_init_is_ln_vocab() -> None:
    config = GPTConfig(vocab_size=512, block_size=32, n_layer=2, n_head=4, n_embd=64)
    model = make(config)
    g = torch.Generator().manual_seed(0)
    idx = torch.randint(0, 512, (8, 32), generator=g)
    targets = torch.randint(0, 512, (8, 32), generator=g)
    _, loss = model(idx, targets)
    assert abs(loss.item() - math.log(512)) < 0.05


def test_ignore_index() -> None:
    model = make()
    idx = torch.randint(0, 65, (2, 8))
    targets = torch.randint(0, 65, (2, 8))
    masked = targets.clone()
    masked[:, :4] = -100
    logits, loss = model(idx, masked)
    manual = torch.nn.functional.cross_entropy(logits[:, 4:].reshape(-1, 65), targets[:, 4:].reshape(-1))
    torch.testing.assert_close(loss, manual)


def test_generate() -> None:
    model = make()
    start = torch.zeros(2, 3, dtype=torch.long)
    out = model.generate(start, 20, generator=torch.Generator().manual_seed(0))
    again = model.generate(start, 20, generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, 23) and torch.equal(out, again) and torch.equal(out[:, :3], start)
    greedy = model.generate(start[:1], 5, temperature=0)
    logits, _ = model(start[:1])
    assert greedy[0, 3].item() == logits[0, -1].argmax().item()
    top1 = model.generate(start[:1], 5, top_k=1, generator=torch.Generator().manual_seed(5))
    assert torch.equal(top1, greedy)


def test_checkpoint_round_trip_weights_only() -> None:
    model = make()
    buffer = io.BytesIO()
    torch.save({"config": config_to_dict(SMALL), "model": model.state_dict()}, buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    restored = GPT(GPTConfig(**state["config"])).eval()
    restored.load_state_dict(state["model"])
    idx = torch.randint(0, 65, (1, 16))
    torch.testing.assert_close(restored(idx)[0], model(idx)[0])


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="divisible"):
        GPTConfig(vocab_size=10, block_size=8, n_layer=1, n_head=3, n_embd=16)
