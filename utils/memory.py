"""The memory arithmetic of training a GPT: parameters, gradients, AdamW states and activations, in bytes,
as functions of the model size, sequence length and batch; what bf16, activation checkpointing, ZeRO/FSDP
sharding and tensor parallelism each remove; and two measurements to check the formulas against.

Shapes as in ``utils.gpt``: B batch, T sequence length, C = n_embd, H = n_head, L = n_layer, V = vocab_size,
P = parameters. Activations are the tensors autograd saves for the backward pass, counted per layer as
Korthikanti et al. (2022, "Reducing Activation Recomputation in Large Transformer Models", section 4.1) count
them; their 34·sbh + 5·as²b bytes per layer become, for the book's GPT (dropout 0: no masks;
``F.scaled_dot_product_attention``, whose CPU and GPU kernels keep no T x T matrix but a log-sum-exp), per
token and per block: the inputs of ln_1, c_attn, ln_2 and c_fc (4C), q, k, v (3C), the attention output
that c_proj reads (C), the GELU's input and output (8C), plus each LayerNorm's mean and 1/std (4) and the
attention's log-sum-exp (H): **16C + H + 4 values**. After the blocks: ln_f's input and output (2C), its
mean and 1/std (2), and the log-softmax of the logits (V); the token ids and targets (2 int64 per token);
the position ids (T int64); the cross-entropy's total weight (one fp32 number).

In fp32 every value takes 4 bytes. Under ``torch.autocast(dtype=torch.bfloat16)`` not half of them: the
matmuls save bf16 copies of their inputs, but autocast runs ``layer_norm``, ``log_softmax`` and the loss in
fp32, so the LayerNorms' inputs (the fp32 residual stream) and statistics, the attention's log-sum-exp and
the log-softmax of the logits stay fp32 (``fp32_values_per_token``); and each matmul saves the bf16 copy of
its weight autocast made (2 bytes per weight-matrix value, once per forward pass, whatever the batch).
``tests/test_memory.py`` checks both against what autograd saves, to the byte.

Measured here: ``saved_activation_bytes`` (autograd's saved-tensor hooks: exactly the storages kept for the
backward pass), ``measure_training_memory`` (the same four parts as ``estimate``, read from the tensors of a
model and optimizer that took a step) and ``measure_step_peak`` (torch.profiler's memory timeline of one training step: torch has
no ``max_memory_allocated`` for the CPU).
"""

from __future__ import annotations

import json
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from utils.gpt import GPTConfig, parameter_count_formula

