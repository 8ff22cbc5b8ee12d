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
    from safetensors import safe_open
    from safetensors.torch import load_model

    from utils.gpt import GPT, GPTConfig
    from utils.tokenizers import tokenizer_from_dict

    path = Path(path) if path is not None else PRETRAINED_PATH
    if not path.is_file():
        if train_steps_if_missing is None:
            raise ckpt.CheckpointNotFoundError(
                f"no pretrained weights at {path}. Produce them with `{MAKE_COMMAND}` (about 5 minutes on "
                "2 CPU cores), or call load_pretrained(train_steps_if_missing=300) to train a weaker model now.")
        return _train_now(train_steps_if_missing)
    remedy = f"Restore it with git, or regenerate it with `{MAKE_COMMAND}`."
    digest = check_sha256(path, expected_sha256(path), remedy) if verify else sha256_file(path)
    with safe_open(str(path), framework="pt") as handle:
        meta = {key: json.loads(handle.metadata()[key]) for key in METADATA_KEYS}
    model = GPT(GPTConfig(**meta["model_config"]))
    load_model(model, str(path))  # restores the tied output matrix from the embedding
    model.to(device).eval()
    info = {"path": str(path), "sha256": digest, "source": "checkpoint", "metrics": meta["metrics"],
            "setup": meta["setup"], "model_config": meta["model_config"]}
    return model, tokenizer_from_dict(meta["tokenizer"]), info


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
