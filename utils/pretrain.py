"""Pretraining the book's small GPT on Tiny Shakespeare with the one training loop (``utils.train``).

Used twice, with the same code: live and short by chapter 5, and longer by

    python -m utils.pretrain --out utils/data/gpt_shakespeare.pt

which writes the shipped checkpoint (model weights, model config, tokenizer, metrics: no optimizer state,
about 3 MB), its SHA-256 (``gpt_shakespeare.pt.sha256``, in ``sha256sum`` format) and its TensorBoard log
(``utils/data/gpt_shakespeare_run/pretrain/``). Full resumable checkpoints go to ``--checkpoint-dir``; a
killed run continues with ``--resume``.
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from utils import checkpoint as ckpt
from utils import perf
from utils.datasets import sha256_file
from utils.paths import checkpoints_dir
from utils.train import (
    TrainConfig,
    TrainResult,
    evaluate,
    fixed_windows,
    lm_loss,
    make_adamw,
    random_windows,
    train,
)


@dataclass
class PretrainSetup:
    """Model and optimisation settings of a pretraining run. The defaults are those of the shipped checkpoint
    (nanoGPT's CPU model size: 4 layers, 4 heads, 128-dim, context 64; a larger batch and a schedule)."""

    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    block_size: int = 64
    dropout: float = 0.0
    batch_size: int = 32
    max_steps: int = 2000
    lr: float = 2e-3
    min_lr: float = 2e-4
    warmup_steps: int = 100
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    grad_accum_steps: int = 1
    eval_every: int = 250
    eval_batches: int = 40  # fixed validation batches of batch_size x block_size tokens
    log_every: int = 10
    sample_every: int = 500
    seed: int = 1337


def shakespeare_data(val_fraction: float = 0.1):
    """``(tokenizer, train_ids, val_ids)``: a ``CharTokenizer`` fitted on the whole corpus (65 characters) and
    the contiguous 90 % / 10 % split as 1-D int64 tensors."""
    from utils.datasets import load_tinyshakespeare, train_val_split_text
    from utils.tokenizers import CharTokenizer

    text = load_tinyshakespeare()
    tokenizer = CharTokenizer.fit(text)
    train_text, val_text = train_val_split_text(text, val_fraction)
    return (tokenizer, torch.tensor(tokenizer.encode(train_text), dtype=torch.long),
            torch.tensor(tokenizer.encode(val_text), dtype=torch.long))


def build_model(setup: PretrainSetup, vocab_size: int):
    """``GPT(GPTConfig(...))`` from the setup, seeded with ``setup.seed``."""
    from utils.gpt import GPT, GPTConfig

    torch.manual_seed(setup.seed)
    return GPT(GPTConfig(vocab_size=vocab_size, block_size=setup.block_size, n_layer=setup.n_layer,
                         n_head=setup.n_head, n_embd=setup.n_embd, dropout=setup.dropout, bias=True))


def sampler(tokenizer: Any, prompt: str = "\n", length: int = 200, seed: int = 0, temperature: float = 1.0):
    """``sample_fn`` for ``train``: ``length`` characters generated after ``prompt`` with a fixed seed (the
    same random draws at every checkpoint, so samples differ only because the model did)."""

    def sample_fn(model: torch.nn.Module) -> str:
        model.eval()
        generator = torch.Generator().manual_seed(seed)
        idx = torch.tensor([tokenizer.encode(prompt)], dtype=torch.long)  # (1, T0)
        out = model.generate(idx, length, temperature=temperature, generator=generator)  # (1, T0 + length)
        return tokenizer.decode(out[0, len(prompt):].tolist())

    return sample_fn


def train_config(setup: PretrainSetup, model: Any, **overrides: Any) -> TrainConfig:
    """The ``TrainConfig`` of a pretraining run (``overrides`` win: e.g. ``checkpoint_every``, ``progress``)."""
    from utils.gpt import flops_per_token

    values: dict[str, Any] = dict(
        max_steps=setup.max_steps, lr=setup.lr, min_lr=setup.min_lr, warmup_steps=setup.warmup_steps,
        grad_clip=setup.grad_clip, grad_accum_steps=setup.grad_accum_steps, log_every=setup.log_every,
        eval_every=setup.eval_every, sample_every=setup.sample_every, units="tokens",
        flops_per_unit=float(flops_per_token(model.config)), perplexity=True, desc="pretrain")
    values.update(overrides)
    return TrainConfig(**values)


def pretrain(setup: PretrainSetup, *, writer: Any = None, resume_from: str | Path | None = None,
             data: tuple | None = None, peak_gflops: float | None = None,
             **overrides: Any) -> tuple[Any, Any, TrainResult]:
    """Build the model and train it with ``utils.train.train``. Returns ``(model, tokenizer, result)``.

    writer: a ``tb.RunWriter`` (open it with ``utils.train.open_segment`` so that a resume joins the curves).
    data: ``shakespeare_data()`` if already loaded. overrides: ``TrainConfig`` fields.
    peak_gflops: the MFU denominator; default: the measured matmul peak in the dtype the run computes in.
    """
    tokenizer, train_ids, val_ids = data if data is not None else shakespeare_data()
    model = build_model(setup, tokenizer.vocab_size)
    optimizer = make_adamw(model, setup.lr, setup.weight_decay)
    config = train_config(setup, model, **overrides)
    if peak_gflops is None:
        bf16 = config.autocast == "bf16" or (config.autocast == "auto" and perf.bf16_autocast_supported())
        peak_gflops = perf.matmul_peak_gflops(dtype=torch.bfloat16 if bf16 else torch.float32)
    val_batches = fixed_windows(val_ids, setup.block_size, setup.batch_size, setup.eval_batches)
    result = train(
        model, optimizer, config, batch_fn=random_windows(train_ids, setup.block_size, setup.batch_size,
                                                          setup.seed),
        loss_fn=lm_loss, eval_fn=lambda m: evaluate(m, val_batches, lm_loss, units="tokens"), writer=writer,
        resume_from=resume_from, sample_fn=sampler(tokenizer), peak_gflops=peak_gflops,
        extra_state={"setup": asdict(setup), "tokenizer": tokenizer.to_dict()})
    return model, tokenizer, result


def export_weights(path: str | Path, model: Any, tokenizer: Any, setup: PretrainSetup,
                   metrics: dict[str, Any]) -> str:
    """Write the shipped, weights-only checkpoint atomically, and ``<path>.sha256``; return the hash.
    Contents: ``model`` (fp32 state dict), ``model_config``, ``tokenizer`` (dict), ``setup``, ``metrics``."""
    from utils.gpt import config_to_dict

    path = Path(path)
    state = {"format_version": ckpt.FORMAT_VERSION, "step": int(metrics.get("steps", 0)),
             "model": {k: v.detach().float().contiguous() for k, v in model.state_dict().items()},
             "model_config": config_to_dict(model.config), "tokenizer": tokenizer.to_dict(),
             "setup": asdict(setup), "metrics": dict(metrics)}
    ckpt.atomic_torch_save(state, path)
    digest = sha256_file(path)
    sidecar = path.with_name(path.name + ".sha256")
    tmp = sidecar.with_name(sidecar.name + ".tmp")
    tmp.write_text(f"{digest}  {path.name}\n")
    tmp.replace(sidecar)
    return digest


def main(argv: list[str] | None = None) -> None:

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="the weights-only checkpoint to write (.pt)")
    parser.add_argument("--steps", type=int, default=PretrainSetup.max_steps)
    parser.add_argument("--checkpoint-dir", default=None,
                        help="full checkpoints (default: checkpoints/pretrain_<name of out>)")
    parser.add_argument("--checkpoint-every", type=int, default=250)
    parser.add_argument("--resume", action="store_true", help="continue from the newest full checkpoint")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out).resolve()
    checkpoint_dir = Path(args.checkpoint_dir) if args.checkpoint_dir else checkpoints_dir() / f"pretrain_{out.stem}"
    setup = PretrainSetup(max_steps=args.steps, warmup_steps=min(PretrainSetup.warmup_steps, args.steps // 10))
    resume_from = ckpt.latest_checkpoint(checkpoint_dir) if args.resume else None
    if resume_from is not None and ckpt.read_checkpoint(resume_from)["step"] >= setup.max_steps:
        parser.error(f"{resume_from} is the end of a finished run of {setup.max_steps} steps: nothing to resume")
    if not args.resume and checkpoint_dir.is_dir():
        for old in ckpt.list_checkpoints(checkpoint_dir):
            old.unlink()
    from utils.train import open_segment

    start = time.perf_counter()
    print(f"pretraining {setup} -> {out}" + (f" (resuming from {resume_from})" if resume_from else ""), flush=True)
    with open_segment(f"{out.stem}_run", "pretrain", resume_from=resume_from, root=out.parent,
                      hparams={k: v for k, v in asdict(setup).items()}, hparam_metrics=["hparam/val_loss"]) as writer:
        model, tokenizer, result = pretrain(setup, writer=writer, resume_from=resume_from,
                                            checkpoint_every=args.checkpoint_every,
                                            checkpoint_dir=str(checkpoint_dir), progress=False)
        val_loss = result.eval_metrics[-1]["loss"]
        writer.add_scalar("hparam/val_loss", val_loss, result.steps_done - 1)
    seconds = time.perf_counter() - start
    metrics = {"val_loss": val_loss, "val_perplexity": math.exp(val_loss), "steps": result.steps_done,
               "tokens": result.steps_done * setup.batch_size * setup.block_size * setup.grad_accum_steps,
               "train_seconds_this_segment": seconds, "tokens_per_s": result.units_per_s,
               "mfu": result.mfu if result.mfu is not None else -1.0,
               "parameters": model.num_parameters()}
    digest = export_weights(out, model, tokenizer, setup, metrics)
    print(f"validation loss {val_loss:.4f} after {result.steps_done} steps, {seconds:.0f} s; "
          f"{result.units_per_s:.0f} tokens/s; MFU {metrics['mfu']:.2f}; wrote {out} "
          f"({out.stat().st_size / 1e6:.1f} MB, sha256 {digest[:12]}...)", flush=True)


if __name__ == "__main__":
    main()