#: Bytes per parameter of each training state, per precision recipe.
#: "fp32": weights, gradients, and AdamW's two moments in fp32 (the book's runs).
#: "bf16-mixed": bf16 weights and gradients for the arithmetic, plus an fp32 master copy and fp32 moments
#: (Megatron/DeepSpeed's mixed precision): 2 + 2 + 4 + 8 = 16 bytes, as many as fp32's 4 + 4 + 8.
#: "bf16-autocast": what ``torch.autocast`` over an fp32 model does: fp32 weights, gradients and moments,
#: and bf16 copies of the weight matrices that the forward pass saves (counted with the activations).
PRECISIONS = {
    "fp32": {"weights": 4, "gradients": 4, "master": 0, "optimizer": 8},
    "bf16-mixed": {"weights": 2, "gradients": 2, "master": 4, "optimizer": 8},
    "bf16-autocast": {"weights": 4, "gradients": 4, "master": 0, "optimizer": 8},
}
INT64 = 8
LOSS_WEIGHT = 4  # the cross-entropy saves its total weight, one fp32 number


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes held per rank during a training step, by kind: estimated by ``training_memory`` (where
    ``optimizer`` holds, under mixed precision, the fp32 master copy of the weights beside AdamW's moments,
    as ZeRO counts them), or measured by ``measure_training_memory``."""

    weights: int
    gradients: int
    optimizer: int
    activations: int

    @property
    def total(self) -> int:
        return self.weights + self.gradients + self.optimizer + self.activations

    def as_dict(self) -> dict[str, int]:
        return {**asdict(self), "total": self.total}

    def mib(self) -> dict[str, float]:
        """Each part and the total in MiB (2**20 bytes), keyed as logged: ``memory/<part>_mib``."""
        return {f"memory/{name}_mib": value / 2**20 for name, value in self.as_dict().items()}


def activation_values_per_token(config: GPTConfig, checkpointing: bool = False,
                                tensor_parallel: int = 1) -> float:
    """Floating-point values saved for the backward pass per token (see the module docstring).

    checkpointing: keep only each block's input (C per block) and recompute the block's activations during
    the backward pass, one block at a time (so one block's worth is alive at the peak).
    tensor_parallel: the attention heads and the MLP's hidden units split over ``t`` ranks: q, k, v, the
    attention output, the GELU's input and output and the log-sum-exp are divided by t; the inputs of the
    LayerNorms and of the first matmuls (4C), the LayerNorm statistics and everything after the blocks stay
    whole on every rank (Megatron's sequence parallelism would split those too).
    """
    C, H, L, t = config.n_embd, config.n_head, config.n_layer, tensor_parallel
    block = 4 * C + 4 + (12 * C + H) / t
    head = 2 * C + 2 + config.vocab_size
    if checkpointing:
        return L * C + block + head
    return L * block + head


def fp32_values_per_token(config: GPTConfig, checkpointing: bool = False, tensor_parallel: int = 1) -> float:
    """Of ``activation_values_per_token``, those that bf16 autocast keeps in fp32: per block the inputs of
    ln_1 and ln_2 (the residual stream, 2C), their statistics (4) and the log-sum-exp (H / t); after the
    blocks ln_f's input and statistics (C + 2) and the log-softmax (V). With checkpointing each block's
    saved input is the fp32 residual stream (C per block)."""
    C, H, L, t = config.n_embd, config.n_head, config.n_layer, tensor_parallel
    block = 2 * C + 4 + H / t
    head = C + 2 + config.vocab_size
    return (L * C + block + head) if checkpointing else L * block + head


def weight_copy_values(config: GPTConfig, checkpointing: bool = False, tensor_parallel: int = 1) -> float:
    """Values of the bf16 weight copies that autocast's matmuls save: 12C^2 per block (c_attn 3C^2, c_proj
    C^2, the MLP 8C^2; biases are not saved) and the output layer's V x C; with checkpointing, those of the
    one block being recomputed. Split over t ranks by tensor parallelism."""
    C, L = config.n_embd, config.n_layer
    blocks = 1 if checkpointing else L
    return (blocks * 12 * C * C + config.vocab_size * C) / tensor_parallel


def activation_bytes(config: GPTConfig, batch_size: int, seq_len: int | None = None, *,
                     precision: str = "fp32", checkpointing: bool = False, tensor_parallel: int = 1) -> int:
    """Bytes of the activations one forward pass keeps for the backward pass: B x T tokens x
    ``activation_values_per_token``, 4 bytes each in fp32; under bf16 (``"bf16-mixed"``,
    ``"bf16-autocast"``) 4 bytes for ``fp32_values_per_token`` and 2 for the rest, and under
    ``"bf16-autocast"`` the bf16 weight copies (``weight_copy_values``, 2 bytes each); plus the int64 ids,
    targets and positions."""
    T = seq_len if seq_len is not None else config.block_size
    tokens = batch_size * T
    values = activation_values_per_token(config, checkpointing, tensor_parallel)
    kept = values if precision == "fp32" else fp32_values_per_token(config, checkpointing, tensor_parallel)
    copies = weight_copy_values(config, checkpointing, tensor_parallel) if precision == "bf16-autocast" else 0
    floats = tokens * (4 * kept + 2 * (values - kept)) + 2 * copies
    return round(floats) + 2 * INT64 * tokens + INT64 * T + LOSS_WEIGHT


def training_memory(config: GPTConfig, batch_size: int, seq_len: int | None = None, *,
                    precision: str = "fp32", checkpointing: bool = False, zero_stage: int = 0,
                    data_parallel: int = 1, tensor_parallel: int = 1) -> MemoryEstimate:
    """Bytes per rank of training ``GPT(config)`` with AdamW on ``batch_size`` sequences of ``seq_len``.

    precision: a recipe of ``PRECISIONS``; its activations as ``activation_bytes`` counts them (under
    ``"bf16-autocast"`` with the bf16 weight copies, which live only while the graph does).

    zero_stage with ``data_parallel`` N ranks: 1 shards the optimizer states over the N ranks (AdamW's moments
    and, under mixed precision, the fp32 master copy of the weights, as ZeRO counts them), 2 also the
    gradients, 3 (= FSDP's full sharding) also the weights. tensor_parallel t splits every weight matrix, and
    so its gradient and optimizer state, over t ranks (counted here as all of P / t: the embeddings split by
    vocabulary rows, the small LayerNorm and bias vectors ignored).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
    if zero_stage not in (0, 1, 2, 3) or data_parallel < 1 or tensor_parallel < 1:
        raise ValueError("zero_stage is 0, 1, 2 or 3; data_parallel and tensor_parallel are >= 1")
    sizes = PRECISIONS[precision]
    P = parameter_count_formula(config) / tensor_parallel
    shard = {kind: data_parallel if zero_stage >= stage else 1
             for kind, stage in (("optimizer", 1), ("gradients", 2), ("weights", 3))}
    acts = activation_bytes(config, batch_size, seq_len, precision=precision, checkpointing=checkpointing,
                            tensor_parallel=tensor_parallel)
    # ZeRO's optimizer states (K = 12 bytes per parameter under mixed precision, Rajbhandari et al., 2020)
    # are AdamW's two moments and the fp32 master copy: stage 1 shards all three
    return MemoryEstimate(
        weights=round(P * sizes["weights"] / shard["weights"]),
        gradients=round(P * sizes["gradients"] / shard["gradients"]),
        optimizer=round(P * (sizes["optimizer"] + sizes["master"]) / shard["optimizer"]),
        activations=acts)


def logits_gradient_bytes(config: GPTConfig, batch_size: int, seq_len: int | None = None) -> int:
    """Bytes of the two (B, T, V) fp32 gradients the backward pass holds at once as it starts: of the
    log-probabilities and of the logits (the cross-entropy runs in fp32, under bf16 autocast too). They are
    not in ``training_memory``, which counts what lives through the step; a step's peak lies between
    weights + optimizer + activations and ``training_memory(...).total`` plus these, and at a large
    vocabulary they are the larger part of the difference. Activations counted per layer as Korthikanti
    et al. (2022) do; parameter states as Rajbhandari et al. (2020, ZeRO) do."""
    T = seq_len if seq_len is not None else config.block_size
    return 2 * batch_size * T * config.vocab_size * 4


# --------------------------------------------------------------------------------------------- measuring


def checkpointed_lm_loss(model: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor]):
    """``evaluation.lm_loss`` for a ``utils.gpt.GPT`` with every block under ``torch.utils.checkpoint``: the
    forward pass keeps only each block's input (B, T, C) and the backward pass recomputes the rest, one block
    at a time. x, y (B, T) -> ``(loss, {})``."""
    x, y = batch
    B, T = x.shape
    parts = model.transformer
    h = parts.drop(parts.wte(x) + parts.wpe(torch.arange(T, device=x.device)))  # (B, T, C)
    for block in parts.h:
        h = checkpoint(block, h, use_reentrant=False)
    logits = model.lm_head(parts.ln_f(h))  # (B, T, V)
    return F.cross_entropy(logits.view(B * T, -1), y.reshape(B * T)), {}



def saved_activation_bytes(model: torch.nn.Module, batch: Any,
                           loss_fn: Callable[[torch.nn.Module, Any], tuple[torch.Tensor, Any]]) -> int:
    """Bytes of the storages autograd keeps for the backward pass of ``loss_fn(model, batch)``: every tensor
    saved during the forward pass, each underlying storage counted once (a saved view keeps its whole
    storage alive), parameters left out (they exist anyway)."""
    storages: dict[int, int] = {}

    def keep(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(keep, lambda tensor: tensor):
        loss, _ = loss_fn(model, batch)
    parameters = {p.untyped_storage().data_ptr() for p in model.parameters()}
    del loss  # frees the graph and what it saved
    return sum(size for pointer, size in storages.items() if pointer not in parameters)


def measure_step_peak(step: Callable[[], Any]) -> dict[str, Any]:
    """Peak bytes of CPU tensors alive during ``step()`` (e.g. one ``loop.train_step``), from torch.profiler's
    memory timeline, which follows every tensor alive during the profile, those allocated before it included
    (parameters, optimizer states). ``{"peak": bytes, "before": bytes at the first event,
    "before_by_category": {category: bytes at the first event}}``, categories as the profiler names them
    (``parameter``, ``optimizer_state``, ``input``, ``gradient``...) and ``unknown``: memory allocated before
    the profile that it saw freed without knowing what it held. For a training step that is the previous
    step's gradients, which ``zero_grad(set_to_none=True)`` frees: the profiler attributes some of them, how
    many depends on the allocator's state (0 to 128 KiB of the book's GPT, measured), so "before" varies by
    that much from run to run while the categorised parts do not.

    Run ``step`` once before measuring, so that AdamW's states exist, as in every step after the first.
    ``export_memory_timeline`` is deprecated in favour of CUDA's memory snapshots, which do not cover the CPU.
    """
    from torch.profiler import ProfilerActivity, profile
    from torch.profiler._memory_profiler import _CATEGORY_TO_INDEX  # the timeline's columns

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True,
                 with_stack=True) as profiler:
        step()
    with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        path = Path(folder) / "timeline.json"
        profiler.export_memory_timeline(str(path), device="cpu")
        _, sizes = json.loads(path.read_text())  # [times, [bytes per category] per time]
    totals = [sum(row) for row in sizes]
    # column 1 + i holds the category whose index is i (the timeline's column 0 stays empty)
    names = {1 + index: category.name.lower() if category is not None else "unknown"
             for category, index in _CATEGORY_TO_INDEX.items()}
    by_category = {names[column]: int(size) for column, size in enumerate(sizes[0]) if column in names}
    return {"peak": max(totals), "before": totals[0], "before_by_category": by_category}


def measure_training_memory(model: torch.nn.Module, optimizer: torch.optim.Optimizer, loss_fn: Any,
                            batch: Any) -> MemoryEstimate:
    """What training ``model`` on ``batch`` holds, measured: parameters, gradients (as large as the trainable
    parameters), the optimizer's state (call after at least one step) and saved activations. Their sum
    bounds the peak from above: activations are freed during the backward pass as gradients appear. A tied
    matrix counts once."""
    unique = {p.untyped_storage().data_ptr(): p for p in model.parameters()}.values()
    state = [t for s in optimizer.state.values() for t in s.values() if isinstance(t, torch.Tensor)]
    return MemoryEstimate(
        weights=sum(p.numel() * p.element_size() for p in unique),
        gradients=sum(p.numel() * p.element_size() for p in unique if p.requires_grad),
        optimizer=sum(t.numel() * t.element_size() for t in state),
        activations=saved_activation_bytes(model, batch, loss_fn))
