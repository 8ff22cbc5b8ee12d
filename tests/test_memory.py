"""The memory arithmetic of ``utils.memory`` against what torch really keeps: the activations autograd saves
(to the byte, for several shapes, with and without activation checkpointing) and the peak of a whole
training step measured by torch.profiler; and what each saving technique divides."""

from __future__ import annotations

import functools

import pytest
import torch

from utils import loop, memory
from utils.evaluation import lm_loss
from utils.gpt import GPT, GPTConfig, parameter_count_formula
from utils.optim import make_adamw

SHAPES = [  # (L, H, C, T, B, V, bias)
    (2, 2, 64, 32, 8, 65, True),
    (4, 4, 128, 64, 12, 65, True),
    (3, 2, 96, 64, 8, 500, False),
    (1, 4, 32, 128, 2, 65, True),
]


#: the bf16 autocast of the book (chapter 8) and of ``loop.TrainConfig(autocast=...)``, on the CPU
BF16 = functools.partial(torch.autocast, "cpu", dtype=torch.bfloat16)


def bf16_lm_loss(model, batch):
    with BF16():
        return lm_loss(model, batch)


def bf16_checkpointed_lm_loss(model, batch):
    with BF16():
        return memory.checkpointed_lm_loss(model, batch)


def model_and_batch(L, H, C, T, B, V, bias):
    config = GPTConfig(vocab_size=V, block_size=T, n_layer=L, n_head=H, n_embd=C, bias=bias)
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(1)
    batch = (torch.randint(V, (B, T), generator=generator), torch.randint(V, (B, T), generator=generator))
    return config, GPT(config), batch


@pytest.mark.parametrize("shape", SHAPES, ids=[str(s) for s in SHAPES])
def test_activation_formula_equals_what_autograd_saves(shape):
    config, model, batch = model_and_batch(*shape)
    B = shape[4]
    assert memory.saved_activation_bytes(model, batch, lm_loss) == memory.activation_bytes(config, B)


@pytest.mark.parametrize("shape", SHAPES[:3], ids=[str(s) for s in SHAPES[:3]])
def test_checkpointing_formula_equals_what_autograd_saves(shape):
    config, model, batch = model_and_batch(*shape)
    L, H, C, T, B = shape[:5]
    one_block = 4 * B * T * (16 * C + H + 4)  # recomputed during the backward pass: not saved by the forward
    saved = memory.saved_activation_bytes(model, batch, memory.checkpointed_lm_loss)
    assert saved == memory.activation_bytes(config, B, checkpointing=True) - one_block
    assert saved < 0.3 * memory.activation_bytes(config, B)


@pytest.mark.parametrize("shape", SHAPES, ids=[str(s) for s in SHAPES])
def test_bf16_autocast_formula_equals_what_autograd_saves(shape):
    """Under autocast the LayerNorms' inputs and statistics, the log-sum-exp and the log-softmax stay fp32,
    and the matmuls save bf16 copies of their weights: the activations are well over half of fp32's."""
    config, model, batch = model_and_batch(*shape)
    B = shape[4]
    saved = memory.saved_activation_bytes(model, batch, bf16_lm_loss)
    assert saved == memory.activation_bytes(config, B, precision="bf16-autocast")
    assert saved > 0.6 * memory.activation_bytes(config, B)  # not the half that "2 bytes a value" says


@pytest.mark.parametrize("shape", SHAPES[:3], ids=[str(s) for s in SHAPES[:3]])
def test_bf16_autocast_with_checkpointing_formula_equals_what_autograd_saves(shape):
    config, model, batch = model_and_batch(*shape)
    L, H, C, T, B = shape[:5]
    fp32_part = 2 * C + 4 + H  # of one block's values: the LayerNorms' inputs and statistics, log-sum-exp
    one_block = B * T * (4 * fp32_part + 2 * (16 * C + H + 4 - fp32_part)) + 2 * 12 * C * C
    saved = memory.saved_activation_bytes(model, batch, bf16_checkpointed_lm_loss)
    assert saved == memory.activation_bytes(config, B, precision="bf16-autocast", checkpointing=True) - one_block


def _autocast_peak(config, B):
    torch.manual_seed(0)
    model = GPT(config)
    optimizer = make_adamw(model, 1e-3)
    generator = torch.Generator().manual_seed(0)
    batch = tuple(torch.randint(config.vocab_size, (B, config.block_size), generator=generator)
                  for _ in range(2))

    def step():
        loop.train_step(model, optimizer, [batch], lm_loss, grad_clip=1.0, autocast=BF16)

    step()
    saved = memory.saved_activation_bytes(model, batch, bf16_lm_loss)
    return saved, memory.measure_step_peak(step)["peak"]


