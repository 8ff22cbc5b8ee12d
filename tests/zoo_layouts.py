"""The other layouts of the zoo (``tests/zoo.py``): one training of the book's loop, read back, written again
as another library or tutorial logs it: the PyTorch tutorial's ``Loss/train`` + ``Loss/test`` (tensorboardX),
one writer per split (``RUN/train`` + ``RUN/val``, torch.utils.tensorboard), Hugging Face's Trainer's tags
(``train/loss`` averaged over ``HF_LOGGING_STEPS`` updates against 1-based global steps, ``eval/*`` once per
epoch), and ``add_scalars``'s sub-writers. ``WRITERS``: layout name -> ``writer(path, trained)``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # only for the annotations: tests.zoo imports this module
    from tests.zoo import Trained

HF_LOGGING_STEPS = 10


def _series(trained: Trained, tag: str) -> tuple[np.ndarray, np.ndarray]:
    """A tag's (steps, values), empty when the run never logged it (a loss non-finite at its first update)."""
    return trained.scalars.get(tag, (np.array([], dtype=int), np.array([])))


def _write(writer, scalars: dict[str, tuple[Sequence[int], Sequence[float]]]) -> None:
    for tag, (steps, values) in scalars.items():
        for step, value in zip(steps, values, strict=True):
            writer.add_scalar(tag, float(value), int(step))
    writer.close()


def write_tutorial(path: Path, trained: Trained) -> None:
    """The PyTorch tutorial's tags, by tensorboardX: ``Loss/train``, ``Loss/test``, ``Accuracy/test``."""
    from tensorboardX import SummaryWriter

    _write(SummaryWriter(str(path)), {"Loss/train": _series(trained, "train/loss"),
                                      "Loss/test": _series(trained, "val/loss"),
                                      "Accuracy/test": _series(trained, "val/accuracy")})


def write_split(path: Path, trained: Trained) -> None:
    """One writer per split, by torch.utils.tensorboard: ``train/`` and ``val/``, each ``loss``, ``accuracy``."""
    from torch.utils.tensorboard import SummaryWriter

    _write(SummaryWriter(str(path / "train")), {"loss": _series(trained, "train/loss"),
                                                "accuracy": _series(trained, "train/accuracy")})
    _write(SummaryWriter(str(path / "val")), {"loss": _series(trained, "val/loss"),
                                              "accuracy": _series(trained, "val/accuracy")})


def _every_n(steps: np.ndarray, values: np.ndarray, n: int, mean: bool) -> tuple[np.ndarray, np.ndarray]:
    """Per block of ``n`` updates (and the last, partial one): the 1-based global step at its end, and the
    mean (``mean``) or the last value of the block."""
    if not len(steps):
        return steps, values
    ends = [i for i in range(len(steps)) if (i + 1) % n == 0 or i == len(steps) - 1]
    starts = [0] + [end + 1 for end in ends[:-1]]
    picked = [values[a:b + 1].mean() if mean else values[b] for a, b in zip(starts, ends, strict=True)]
    return steps[ends] + 1, np.asarray(picked)


def write_hf(path: Path, trained: Trained) -> None:
    """Hugging Face's Trainer's tags, by torch.utils.tensorboard, against 1-based global steps."""
    from torch.utils.tensorboard import SummaryWriter

    n = HF_LOGGING_STEPS
    loss_steps, loss = _every_n(*_series(trained, "train/loss"), n, mean=True)
    grad_steps, grad = _every_n(*_series(trained, "train/grad_norm"), n, mean=False)
    lr_steps, lr = _every_n(*_series(trained, "train/lr"), n, mean=False)
    evals = trained.epoch_evals
    eval_steps = [step + 1 for step, _ in evals]
    _write(SummaryWriter(str(path)), {
        "train/loss": (loss_steps, loss), "train/grad_norm": (grad_steps, grad), "train/learning_rate": (lr_steps, lr),
        "train/epoch": (loss_steps, loss_steps / trained.steps_per_epoch),
        "eval/loss": (eval_steps, [m["loss"] for _, m in evals]),
        **({"eval/accuracy": (eval_steps, [m["accuracy"] for _, m in evals])} if evals and "accuracy" in evals[0][1]
           else {})})


def write_add_scalars(path: Path, trained: Trained) -> None:
    """Curves overlaid with torch.utils.tensorboard's ``add_scalars``: ``add_scalars("loss", {"train": ...})``
    every update and ``{"val": ...}`` at every evaluation, ``"accuracy"`` likewise. Each name gets a
    sub-writer of its own (``loss_train/``, ``loss_val/``, ``accuracy_train/``, ``accuracy_val/``) holding
    the one tag ``loss`` or ``accuracy``."""
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(path))
    for main_tag in ("loss", "accuracy"):
        for name, tag in (("train", f"train/{main_tag}"), ("val", f"val/{main_tag}")):
            for step, value in zip(*_series(trained, tag), strict=True):
                writer.add_scalars(main_tag, {name: float(value)}, int(step))
    writer.close()


WRITERS = {"tutorial": write_tutorial, "split": write_split, "hf": write_hf, "add_scalars": write_add_scalars}
