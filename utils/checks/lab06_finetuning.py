"""Checkers of lab 6 (``labs/lab06_finetuning.ipynb``): a LoRA linear layer written by hand, which
parameters each fine-tuning strategy trains, and the labels of supervised fine-tuning with a masked prompt.

Each checker builds its own layers, models and token lists, and names a mistake only when the answer
reproduces that mistake's result exactly (see ``utils.checks``). The LoRA checker finds A and B under the
names the exercise fixes (``lora_A`` (rank, in) and ``lora_B`` (out, rank), each a tensor or a bias-free
``nn.Linear`` holding it as ``.weight``) and nowhere else.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch
import torch.nn as nn

from utils import lora
from utils.checks import CheckFailed, call, checker, passed
from utils.gpt import GPT, GPTConfig

# --------------------------------------------------------------------------- lab06.lora_linear

#: (in, out, rank, alpha). In the first, alpha / rank = 8/3 differs from every mistaken scale (1, 3/8,
#: 8 // 3 = 2, 8), so a wrong scale is named there; the others vary the shapes (in = out, rank 1).
LORA_REGIMES = [(12, 7, 3, 8.0), (6, 10, 1, 1.0), (16, 16, 4, 16.0), (9, 5, 2, 4)]


def _close(got: torch.Tensor, expected: torch.Tensor) -> bool:
    return got.shape == expected.shape and bool(torch.allclose(got, expected, rtol=1e-4, atol=1e-5))


def _same_linear(layer: nn.Linear, copy_of_it: nn.Linear) -> bool:
    pairs = zip(layer.state_dict().values(), copy_of_it.state_dict().values(), strict=True)
    return all(torch.equal(a, b) for a, b in pairs)


def _reject_the_books_own(answer: Any, module: nn.Module | None = None) -> None:
    books = isinstance(answer, type) and issubclass(answer, lora.LoRALinear)
    if books or (module is not None and any(isinstance(m, lora.LoRALinear) for m in module.modules())):
        raise CheckFailed("that is the book's utils.lora.LoRALinear (or built on it): this exercise is to "
                          "write the layer yourself, as a subclass of nn.Module")


def _build(answer: Any, in_f: int, out_f: int, rank: int, alpha: float, seed: int):
    """(base, an untouched copy of it, the reader's layer around it)."""
    _reject_the_books_own(answer)
    torch.manual_seed(seed)
    base = nn.Linear(in_f, out_f)
    pristine = copy.deepcopy(base)
    layer = call(answer, base, rank, alpha)
    if not isinstance(layer, nn.Module):
        raise CheckFailed(f"building the layer gave {type(layer).__name__}: it must be an nn.Module")
    _reject_the_books_own(answer, layer)
    if not _same_linear(base, pristine):
        raise CheckFailed("building the layer changed the base layer's weight or bias: keep them as they are")
    return base, pristine, layer


def _factor(layer: nn.Module, name: str, shape: tuple[int, int]) -> torch.Tensor:
    value = getattr(layer, name, None)
    if isinstance(value, nn.Linear):
        value = value.weight
    if not isinstance(value, torch.Tensor):
        raise CheckFailed(f"the layer has no {name}: keep A as lora_A (rank, in) and B as lora_B (out, rank), "
                          "each an nn.Parameter or a bias-free nn.Linear")
    if tuple(value.shape) != shape:
        raise CheckFailed(f"{name} has shape {tuple(value.shape)}; expected {shape} (lora_A is (rank, in), "
                          "lora_B is (out, rank), as an nn.Linear's weight is (out features, in features))")
    return value


def _output(layer: nn.Module, x: torch.Tensor, out_f: int) -> torch.Tensor:
    got = call(layer.forward, x)
    if not isinstance(got, torch.Tensor) or got.shape != (*x.shape[:-1], out_f):
        shape = tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__
        raise CheckFailed(f"forward of an input {tuple(x.shape)} returned {shape}; expected "
                          f"{(*x.shape[:-1], out_f)}: the base layer's output shape")
    return got


def _mode_fault(layer: nn.Module, x: torch.Tensor, expected: torch.Tensor, where: str) -> str | None:
    """Why a layer whose training-mode output is not ``expected`` may still be right in eval mode (a
    dropout, as peft's ``lora_dropout``), or gives a new output at each call; None if neither."""
    out_f = expected.shape[-1]
    with torch.no_grad():
        again = _output(layer, x, out_f), _output(layer, x, out_f)
        if layer.training:
            try:
                layer.eval()
                in_eval = _output(layer, x, out_f)
            finally:
                layer.train()
            if _close(in_eval, expected):
                dropouts = [f"{name or 'the layer'} = {type(m).__name__}(p={m.p:g})" for name, m in
                            layer.named_modules() if isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0]
                found = f" ({', '.join(dropouts)})" if dropouts else ""
                return (f"in training mode {where}; in eval mode it is: a dropout{found} on "
                        f"{_DROPOUT_SITE[where]}? This exercise's layer computes exactly y = x W^T + b + (alpha / rank) x A^T "
                        "B^T, with no dropout: the lab trains your layer and compares it with merge() in "
                        "training mode (it never calls eval()). Leave the dropout out, or make its p 0")
    if not torch.equal(*again):
        return ("forward gives a different output at each call on the same input (a dropout that stays on "
                "in eval mode, or noise?): the layer computes exactly y = x W^T + b + (alpha / rank) x A^T "
                "B^T, with no dropout")
    return None


_INIT_WRONG = "the output with lora_B = 0 is not the base layer's"
_SCALE_WRONG = "the output with A and B set is not base(x) + (alpha / rank) x A^T B^T"
#: where a dropout must sit to make each of those faults (with B = 0 one on the branch changes nothing)
_DROPOUT_SITE = {_INIT_WRONG: "the base layer's input (LoRA leaves the base layer's computation as it is)",
                 _SCALE_WRONG: "the low-rank branch's input, as peft's lora_dropout"}


def _check_init(layer, pristine, x, lora_b) -> None:
    with torch.no_grad():
        got, expected = _output(layer, x, pristine.out_features), pristine(x)
    if _close(got, expected):
        return
    mode = _mode_fault(layer, x, expected, _INIT_WRONG)
    if mode:
        raise CheckFailed(mode)
    if lora_b.abs().max() > 0:
        raise CheckFailed("lora_B starts random: initialise B with zeros, so that B A = 0 and the adapted "
                          "layer's first output is exactly the pretrained layer's")
    if _close(got, torch.zeros_like(got)):
        raise CheckFailed("forward leaves out the base layer's output: return it plus the low-rank update")
    if _close(got, expected - pristine.bias):
        raise CheckFailed("the base layer's bias is missing from the output")
    raise CheckFailed("with lora_B = 0 the output must be the base layer's, but it differs by up to "
                      f"{(got - expected).abs().max().item():.3g}")


def _check_trainable(layer, lora_a, lora_b, rank, in_f, out_f) -> None:
    if not (lora_a.requires_grad and lora_b.requires_grad):
        raise CheckFailed("lora_A and lora_B must both be trainable (requires_grad)")
    factors = {id(lora_a), id(lora_b)}
    others = [p for p in layer.parameters() if p.requires_grad and id(p) not in factors]
    if any(p.dim() == 2 for p in others):
        raise CheckFailed("the base layer is not frozen: its weight trains too. Set requires_grad to False "
                          "on the base's weight and bias; only A and B train")
    if others:
        raise CheckFailed(f"a bias is trainable ({sum(p.numel() for p in others)} numbers): LoRA adapts the "
                          "weight only. Freeze the base's bias and give lora_A and lora_B no bias")
    count = sum(p.numel() for p in layer.parameters() if p.requires_grad)
    if count != rank * (in_f + out_f):
        raise CheckFailed(f"{count} trainable numbers; expected rank * (in + out) = {rank * (in_f + out_f)}")


def _first_gradients(layer, x, target, lora_a, lora_b) -> tuple[float, float]:
    """The norms of A's and B's gradients at the first step (0 for one the loss does not reach)."""
    layer.zero_grad(set_to_none=True)
    loss = (_output(layer, x, target.shape[-1]) - target).pow(2).mean()
    if not loss.requires_grad:  # forward reaches neither A nor B
        return 0.0, 0.0
    loss.backward()
    norms = [0.0 if p.grad is None else p.grad.norm().item() for p in (lora_a, lora_b)]
    layer.zero_grad(set_to_none=True)
    return norms[0], norms[1]


def _zero_a_fault(layer, x, target, lora_a, lora_b) -> str:
    """What is wrong with a layer whose A starts at zero, from the gradients measured at the first step."""
    grad_a, grad_b = _first_gradients(layer, x, target, lora_a, lora_b)
    measured = f"measured at the first step: |grad A| = {grad_a:.3g}, |grad B| = {grad_b:.3g}"
    fix = ("LoRA starts B at zero, so that the adapted layer begins as the base layer, and A random, so "
           "that B gets a gradient from the first step")
    if lora_b.abs().max() == 0:
        if grad_a == 0 and grad_b == 0:
            return ("lora_A starts at zero as well: with A = 0 and B = 0, B's gradient (through x A^T = 0) "
                    f"and A's (through B = 0) are both zero ({measured}), so nothing ever learns. "
                    "Initialise A randomly, B with zeros")
        return f"lora_A starts at zero as well ({measured}): {fix}"
    if grad_b == 0 and grad_a > 0:
        return ("lora_A starts at zero and lora_B random: the initialisations are swapped. B A = 0, so the "
                "first output is the base's, but B's gradient is zero (it goes through x A^T = 0) while "
                f"A's is not ({measured}): only A moves at first. {fix}")
    return f"lora_A starts at zero and lora_B random ({measured}): {fix}"


def _check_training(layer, base, pristine, x, lora_a, lora_b) -> None:
    """Five Adam steps towards a random target: B must learn, nothing frozen may move."""
    target = torch.randn(*x.shape[:-1], base.out_features, generator=torch.Generator().manual_seed(1))
    if lora_a.abs().max() == 0:
        raise CheckFailed(_zero_a_fault(layer, x, target, lora_a, lora_b))
    frozen = {name: p.detach().clone() for name, p in layer.named_parameters() if not p.requires_grad}
    optimizer = torch.optim.Adam([p for p in layer.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(5):
        loss = (_output(layer, x, base.out_features) - target).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    moved = [name for name, p in layer.named_parameters() if name in frozen and not torch.equal(p, frozen[name])]
    if moved or not _same_linear(base, pristine):
        raise CheckFailed(f"the base weights changed during training ({moved or 'the base layer'}): only A "
                          "and B may change")
    if lora_b.abs().max() == 0:
        raise CheckFailed("lora_B did not change in five optimizer steps: forward must use lora_A and lora_B")


def _scale_fault(got, base_out, low, rank, alpha) -> str | None:
    mistakes = [(1.0, f"the scale alpha/rank is missing: multiply the update by alpha / rank = {alpha}/{rank}"),
                (rank / alpha, "the scale is inverted: rank / alpha instead of alpha / rank"),
                (alpha // rank, f"integer division: alpha // rank = {alpha // rank:g}; the scale is alpha / "
                                f"rank = {alpha / rank:.4g}"),
                (alpha, "the update is multiplied by alpha but not divided by the rank")]
    for scale, fault in mistakes:
        if scale != alpha / rank and _close(got, base_out + scale * low):
            return fault
    return None


def _check_scale_and_merge(layer, base, pristine, x, lora_a, lora_b, rank, alpha, seed) -> None:
    """With A and B set to known values: the output, then merge()."""
    generator = torch.Generator().manual_seed(seed)
    a_value, b_value = torch.randn(lora_a.shape, generator=generator), torch.randn(lora_b.shape, generator=generator)
    with torch.no_grad():
        lora_a.copy_(a_value)
        lora_b.copy_(b_value)
        base_out, low = pristine(x), x @ a_value.T @ b_value.T  # (..., out) each
        expected = base_out + alpha / rank * low
        got = _output(layer, x, base.out_features)
    if not _close(got, expected):
        raise CheckFailed(_scale_fault(got, base_out, low, rank, alpha)
                          or _mode_fault(layer, x, expected, _SCALE_WRONG)
                          or "with A and B set to known values the output is not base(x) + (alpha / rank) "
                          f"x A^T B^T: off by up to {(got - expected).abs().max().item():.3g}")
    merged = call(layer.merge)
    if not isinstance(merged, nn.Linear):
        raise CheckFailed(f"merge() returned {type(merged).__name__}: return an nn.Linear")
    with torch.no_grad():
        if not _same_linear(base, pristine) or not _close(_output(layer, x, base.out_features), expected):
            raise CheckFailed("merge() changed the adapted layer in place: build a new nn.Linear holding "
                              "W + (alpha / rank) B A and leave the base layer as it was")
        merged_out = merged(x)
    if _close(merged_out, expected):
        return
    if _close(merged_out, base_out):
        raise CheckFailed("merge() returns the base weights without the update B A")
    if _close(merged_out, base_out + low):
        raise CheckFailed("merge() leaves out alpha / rank: the merged weight is W + (alpha / rank) B A")
    if _close(merged_out, expected - pristine.bias):
        raise CheckFailed("the merged layer lost the base layer's bias: copy it")
    raise CheckFailed(f"the merged layer's output differs from the adapted layer's by up to "
                      f"{(merged_out - expected).abs().max().item():.3g}")


@checker("lab06.lora_linear")
def check_lora_linear(answer: Callable[..., Any]) -> None:
    """``answer(base, rank, alpha)`` -> an nn.Module with ``forward`` and ``merge()``, in four regimes:
    first output = base output, trainable count r (in + out), base frozen through five optimizer steps,
    the scale alpha / r with A and B set, and a merged nn.Linear computing the same."""
    for seed, (in_f, out_f, rank, alpha) in enumerate(LORA_REGIMES):
        base, pristine, layer = _build(answer, in_f, out_f, rank, alpha, seed)
        lora_a = _factor(layer, "lora_A", (rank, in_f))
        lora_b = _factor(layer, "lora_B", (out_f, rank))
        x = torch.randn(4, 5, in_f, generator=torch.Generator().manual_seed(seed))  # (B, T, in)
        try:
            _check_trainable(layer, lora_a, lora_b, rank, in_f, out_f)
            _check_init(layer, pristine, x, lora_b)
            _check_training(layer, base, pristine, x, lora_a, lora_b)
            _check_scale_and_merge(layer, base, pristine, x, lora_a, lora_b, rank, alpha, seed)
        except CheckFailed as failure:
            raise CheckFailed(f"nn.Linear({in_f}, {out_f}), rank {rank}, alpha {alpha}: {failure}"
                              ) from failure.__cause__
    passed("lab06.lora_linear")


# --------------------------------------------------------------------------- lab06.freeze_for_strategy

#: The "lora" strategy, as chapter 6's ``utils.chapters.ch06_finetuning``: adapters of this rank and alpha on the attention's
#: query/key/value projection and output projection of every block.
STRATEGY_RANK, STRATEGY_ALPHA = 8, 16.0
LORA_TARGETS = ("attn.c_attn", "attn.c_proj")
STRATEGIES = ("frozen", "full", "lora")
_SMALL_GPT = GPTConfig(vocab_size=13, block_size=8, n_layer=2, n_head=2, n_embd=16)


def small_classifier(seed: int = 0) -> nn.ModuleDict:
    """A pretrained-body stand-in: ``body`` a small GPT (2 blocks, C = 16), ``head`` nn.Linear(16, 3)."""
    torch.manual_seed(seed)
    return nn.ModuleDict({"body": GPT(_SMALL_GPT), "head": nn.Linear(_SMALL_GPT.n_embd, 3)})


def _body_fault(trainable: list[str], body: list[str], in_eval: bool) -> str:
    if set(trainable) == set(body):
        note = "; eval() freezes nothing (it only switches dropout off)" if in_eval else ""
        return f"the body is left trainable: set requires_grad to False on every parameter of model.body{note}"
    embeddings = {n for n in body if ".wte." in n or ".wpe." in n}
    norms = {n for n in body if ".ln_" in n}
    if set(trainable) <= embeddings | norms and embeddings & set(trainable) and norms & set(trainable):
        return ("only the nn.Linear layers were frozen: the embedding tables and the LayerNorm scales and "
                "shifts are parameters of the body too")
    if set(trainable) <= embeddings:
        return "the token and position embeddings (wte, wpe) are still trainable: freeze them too"
    if set(trainable) <= norms:
        return "the LayerNorm parameters (ln_1, ln_2, ln_f) are still trainable: freeze them too"
    if all(n.endswith(".bias") for n in trainable):
        return "the biases of the body are still trainable: freeze every parameter, not only the weights"
    return f"{len(trainable)} parameters of the body still train, e.g. {trainable[:3]}"


def _adapter_fault(model: nn.Module, new: dict[str, nn.Parameter], rank: int) -> str | None:
    blocks, width = _SMALL_GPT.n_layer, _SMALL_GPT.n_embd
    per_block = lora.lora_parameter_count(width, 3 * width, rank) + lora.lora_parameter_count(width, width, rank)
    if not new:
        return "no adapters were added: the lora strategy wraps attn.c_attn and attn.c_proj in LoRA layers"
    outside = [n for n in new if not any(f".{target}." in n for target in LORA_TARGETS)]
    if outside:
        return f"adapters on layers other than the attention's c_attn and c_proj: {outside[:3]}"
    bare = [f"h.{i}.{target}" for i in range(blocks) for target in LORA_TARGETS
            if not any(f".h.{i}.{target}." in n for n in new)]
    if bare:
        return f"no adapter on {bare}: the lora strategy adapts attn.c_attn and attn.c_proj of every block"
    count = sum(p.numel() for p in new.values())
    if count != blocks * per_block:
        return (f"the adapters train {count} numbers; rank {rank} on c_attn ({width} -> {3 * width}) and "
                f"c_proj ({width} -> {width}) of {blocks} blocks trains {blocks} x {rank} x ({width} + "
                f"{3 * width} + {width} + {width}) = {blocks * per_block}: check the rank")
    return None


def _check_adapter_scale(c_attn: nn.Module, pristine: nn.Linear, new: dict[str, nn.Parameter]) -> None:
    """Set block 0's A (rank, C) and B (3C, rank) to known values: the update must be (alpha / rank) B A."""
    rank, width = STRATEGY_RANK, _SMALL_GPT.n_embd
    mine = [p for name, p in new.items() if ".h.0.attn.c_attn." in name]
    factors = {tuple(p.shape): p for p in mine}
    if len(mine) != 2 or set(factors) != {(rank, width), (3 * width, rank)}:
        raise CheckFailed("each c_attn adapter holds A (rank, C) and B (3C, rank), as in the first exercise; "
                          f"block 0's has {[tuple(p.shape) for p in mine]}")
    generator = torch.Generator().manual_seed(0)
    a_value, b_value = torch.randn(rank, width, generator=generator), torch.randn(3 * width, rank,
                                                                                  generator=generator)
    x = torch.randn(2, 3, width, generator=generator)  # (B, T, C)
    with torch.no_grad():
        factors[rank, width].copy_(a_value)
        factors[3 * width, rank].copy_(b_value)
        update = c_attn(x) - pristine(x)  # (B, T, 3C)
        low = x @ a_value.T @ b_value.T
    if not _close(update, STRATEGY_ALPHA / rank * low):
        raise CheckFailed(f"the adapters' update is not (alpha / rank) B A with alpha = {STRATEGY_ALPHA:g} and "
                          f"rank = {rank}: check the alpha you pass")


def _strategy_fault(freeze_for: Callable[..., Any], strategy: str) -> str | None:
    model = small_classifier()
    originals, head = {id(p) for p in model.parameters()}, {id(p) for p in model["head"].parameters()}
    pristine = copy.deepcopy(model["body"].transformer.h[0].attn.c_attn)
    idx = torch.randint(0, _SMALL_GPT.vocab_size, (2, 6), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = model["body"](idx)[0]  # (2, 6, V)
    if call(freeze_for, model, strategy) is not model:
        return f"freeze_for(model, {strategy!r}) must return the model it was given, changed in place"
    named = dict(model.named_parameters())
    body = [n for n, p in named.items() if id(p) in originals and id(p) not in head]
    trainable = [n for n in body if named[n].requires_grad]
    new = {n: p for n, p in named.items() if id(p) not in originals and p.requires_grad}
    if any(not p.requires_grad for p in model["head"].parameters()):
        return f"strategy {strategy!r}: the head is frozen too: a new head starts random, so it must train"
    if strategy == "full":
        if set(trainable) != set(body):
            return (f"full fine-tuning trains every parameter, but {len(body) - len(trainable)} parameter "
                    "tensors of the body are frozen")
    elif trainable:
        return f"strategy {strategy!r}: {_body_fault(trainable, body, not model['body'].training)}"
    if strategy != "lora":
        return f"strategy {strategy!r} adds no parameters, but {list(new)[:3]} appeared" if new else None
    with torch.no_grad():
        if not _close(model["body"](idx)[0], before):
            return "lora changed the model's output at the start: every adapter's B must start at zero"
    fault = _adapter_fault(model, new, STRATEGY_RANK)
    if fault is None:
        _check_adapter_scale(model["body"].transformer.h[0].attn.c_attn, pristine, new)
    return fault


@checker("lab06.freeze_for_strategy")
def check_freeze_for_strategy(freeze_for: Callable[..., Any]) -> None:
    """``freeze_for(model, strategy)`` on ``small_classifier()``: "frozen" trains the head only, "full"
    everything, "lora" the head and rank-8 adapters (alpha 16) on ``LORA_TARGETS``; others: ValueError."""
    for strategy in STRATEGIES:
        fault = _strategy_fault(freeze_for, strategy)
        if fault:
            raise CheckFailed(fault)
    try:
        call(freeze_for, small_classifier(), "everything")
    except CheckFailed as failure:
        if not isinstance(failure.__cause__, ValueError):
            raise
    else:
        raise CheckFailed("freeze_for(model, 'everything') returned without complaint: an unknown strategy "
                          "must raise a ValueError that names the strategies it knows")
    passed("lab06.freeze_for_strategy")


# --------------------------------------------------------------------------- lab06.sft_labels

#: (prompt ids, answer ids, length, pad id): padding, none (P + A = length), a repeated token that appears
#: in both parts, a one-token prompt (nothing to mask).
SFT_CASES = [([5, 9, 3, 7], [12, 4, 8], 10, 0), ([2, 6], [11], 4, 1), ([7, 7, 7, 2, 9], [7, 3, 3], 8, 0),
             ([4], [5, 6], 5, 2)]


def sft_reference(prompt: list[int], answer: list[int], length: int, pad_id: int,
                  keep: Callable[[int, int], bool] = lambda j, p: j >= p, masked: int = -100,
                  pad_label: int = -100, shift: int = 1) -> list[int]:
    """The labels of ``prompt + answer`` padded to ``length``: position t is scored against token t + 1
    when ``keep(t + 1, len(prompt))`` (an answer token), else ``masked``; past the sequence, ``pad_label``.
    The other arguments describe mistakes."""
    sequence = prompt + answer
    return [(sequence[t + shift] if keep(t + shift, len(prompt)) else masked) if t + shift < len(sequence)
            else pad_label for t in range(length)]


_SFT_MISTAKES = [  # (how the labels were made, what is wrong)
    ({"keep": lambda j, p: True}, "the prompt is not masked: every position whose target is a prompt token "
                                  "needs the label -100"),
    ({"keep": lambda j, p: j > p}, "off by one: the first answer token's target is masked too; the last "
                                   "prompt position predicts it and must keep it"),
    ({"keep": lambda j, p: j >= p - 1}, "off by one: the last prompt token is still a target"),
    ({"masked": 0, "pad_label": 0}, "masked with 0 instead of -100: 0 is a real token id, and "
                                    "cross_entropy ignores only ignore_index = -100"),
    ({"keep": lambda j, p: j < p}, "the answer is masked instead of the prompt"),
    ({"shift": 0}, "the labels are not shifted: the label at position t is the next token, t + 1 (GPT.forward "
                   "scores its logits at t against targets at t)"),
]


def _as_ids(value: Any, length: int, what: str) -> list[int]:
    tensor = torch.as_tensor(value) if not isinstance(value, torch.Tensor) else value
    if tensor.is_floating_point():
        raise CheckFailed(f"{what} holds floats: token ids and labels are integers (int64 for cross_entropy)")
    if tuple(tensor.shape) != (length,):
        raise CheckFailed(f"{what} has shape {tuple(tensor.shape)}; expected ({length},): padded to length")
    return [int(v) for v in tensor.tolist()]


def _inputs_fault(inputs: list[int], prompt: list[int], answer: list[int], pad_id: int) -> str | None:
    sequence, n = prompt + answer, len(prompt) + len(answer)
    last_ok = n > len(inputs) or inputs[n - 1] in (sequence[-1], pad_id)  # only a target: either is fine
    if inputs[:n - 1] == sequence[:-1] and last_ok and all(v == pad_id for v in inputs[n:]):
        return None
    if inputs[n:] and all(v == -100 for v in inputs[n:]):
        return "the inputs are padded with -100: -100 is for labels only; pad the input ids with pad_id"
    return f"input_ids are {inputs}; expected the prompt, then the answer, then pad_id up to the length"


def _sft_answer(sft_labels: Callable[..., Any], case: tuple) -> tuple[list[int], list[int]]:
    prompt, answer, length, pad_id = copy.deepcopy(case)
    what = f"sft_labels({prompt}, {answer}, length={length}, pad_id={pad_id})"
    result = call(sft_labels, prompt, answer, length, pad_id)
    if (prompt, answer) != case[:2]:
        raise CheckFailed(f"{what} changed the prompt or answer list it was given (+= or append on it): build "
                          "a new list")
    if not isinstance(result, (tuple, list)) or len(result) != 2:
        raise CheckFailed(f"{what} must return two sequences, (input_ids, labels)")
    inputs, labels = (_as_ids(v, length, f"{what}'s {name}")
                      for v, name in zip(result, ("input_ids", "labels"), strict=True))
    if inputs == sft_reference(*case) and _inputs_fault(labels, prompt, answer, pad_id) is None:
        raise CheckFailed(f"{what}: the two are swapped; return (input_ids, labels)")
    fault = _inputs_fault(inputs, prompt, answer, pad_id)
    if fault:
        raise CheckFailed(f"{what}: {fault}")
    return inputs, labels


@checker("lab06.sft_labels")
def check_sft_labels(sft_labels: Callable[..., Any]) -> None:
    """``sft_labels(prompt_ids, answer_ids, length, pad_id)`` -> ``(input_ids, labels)``, each of ``length``:
    labels are next-token targets, -100 wherever the target is a prompt token or padding."""
    labels = {i: _sft_answer(sft_labels, case)[1] for i, case in enumerate(SFT_CASES)}
    wrong = [i for i, case in enumerate(SFT_CASES) if labels[i] != sft_reference(*case)]
    if not wrong:
        passed("lab06.sft_labels")
        return
    for changes, mistake in _SFT_MISTAKES:
        if all(labels[i] == sft_reference(*case, **changes) for i, case in enumerate(SFT_CASES)):
            raise CheckFailed(mistake)
    if all(labels[i] == sft_reference(*case, pad_label=case[3]) for i, case in enumerate(SFT_CASES)):
        raise CheckFailed("the padding is not masked: every position past the sequence needs the label -100")
    prompt, answer, length, pad_id = SFT_CASES[wrong[0]]
    raise CheckFailed(f"sft_labels({prompt}, {answer}, length={length}, pad_id={pad_id}) gave the labels "
                      f"{labels[wrong[0]]}; expected {sft_reference(*SFT_CASES[wrong[0]])}")
