"""The book's pretrained small GPT: "load the checkpoint, else train".

``load_pretrained()`` returns ``(model, tokenizer, info)`` from ``utils/data/gpt_shakespeare.pt`` after
checking its SHA-256 against ``gpt_shakespeare.pt.sha256``. The checkpoint was written by
``python -m utils.pretrain --out utils/data/gpt_shakespeare.pt`` (chapter 5's code, trained longer); its
training log is ``utils/data/gpt_shakespeare_run/pretrain``. Chapters that need a pretrained model call this
and never depend on chapter 5 having run; ``train_steps_if_missing`` trains a small stand-in when the file is
absent (e.g. a copy of the book without its data files).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from utils import checkpoint as ckpt
from utils.datasets import sha256_file

#: The shipped checkpoint, its hash file and its TensorBoard run.
PRETRAINED_PATH = Path(__file__).resolve().parent / "data" / "gpt_shakespeare.pt"
PRETRAINED_RUN = Path(__file__).resolve().parent / "data" / "gpt_shakespeare_run" / "pretrain"
MAKE_COMMAND = "python -m utils.pretrain --out utils/data/gpt_shakespeare.pt --threads 1"


class PretrainedIntegrityError(ckpt.CheckpointError, ValueError):
    """The checkpoint's SHA-256 is not the one recorded next to it."""


def expected_sha256(path: str | Path = PRETRAINED_PATH) -> str:
    """The hash recorded in ``<path>.sha256`` (``sha256sum`` format: ``<hex>  <file name>``)."""
    sidecar = Path(str(path) + ".sha256")
    if not sidecar.is_file():
        raise ckpt.CheckpointNotFoundError(f"{sidecar} is missing: it records the SHA-256 of {Path(path).name}. "
                                           f"Regenerate both with `{MAKE_COMMAND}`.")
    return sidecar.read_text().split()[0]


def load_pretrained(path: str | Path | None = None, *, verify: bool = True,
                    train_steps_if_missing: int | None = None) -> tuple[Any, Any, dict[str, Any]]:
    """Load the pretrained GPT: ``(model in eval mode, CharTokenizer, info)``.

    info: ``path``, ``sha256``, ``source`` ("checkpoint" or "trained now"), ``metrics`` (``val_loss`` in
    nats per character, ``steps``, ``tokens``, ...), ``setup`` (the ``PretrainSetup`` as a dict) and
    ``model_config``. verify: check the SHA-256 first (``PretrainedIntegrityError`` on a mismatch).
    train_steps_if_missing: when the file does not exist, pretrain that many steps now (chapter 5's code)
    instead of raising ``CheckpointNotFoundError``.
    """
    from utils.gpt import GPT, GPTConfig
    from utils.tokenizers import tokenizer_from_dict

    path = Path(path) if path is not None else PRETRAINED_PATH
    if not path.is_file():
        if train_steps_if_missing is None:
            raise ckpt.CheckpointNotFoundError(
                f"no pretrained checkpoint at {path}. Produce it with `{MAKE_COMMAND}` (about 10 minutes on "
                "2 CPU cores), or call load_pretrained(train_steps_if_missing=300) to train a weaker one now.")
        return _train_now(train_steps_if_missing)
    digest = sha256_file(path)
    if verify:
        expected = expected_sha256(path)
        if digest != expected:
            raise PretrainedIntegrityError(
                f"{path} has SHA-256 {digest}, but {path.name}.sha256 records {expected}: the file was modified "
                f"or truncated. Restore it with git, or regenerate it with `{MAKE_COMMAND}`.")
    state = ckpt.read_checkpoint(path)
    config = GPTConfig(**state["model_config"])
    model = GPT(config)
    model.load_state_dict(state["model"])
    model.eval()
    tokenizer = tokenizer_from_dict(state["tokenizer"])
    info = {"path": str(path), "sha256": digest, "source": "checkpoint", "metrics": dict(state["metrics"]),
            "setup": dict(state["setup"]), "model_config": dict(state["model_config"])}
    return model, tokenizer, info


def _train_now(steps: int) -> tuple[Any, Any, dict[str, Any]]:
    from dataclasses import asdict

    from utils.gpt import config_to_dict
    from utils.pretrain import PretrainSetup, pretrain

    setup = PretrainSetup(max_steps=steps, warmup_steps=min(PretrainSetup.warmup_steps, steps // 10),
                          eval_every=0, sample_every=0)
    model, tokenizer, result = pretrain(setup, progress=True)
    model.eval()
    metrics = {"val_loss": result.eval_metrics[-1]["loss"], "steps": result.steps_done}
    return model, tokenizer, {"path": None, "sha256": None, "source": "trained now", "metrics": metrics,
                              "setup": asdict(setup), "model_config": config_to_dict(model.config)}
