"""Pretraining the book's small GPT on Tiny Shakespeare with the one training loop (``utils.loop``).

Used twice, with the same code: live and short by chapter 5, and longer by

    python -m utils.pretrain --out utils/data/gpt_shakespeare.safetensors

which writes the shipped weights (safetensors, with the model config, tokenizer, settings and metrics as
metadata; about 3 MB), their SHA-256 (``<file>.sha256``, in ``sha256sum`` format) and the TensorBoard log
(``utils/data/gpt_shakespeare_run/pretrain/``). Full resumable checkpoints go to ``--checkpoint-dir``; a
killed run continues with ``--resume``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from utils import checkpoint as ckpt
from utils import perf, validate
from utils.batches import fixed_windows, random_windows
from utils.datasets import shakespeare_data
from utils.evaluation import evaluate, lm_loss
from utils.gpt import GPT, GPTConfig, flops_per_token
from utils.integrity import IntegrityError, sha256_file
from utils.loop import (
    AfterUpdate,
    TrainConfig,
    TrainResult,
    autocast_context,
    compute_dtype,
    open_segment,
    resolve_device,
    train,
)
from utils.optim import make_adamw
from utils.paths import checkpoints_dir


def _shipped_model() -> GPTConfig:
    return GPTConfig(vocab_size=65, block_size=64, n_layer=4, n_head=4, n_embd=128, dropout=0.0, bias=True)


def _shipped_training() -> TrainConfig:
    return TrainConfig(max_steps=2000, lr=2e-3, min_lr=2e-4, warmup_steps=100, grad_clip=1.0, log_every=10,
                       eval_every=250, sample_every=500, units="tokens", perplexity=True, desc="pretrain")


@dataclass
class PretrainSetup:
    """A pretraining run: the model (``GPTConfig``), the loop (``TrainConfig``), and the four settings that
    belong to neither. The defaults are the shipped checkpoint's: nanoGPT's CPU model size (4 layers, 4 heads,
    128-dim, context 64) with batch 32, peak lr 2e-3 after 100 warm-up steps, cosine to 2e-4."""

    model: GPTConfig = field(default_factory=_shipped_model)
    training: TrainConfig = field(default_factory=_shipped_training)
    batch_size: int = 32  # windows of model.block_size tokens per micro-batch
    weight_decay: float = 0.1
    eval_batches: int = 40  # fixed validation batches of batch_size x block_size tokens
    seed: int = 1337

    def __post_init__(self) -> None:
        if not isinstance(self.model, GPTConfig) or not isinstance(self.training, TrainConfig):
            raise ValueError("PretrainSetup takes model=GPTConfig(...) and training=TrainConfig(...), got "
                             f"{type(self.model).__name__} and {type(self.training).__name__}")
        validate.check_whole("batch_size", self.batch_size, 1)
        validate.check_whole("eval_batches", self.eval_batches, 1)
        validate.check_whole("seed", self.seed, 0)
        validate.check_number("weight_decay", self.weight_decay, 0.0)

    def with_training(self, **changes: Any) -> PretrainSetup:
        """A copy with some ``TrainConfig`` fields changed, e.g. ``setup.with_training(max_steps=500)``."""
        return dataclasses.replace(self, training=dataclasses.replace(self.training, **changes))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> PretrainSetup:
        return cls(**{**values, "model": GPTConfig(**values["model"]),
                      "training": TrainConfig(**values["training"])})


def build_model(setup: PretrainSetup) -> GPT:
    """``GPT(setup.model)``, its weights drawn from ``setup.seed``."""
    torch.manual_seed(setup.seed)
    return GPT(setup.model)


def sampler(tokenizer: Any, prompt: str = "\n", length: int = 200, seed: int = 0, temperature: float = 1.0,
            top_k: int | None = None):
    """``sample_fn`` for ``train``: ``length`` characters generated after ``prompt`` with a fixed seed (the
    same random draws at every call, so samples differ only because the model did)."""

    def sample_fn(model: torch.nn.Module) -> str:
        model.eval()
        device = next(model.parameters()).device
        generator = torch.Generator(device=device).manual_seed(seed)
        idx = torch.tensor([tokenizer.encode(prompt)], dtype=torch.long, device=device)  # (1, T0)
        out = model.generate(idx, length, temperature=temperature, top_k=top_k, generator=generator)
        return tokenizer.decode(out[0, len(prompt):].tolist())  # out: (1, T0 + length)

    return sample_fn


def pretrain(setup: PretrainSetup, *, writer: Any = None, resume_from: str | Path | None = None,
             data: tuple | None = None, peak_gflops: float | None = None,
             after_update: AfterUpdate | None = None) -> tuple[GPT, Any, TrainResult]:
    """Build the model and train it with ``utils.loop.train``. Returns ``(model, tokenizer, result)``.

    writer: a ``tb.RunWriter`` (open it with ``utils.loop.open_segment`` so that a resume joins the curves).
    data: ``shakespeare_data()`` if already loaded. peak_gflops: the MFU denominator; default: the matmul
    peak measured now on the run's device, in the dtype the run computes in. after_update: handed to
    ``utils.loop.train`` (``loop.interrupt_after(n)`` stops the run as a lost machine would).
    """
    tokenizer, train_ids, val_ids = data if data is not None else shakespeare_data()
    if tokenizer.vocab_size != setup.model.vocab_size:
        raise ValueError(f"setup.model.vocab_size is {setup.model.vocab_size} but the tokenizer has "
                         f"{tokenizer.vocab_size} tokens: set GPTConfig(vocab_size={tokenizer.vocab_size})")
    model = build_model(setup)
    config = dataclasses.replace(setup.training, flops_per_unit=float(flops_per_token(setup.model)))
    if peak_gflops is None:
        peak_gflops = _peak_gflops(config)
    block, batch = setup.model.block_size, setup.batch_size
    val_batches = fixed_windows(val_ids, block, batch, setup.eval_batches)
    result = train(
        model, make_adamw(model, config.lr, setup.weight_decay), config,
        batch_fn=random_windows(train_ids, block, batch, setup.seed), loss_fn=lm_loss,
        eval_fn=lambda m: evaluate(m, val_batches, lm_loss, units="tokens"), writer=writer,
        resume_from=resume_from, sample_fn=sampler(tokenizer), peak_gflops=peak_gflops,
        after_update=after_update, extra_state={"setup": setup.to_dict(), "tokenizer": tokenizer.to_dict()})
    return model, tokenizer, result


def _peak_gflops(config: TrainConfig) -> float:
    device = resolve_device(config.device)
    dtype = compute_dtype(autocast_context(config.autocast, device))
    return perf.matmul_peak_gflops(dtype=dtype, device=str(device))


def export_weights(path: str | Path, model: GPT, tokenizer: Any, setup: PretrainSetup,
                   metrics: dict[str, Any]) -> str:
    """Write the shipped weights as safetensors (fp32), atomically, and ``<path>.sha256``; return the hash.
    Metadata (JSON strings): ``model_config``, ``tokenizer``, ``setup``, ``metrics``. The tied embedding
    and output matrices are stored once (``safetensors.torch.save_model`` drops the duplicate name)."""
    from safetensors.torch import save_model

    path = Path(path)
    metadata = {"format": "llm-tb-book/gpt", "model_config": json.dumps(dataclasses.asdict(model.config)),
                "tokenizer": json.dumps(tokenizer.to_dict()), "setup": json.dumps(setup.to_dict()),
                "metrics": json.dumps(metrics)}
    tmp = path.with_name(path.name + ".tmp")
    save_model(model.float().cpu(), str(tmp), metadata=metadata)
    tmp.chmod(0o644)  # safetensors creates the file readable by its owner only
    tmp.replace(path)
    digest = sha256_file(path)
    sidecar = path.with_name(path.name + ".sha256")
    sidecar_tmp = sidecar.with_name(sidecar.name + ".tmp")
    sidecar_tmp.write_text(f"{digest}  {path.name}\n")
    sidecar_tmp.replace(sidecar)
    return digest


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m utils.pretrain", description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="the weights file to write (.safetensors)")
    parser.add_argument("--steps", type=validate.whole_number(1), default=PretrainSetup().training.max_steps)
    parser.add_argument("--checkpoint-dir", default=None,
                        help="full checkpoints (default: checkpoints/pretrain_<name of out>)")
    parser.add_argument("--checkpoint-every", type=validate.whole_number(0), default=250, help="0: never")
    parser.add_argument("--resume", action="store_true", help="continue from the newest full checkpoint")
    parser.add_argument("--threads", type=validate.whole_number(0), default=0,
                        help="torch threads (0 = torch's default)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, mps or auto")
    return parser


def _checked_out(parser: argparse.ArgumentParser, out: str) -> Path:
    """``--out`` as an absolute path: a .safetensors file in a folder that exists."""
    path = Path(out).expanduser().resolve()
    if path.suffix != ".safetensors":
        parser.error(f"argument --out: {out!r} is not allowed: give a file name ending in .safetensors "
                     "(the weights are written in that format)")
    if path.is_dir():
        parser.error(f"argument --out: {out!r} is a folder: give the weights file to write in it, e.g. "
                     f"{path / 'gpt.safetensors'}")
    if not path.parent.is_dir():
        parser.error(f"argument --out: the folder {path.parent} does not exist: create it first (the weights, "
                     "their .sha256 and the run's log go there)")
    return path


def _checked_setup(parser: argparse.ArgumentParser, args: argparse.Namespace, out: Path) -> PretrainSetup:
    """The run's settings from the flags; ``BOOK_CHECKPOINTS_DIR`` and the device checked too."""
    try:
        folder = Path(args.checkpoint_dir) if args.checkpoint_dir else checkpoints_dir() / f"pretrain_{out.stem}"
        if folder.exists() and not folder.is_dir():
            raise ValueError(f"checkpoint folder {folder} is a file: pass --checkpoint-dir a folder")
        setup = PretrainSetup().with_training(
            max_steps=args.steps, warmup_steps=min(PretrainSetup().training.warmup_steps, args.steps // 10),
            checkpoint_every=args.checkpoint_every, checkpoint_dir=str(folder), device=args.device,
            progress=False)
        resolve_device(setup.training.device)  # a GPU asked for must be present
    except ValueError as exc:
        parser.error(validate.as_flags(str(exc), ["device"]))
    return setup


def _checked_resume(parser: argparse.ArgumentParser, args: argparse.Namespace, setup: PretrainSetup,
                    tokenizer: Any) -> Path | None:
    """With ``--resume``, the newest readable checkpoint, refused unless it is this run's: the same model and
    tokenizer, and fewer steps done than ``--steps``. Checked before anything is written."""
    if not args.resume:
        return None
    folder = Path(setup.training.checkpoint_dir)
    remedy = ("Resume with the settings it was written with, or start afresh: without --resume, or with "
              "another --checkpoint-dir.")
    try:
        path = ckpt.latest_checkpoint(folder)
        if path is None:
            found = [p.name for p in ckpt.list_checkpoints(folder)]
            parser.error(f"--resume: no readable checkpoint in {folder}"
                         + (f" ({found} cannot be read)" if found else "")
                         + ": run without --resume to start afresh")
        state = ckpt.read_checkpoint(path)
        extra = state.get("extra", {})
        if "setup" not in extra or "tokenizer" not in extra:
            raise ckpt.CheckpointMismatchError(f"{path} was not written by utils.pretrain: it records no setup "
                                               f"and tokenizer. {remedy}")
        ckpt.check_same(path, "model", extra["setup"].get("model"), dataclasses.asdict(setup.model), remedy)
        ckpt.check_same(path, "tokenizer", extra["tokenizer"], tokenizer.to_dict(), remedy)
    except ckpt.CheckpointError as exc:
        parser.error(str(exc))
    if state["step"] >= args.steps:
        parser.error(f"argument --steps: {path} is at step {state['step']} already, the end of a run of "
                     f"{args.steps} steps: nothing to resume; give --steps above {state['step']} to train on")
    return path


def main(argv: list[str] | None = None) -> None:
    parser = _parser()
    args = parser.parse_args(argv)
    out = _checked_out(parser, args.out)
    setup = _checked_setup(parser, args, out)
    try:
        data = shakespeare_data()
    except (IntegrityError, FileNotFoundError) as exc:
        parser.error(str(exc))
    resume_from = _checked_resume(parser, args, setup, data[0])
    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.resume:  # a fresh run: an earlier run's checkpoints must not be resumed later
        for old in ckpt.list_checkpoints(setup.training.checkpoint_dir):
            old.unlink()
    _run(out, setup, data, resume_from)


def _run(out: Path, setup: PretrainSetup, data: tuple, resume_from: Path | None) -> None:
    """Train (or resume), log beside ``out``, export the weights to ``out``."""
    start = time.perf_counter()
    print(f"pretraining -> {out}" + (f" (resuming from {resume_from})" if resume_from else ""), flush=True)
    with open_segment(f"{out.stem}_run", "pretrain", resume_from=resume_from, root=out.parent,
                      hparams=_flat(setup.to_dict())) as writer:
        model, tokenizer, result = pretrain(setup, writer=writer, resume_from=resume_from, data=data)
        val_loss = result.eval_metrics[-1]["loss"]
        writer.add_scalar("hparam/val_loss", val_loss, result.steps_done - 1)
    metrics = {"val_loss": val_loss, "steps": result.steps_done, "parameters": model.num_parameters(),
               "tokens": result.steps_done * setup.batch_size * setup.model.block_size
               * setup.training.grad_accum_steps, "tokens_per_s": result.units_per_s,
               "mfu": result.mfu if result.mfu is not None else -1.0,
               "train_seconds_this_segment": time.perf_counter() - start}
    digest = export_weights(out, model, tokenizer, setup, metrics)
    print(f"validation loss {val_loss:.4f} after {result.steps_done} steps; {result.units_per_s:.0f} tokens/s; "
          f"MFU {metrics['mfu']:.2f}; wrote {out} ({out.stat().st_size / 1e6:.1f} MB, sha256 {digest[:12]}...)")


def _flat(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"model": {"n_layer": 4}}`` -> ``{"model.n_layer": 4}``, None as "none" (hparams take scalars)."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = "none" if value is None else value
    return flat


if __name__ == "__main__":
    main()