@pytest.mark.slow
@pytest.mark.parametrize("config, B", [
    (GPTConfig(vocab_size=65, block_size=32, n_layer=2, n_head=2, n_embd=64), 8),
    (GPTConfig(vocab_size=16384, block_size=128, n_layer=4, n_head=4, n_embd=128), 8)],
    ids=["V65", "V16384"])
def test_measured_peak_of_a_bf16_autocast_step_lies_between_the_formulas_bounds(config, B):
    """A whole step under autocast, measured by torch.profiler: fp32 weights, AdamW states and the
    activations (with the bf16 weight copies) below the peak; all of it, the fp32 gradients and the loss's
    two (B, T, V) fp32 gradients above it. Half of fp32's activations would be far too low (at V = 16,384
    the fp32 log-softmax alone is 8 x 128 x 16,384 x 4 bytes = 67 MB)."""
    saved, peak = _autocast_peak(config, B)
    estimate = memory.training_memory(config, B, precision="bf16-autocast")
    assert saved == estimate.activations
    lower = estimate.weights + estimate.optimizer + estimate.activations
    assert lower <= peak <= estimate.total + memory.logits_gradient_bytes(config, B)
    halved = memory.activation_bytes(config, B) / 2  # the old arithmetic: 2 bytes for every value
    assert estimate.activations > 1.2 * halved
    log_softmax = B * config.block_size * config.vocab_size * 4  # fp32 under autocast
    assert (log_softmax > estimate.activations / 2) == (config.vocab_size > 1000)  # most, at V = 16,384


@pytest.mark.slow
@pytest.mark.parametrize("shape", SHAPES[:2], ids=[str(s) for s in SHAPES[:2]])
def test_measured_peak_of_a_step_lies_between_the_formulas_bounds(shape):
    """At the peak, the activations are alive and the gradients are being made: the peak is at least
    weights + AdamW states + activations and at most all four together."""
    config, model, batch = model_and_batch(*shape)
    optimizer = make_adamw(model, 1e-3)

    def step():
        loop.train_step(model, optimizer, [batch], lm_loss, grad_clip=1.0)

    step()  # AdamW's states exist from the first step on
    measured = memory.measure_step_peak(step)
    estimate = memory.training_memory(config, shape[4])
    step_counters = 4 * len(list(model.parameters()))  # AdamW's step count: one fp32 number per tensor
    inputs = batch[0].nbytes + batch[1].nbytes
    before = measured["before_by_category"]
    assert (before["parameter"], before["optimizer_state"], before["input"]) == (
        estimate.weights, estimate.optimizer + step_counters, inputs), measured
    # The rest is memory the profiler saw freed without knowing what it held: the previous step's gradients,
    # which zero_grad frees; how much of them it sees depends on the allocator's state, and so on the tests
    # that ran before (0 to 128 KiB measured): at most all of them, nothing else.
    assert sum(before.values()) == measured["before"]
    assert all(size == 0 for name, size in before.items()
               if name not in ("parameter", "optimizer_state", "input", "unknown")), measured
    assert 0 <= before["unknown"] <= estimate.gradients, measured
    lower = estimate.weights + estimate.optimizer + estimate.activations
    upper = estimate.total + memory.logits_gradient_bytes(config, shape[4])
    assert lower <= measured["peak"] <= upper


@pytest.mark.slow
def test_the_peak_bounds_hold_at_a_large_vocabulary_with_the_logits_gradients():
    """At V = 16,384 the two (B, T, V) fp32 gradients of the loss's backward pass are most of the step's
    peak: without them the upper bound fails (measured: 119 MB of peak against 57 MB), with them it holds."""
    config = GPTConfig(vocab_size=16384, block_size=64, n_layer=2, n_head=4, n_embd=64)
    torch.manual_seed(0)
    model = GPT(config)
    optimizer = make_adamw(model, 1e-3)
    generator = torch.Generator().manual_seed(0)
    batch = tuple(torch.randint(config.vocab_size, (8, 64), generator=generator) for _ in range(2))

    def step():
        loop.train_step(model, optimizer, [batch], lm_loss, grad_clip=1.0)

    step()
    peak = memory.measure_step_peak(step)["peak"]
    estimate = memory.training_memory(config, 8)
    lower = estimate.weights + estimate.optimizer + estimate.activations
    assert estimate.total < peak  # the states and activations alone are not an upper bound here
    assert lower <= peak <= estimate.total + memory.logits_gradient_bytes(config, 8)


