"""The book's pretrained small GPT: "load the checkpoint, else train".

``load_pretrained()`` returns ``(model, tokenizer, info)`` from ``utils/data/gpt_shakespeare.safetensors``
after checking its SHA-256 against ``gpt_shakespeare.safetensors.sha256``. The file was written by
``python -m utils.pretrain --out utils/data/gpt_shakespeare.safetensors`` (chapter 5's code, trained longer);
its training log is ``utils/data/gpt_shakespeare_run/pretrain``. safetensors holds tensors and string
metadata only, so loading it cannot run code. Chapters that need a pretrained model call this and never
depend on chapter 5 having run; ``train_steps_if_missing`` trains a small stand-in when the file is absent.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from utils import checkpoint as ckpt
from utils.integrity import check_sha256, sha256_file

#: The shipped weights, their hash file and their TensorBoard run.
PRETRAINED_PATH = Path(__file__).resolve().parent / "data" / "gpt_shakespeare.safetensors"
PRETRAINED_RUN = Path(__file__).resolve().parent / "data" / "gpt_shakespeare_run" / "pretrain"
MAKE_COMMAND = "make pretrained"
#: The JSON metadata ``utils.pretrain.export_weights`` stores beside the tensors.
METADATA_KEYS = ("model_config", "tokenizer", "setup", "metrics")
FORMAT = "llm-tb-book/gpt"  # the metadata's "format": what the weights are
#: What to do about a damaged or foreign weights file.
REMEDY = f"Restore it with git, or regenerate it with `{MAKE_COMMAND}`."


def expected_sha256(path: str | Path = PRETRAINED_PATH) -> str:
    """The hash recorded in ``<path>.sha256`` (``sha256sum`` format: ``<hex>  <file name>``)."""
    sidecar = Path(str(path) + ".sha256")
    if not sidecar.is_file():
        raise ckpt.CheckpointNotFoundError(f"{sidecar} is missing: it records the SHA-256 of {Path(path).name}. "
                                           f"Regenerate both with `{MAKE_COMMAND}`.")
    return sidecar.read_text().split()[0]


def load_pretrained(path: str | Path | None = None, *, verify: bool = True, device: str = "cpu",
                    train_steps_if_missing: int | None = None) -> tuple[Any, Any, dict[str, Any]]:
    """Load the pretrained GPT: ``(model in eval mode on device, CharTokenizer, info)``.

    info: ``path``, ``sha256``, ``source`` ("checkpoint" or "trained now"), ``metrics`` (``val_loss`` in
    nats per character, ``steps``, ``tokens``, ...), ``setup`` (``PretrainSetup.to_dict()``) and
    ``model_config``. verify: check the SHA-256 first (``utils.integrity.IntegrityError`` on a mismatch).
    train_steps_if_missing: when the file does not exist, pretrain that many steps now (chapter 5's code)
    instead of raising ``CheckpointNotFoundError``.
    """
    path = Path(path) if path is not None else PRETRAINED_PATH
    if not path.is_file():
        if train_steps_if_missing is None:
            raise ckpt.CheckpointNotFoundError(
                f"no pretrained weights at {path}. Produce them with `{MAKE_COMMAND}` (about 5 minutes on "
                "2 CPU cores), or call load_pretrained(train_steps_if_missing=300) to train a weaker model now.")
        return _train_now(train_steps_if_missing)
    digest = check_sha256(path, expected_sha256(path), REMEDY) if verify else sha256_file(path)
    meta = read_metadata(path)
    model, tokenizer = _model_and_tokenizer(path, meta)
    model.to(device).eval()
    info = {"path": str(path), "sha256": digest, "source": "checkpoint", "metrics": meta["metrics"],
            "setup": meta["setup"], "model_config": meta["model_config"]}
    return model, tokenizer, info


def _model_and_tokenizer(path: Path, meta: dict[str, Any]) -> tuple[Any, Any]:
    """The GPT and tokenizer a weights file's metadata describes, its tensors loaded into the GPT."""
    from safetensors import SafetensorError
    from safetensors.torch import load_model

    from utils.gpt import GPT, GPTConfig
    from utils.tokenizers import tokenizer_from_dict

    try:
        model = GPT(GPTConfig(**meta["model_config"]))
        tokenizer = tokenizer_from_dict(meta["tokenizer"])
    except (TypeError, ValueError, KeyError) as exc:
        raise ckpt.CheckpointCorruptError(f"{path} records an unusable model_config or tokenizer ({exc}). "
                                          f"{REMEDY}") from None
    try:
        load_model(model, str(path))  # restores the tied output matrix from the embedding
    except (RuntimeError, SafetensorError) as exc:
        raise ckpt.CheckpointMismatchError(f"{path}: its tensors do not fit the model its metadata describes "
                                           f"({str(exc).splitlines()[0][:200]}). {REMEDY}") from None
    return model, tokenizer


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The JSON metadata ``utils.pretrain.export_weights`` stored in a weights file, decoded; a file that is
    not safetensors (truncated, another format) or not the book's GPT raises ``CheckpointCorruptError``."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            raw = handle.metadata() or {}
    except (SafetensorError, OSError) as exc:
        raise ckpt.CheckpointCorruptError(f"cannot read {path} as safetensors ({exc}): the file is truncated or "
                                          f"not a weights file. {REMEDY}") from None
    missing = [key for key in ("format", *METADATA_KEYS) if key not in raw]
    if missing or raw["format"] != FORMAT:
        raise ckpt.CheckpointCorruptError(
            f"{path} is a safetensors file but not the book's GPT weights: its metadata lacks {missing} or has "
            f"format {raw.get('format')!r}, not {FORMAT!r} (utils.pretrain.export_weights writes it). {REMEDY}")
    try:
        return {key: json.loads(raw[key]) for key in METADATA_KEYS}
    except json.JSONDecodeError as exc:
        raise ckpt.CheckpointCorruptError(f"{path} has metadata that is not JSON ({exc}). {REMEDY}") from None


def _train_now(steps: int) -> tuple[Any, Any, dict[str, Any]]:
    from dataclasses import asdict

    from utils.pretrain import PretrainSetup, pretrain

    setup = PretrainSetup()
    setup = setup.with_training(max_steps=steps, warmup_steps=min(setup.training.warmup_steps, steps // 10),
                                eval_every=steps, sample_every=0)
    model, tokenizer, result = pretrain(setup)
    model.eval()
    metrics = {"val_loss": result.eval_metrics[-1]["loss"], "steps": result.steps_done}
    return model, tokenizer, {"path": None, "sha256": None, "source": "trained now", "metrics": metrics,
                              "setup": setup.to_dict(), "model_config": asdict(model.config)}