def test_parameter_states_are_16_bytes_per_parameter_in_every_precision():
    """16 bytes a parameter in all three recipes; bf16 shrinks the activations, by less than half (what
    stays fp32 is measured above), and autocast adds its bf16 weight copies to them."""
    config = GPTConfig(vocab_size=65, block_size=64, n_layer=4, n_head=4, n_embd=128)
    P = parameter_count_formula(config)
    for precision in ("fp32", "bf16-mixed", "bf16-autocast"):
        estimate = memory.training_memory(config, 12, precision=precision)
        assert estimate.weights + estimate.gradients + estimate.optimizer == 16 * P
    fp32, bf16, autocast = (memory.training_memory(config, 12, precision=p)
                            for p in ("fp32", "bf16-mixed", "bf16-autocast"))
    assert 0.5 * fp32.activations < bf16.activations < autocast.activations < fp32.activations
    copies = autocast.activations - bf16.activations
    assert copies == 2 * (4 * 12 * 128**2 + 65 * 128)  # the matmuls' weights, 2 bytes each


def test_zero_stages_shard_optimizer_then_gradients_then_weights():
    config = GPTConfig(vocab_size=65, block_size=64, n_layer=4, n_head=4, n_embd=128)
    P = parameter_count_formula(config)
    full = [memory.training_memory(config, 12, zero_stage=s, data_parallel=4) for s in range(4)]
    assert (full[0].weights, full[0].gradients, full[0].optimizer) == (4 * P, 4 * P, 8 * P)
    assert (full[1].weights, full[1].gradients, full[1].optimizer) == (4 * P, 4 * P, 2 * P)
    assert (full[2].weights, full[2].gradients, full[2].optimizer) == (4 * P, P, 2 * P)
    assert (full[3].weights, full[3].gradients, full[3].optimizer) == (P, P, 2 * P)
    assert len({estimate.activations for estimate in full}) == 1  # sharding states leaves activations alone


def test_zero_shards_the_master_copy_with_the_optimizer_states_as_the_paper_counts():
    """ZeRO (Rajbhandari et al., 2020), mixed precision: 2 + 2 bytes of weights and gradients and K = 12
    bytes of optimizer states (fp32 master copy, momentum, variance) per parameter; stage 1 shards the 12.
    GPT-2 small (124M) on 8 ranks: 0.64 GiB of states at ZeRO-1, 0.43 at ZeRO-2."""
    gpt2 = GPTConfig(vocab_size=50257, block_size=1024, n_layer=12, n_head=12, n_embd=768)
    P = parameter_count_formula(gpt2)
    states = {}
    for stage in (0, 1, 2, 3):
        e = memory.training_memory(gpt2, 1, precision="bf16-mixed", zero_stage=stage, data_parallel=8)
        states[stage] = e.weights + e.gradients + e.optimizer
    assert states[0] == 16 * P
    assert states[1] == pytest.approx(2 * P + 2 * P + 12 * P / 8, abs=2)
    assert states[2] == pytest.approx(2 * P + (2 + 12) * P / 8, abs=2)
    assert states[3] == pytest.approx(16 * P / 8, abs=2)
    assert round(states[1] / 2**30, 2) == 0.64 and round(states[2] / 2**30, 2) == 0.43


def test_tensor_parallel_splits_weights_and_the_inner_activations_only():
    config = GPTConfig(vocab_size=65, block_size=64, n_layer=4, n_head=4, n_embd=128)
    one, two = (memory.training_memory(config, 12, tensor_parallel=t) for t in (1, 2))
    assert two.weights == pytest.approx(one.weights / 2, abs=1)
    C, H = config.n_embd, config.n_head
    assert memory.activation_values_per_token(config, tensor_parallel=2) == \
        memory.activation_values_per_token(config) - config.n_layer * (12 * C + H) / 2


def test_bad_settings_say_what_is_allowed():
    config = GPTConfig(vocab_size=65, block_size=8, n_layer=1, n_head=1, n_embd=8)
    with pytest.raises(ValueError, match="precision must be one of"):
        memory.training_memory(config, 1, precision="fp8")
    with pytest.raises(ValueError, match="zero_stage is 0, 1, 2 or 3"):
        memory.training_memory(config, 1, zero_stage=4)
