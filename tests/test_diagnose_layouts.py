"""``utils.diagnose`` on the layouts people really log (issue 20), each written by the library that writes it:
the PyTorch tutorial's ``Loss/train`` + ``Loss/test`` (tensorboardX and ``torch.utils.tensorboard``), one
writer per split (``RUN/train`` + ``RUN/val``, ``validation``, ``eval`` or ``test``, each logging ``loss``),
Hugging Face's Trainer (a real tiny run, and its tag names written by hand), PyTorch Lightning's tag names,
Keras's TensorBoard callback (a real tiny ``model.fit``) and TF2 ``tf.summary`` tensor scalars. Each run is
built with one known fault (overfitting, divergence) or none: a healthy run must get no finding at all, and
every run's report says which tag played which role. ``--tag role=TAG`` overrides the table; a bad role or
a tag no run has is refused with the usage line and exit status 2, nothing written.
"""

from __future__ import annotations

import hashlib
import math
import os
from pathlib import Path

import numpy as np
import pytest

from utils import diagnose
from utils.diagnose import roles as role_table

EPOCHS = 30
STEPS_PER_EPOCH = 20


# --------------------------------------------------------------------------------------------- curves


def train_curve(steps: np.ndarray, seed: int = 0) -> np.ndarray:
    """A training loss that keeps falling, with 2 % noise."""
    noise = 1 + 0.02 * np.random.default_rng(seed).standard_normal(len(steps))
    return (0.1 + 2.2 * np.exp(-steps / (8 * STEPS_PER_EPOCH))) * noise


def val_curve(epochs: np.ndarray, overfit: bool) -> np.ndarray:
    """Healthy: close above the training loss, falling. Overfitting: lowest at epoch 10, then 60 % up."""
    healthy = 0.15 + 2.2 * np.exp(-epochs * STEPS_PER_EPOCH / (8 * STEPS_PER_EPOCH))
    if not overfit:
        return healthy
    best = healthy[10]
    return np.where(epochs <= 10, healthy, best * (1 + 0.6 * (epochs - 10) / (EPOCHS - 10)))


def accuracy_curve(epochs: np.ndarray) -> np.ndarray:
    return 0.5 + 0.4 * (1 - np.exp(-epochs / 5))


def found(report: diagnose.RunReport) -> dict[tuple[str, str], int]:
    return {(f.rule, f.tag): f.step for f in report.findings}


def only_run(logdir: Path, **overrides: str) -> diagnose.RunReport:
    reports = diagnose.diagnose(logdir, overrides=overrides or None)
    assert len(reports) == 1, [r.run for r in reports]
    return reports[0]


def role_line(report: diagnose.RunReport) -> str:
    """The report's line that says which tag plays which role."""
    lines = [line for line in diagnose.format_report([report]).splitlines() if line.strip().startswith("roles:")]
    assert len(lines) == 1, diagnose.format_report([report])
    return lines[0]


# --------------------------------------------------------------------------------------------- writers


def _writer(kind: str, path: Path):
    if kind == "tensorboardX":
        from tensorboardX import SummaryWriter

        return SummaryWriter(str(path))
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(str(path))


def write(kind: str, path: Path, scalars: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    """Scalars ``{tag: (steps, values)}`` written by tensorboardX or torch.utils.tensorboard."""
    writer = _writer(kind, path)
    for tag, (steps, values) in scalars.items():
        for step, value in zip(steps, values, strict=True):
            writer.add_scalar(tag, float(value), int(step))
    writer.close()


def write_tf2(path: Path, scalars: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    """Scalars written by TF2 ``tf.summary`` (stored as tensors, as Keras writes them)."""
    import tensorflow as tf

    with tf.summary.create_file_writer(str(path)).as_default():
        for tag, (steps, values) in scalars.items():
            for step, value in zip(steps, values, strict=True):
                tf.summary.scalar(tag, float(value), step=int(step))
        tf.summary.flush()


WRITERS = ["tensorboardX", "torch"]
STEPS = np.arange(EPOCHS * STEPS_PER_EPOCH)
EVALS = np.arange(EPOCHS)


# --------------------------------------------------------------------------------------------- PyTorch tutorial


@pytest.mark.parametrize("kind", WRITERS)
@pytest.mark.parametrize("overfit", [False, True], ids=["healthy", "overfit"])
def test_pytorch_tutorial_tags_loss_train_and_loss_test(tmp_path, kind, overfit):
    write(kind, tmp_path / "tutorial", {
        "Loss/train": (STEPS, train_curve(STEPS)),
        "Loss/test": (EVALS * STEPS_PER_EPOCH, val_curve(EVALS, overfit)),
        "Accuracy/test": (EVALS * STEPS_PER_EPOCH, accuracy_curve(EVALS))})
    report = only_run(tmp_path)
    assert report.roles["loss"] == "Loss/train" and report.roles["val_loss"] == "Loss/test"
    assert report.roles["val_accuracy"] == "Accuracy/test"
    line = role_line(report)
    assert "loss=Loss/train" in line and "val_loss=Loss/test" in line and "not found:" in line
    assert "grad_norm" in line.split("not found:")[1]
    if overfit:
        assert found(report) == {("overfitting", "Loss/test"): 10 * STEPS_PER_EPOCH}
    else:
        assert report.findings == []


# --------------------------------------------------------------------------------------------- one writer per split


@pytest.mark.parametrize("kind", WRITERS)
@pytest.mark.parametrize("split", ["val", "validation", "eval", "test"])
def test_per_split_writers_are_one_run(tmp_path, kind, split):
    """``RUN/train`` and ``RUN/<split>`` both log ``loss`` and ``accuracy``: one run, the train writer's loss
    is the training loss, the other's the validation loss."""
    for name, overfit in (("healthy", False), ("overfit", True)):
        write(kind, tmp_path / name / "train", {"loss": (STEPS, train_curve(STEPS)),
                                                "accuracy": (STEPS, 0.9 - 0.4 * np.exp(-STEPS / 100))})
        write(kind, tmp_path / name / split, {"loss": (EVALS * STEPS_PER_EPOCH, val_curve(EVALS, overfit)),
                                              "accuracy": (EVALS * STEPS_PER_EPOCH, accuracy_curve(EVALS))})
    reports = {r.run: r for r in diagnose.diagnose(tmp_path)}
    assert sorted(reports) == ["healthy", "overfit"]
    for report in reports.values():
        assert report.roles["loss"] == "loss" and report.roles["val_loss"] == f"{split}/loss"
        assert report.roles["train_accuracy"] == "accuracy"
        assert report.roles["val_accuracy"] == f"{split}/accuracy"
        assert f"val_loss={split}/loss" in role_line(report)
    assert reports["healthy"].findings == []
    assert found(reports["overfit"]) == {("overfitting", f"{split}/loss"): 10 * STEPS_PER_EPOCH}


def test_a_validation_curve_is_never_judged_as_a_training_loss(tmp_path):
    """The validation writer's loss rises 4x (a divergence, were it a training loss): overfitting, and no
    divergence; a run with only a validation writer has no training loss at all."""
    write("tensorboardX", tmp_path / "run" / "train", {"loss": (STEPS, train_curve(STEPS))})
    rising = np.where(EVALS <= 10, 2.0 - EVALS / 10, 1.0 + 3.0 * (EVALS - 10) / (EPOCHS - 10))
    write("tensorboardX", tmp_path / "run" / "val", {"loss": (EVALS * STEPS_PER_EPOCH, rising)})
    write("tensorboardX", tmp_path / "only_val" / "val", {"loss": (EVALS * STEPS_PER_EPOCH, rising)})
    reports = {r.run: r for r in diagnose.diagnose(tmp_path)}
    assert found(reports["run"]) == {("overfitting", "val/loss"): 10 * STEPS_PER_EPOCH}
    assert "loss" not in reports["only_val"].roles and reports["only_val"].roles["val_loss"] == "val/loss"
    assert not any(f.rule in ("divergence", "plateau") for f in reports["only_val"].findings)


def write_add_scalars(kind: str, path: Path, main_tag: str, names: tuple[str, str], overfit: bool) -> None:
    """``add_scalars(main_tag, {train: ...})`` every step and ``add_scalars(main_tag, {val: ...})`` at every
    evaluation, as people overlay the two curves in one chart; the accuracy likewise, validation only."""
    train, val = names
    writer = _writer(kind, path)
    curve, val_loss = train_curve(STEPS), val_curve(EVALS, overfit)
    for step in STEPS:
        writer.add_scalars(main_tag, {train: float(curve[step])}, int(step))
        if step % STEPS_PER_EPOCH == 0:
            epoch = step // STEPS_PER_EPOCH
            writer.add_scalars(main_tag, {val: float(val_loss[epoch])}, int(step))
            writer.add_scalars("Accuracy", {val: float(accuracy_curve(EVALS)[epoch])}, int(step))
    writer.close()


@pytest.mark.parametrize("kind", WRITERS)
@pytest.mark.parametrize("main_tag, names", [("loss", ("train", "val")), ("Loss", ("Train", "Validation"))])
def test_add_scalars_sub_writers_are_one_run(tmp_path, kind, main_tag, names):
    """``add_scalars`` writes each name to a sub-writer of its own (torch: ``RUN/loss_val``; tensorboardX:
    ``RUN/loss/val``, a folder that looks like one writer per split), each logging the one tag ``loss``:
    one run, whose tags are ``loss/train`` and ``loss/val``; the role table matches them in any capitals."""
    for name, overfit in (("healthy", False), ("overfit", True)):
        write_add_scalars(kind, tmp_path / name, main_tag, names, overfit)
    layout = {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("events.out.tfevents.*")}
    assert len(layout) == 8  # per run: its own writer and three sub-writers
    sub = f"{main_tag}{'_' if kind == 'torch' else '/'}{names[1]}"
    assert any(path.startswith(f"overfit/{sub}/") for path in layout), layout
    reports = {r.run: r for r in diagnose.diagnose(tmp_path)}
    assert sorted(reports) == ["healthy", "overfit"]
    train_tag, val_tag = (f"{main_tag}/{name}" for name in names)
    for report in reports.values():
        assert report.roles["loss"] == train_tag and report.roles["val_loss"] == val_tag, report.roles
        assert report.roles["val_accuracy"] == f"Accuracy/{names[1]}"
        assert f"val_loss={val_tag}" in role_line(report)
    assert reports["healthy"].findings == []
    assert found(reports["overfit"]) == {("overfitting", val_tag): 10 * STEPS_PER_EPOCH}


# --------------------------------------------------------------------------------------------- PyTorch Lightning


@pytest.mark.parametrize("overfit", [False, True], ids=["healthy", "overfit"])
def test_lightning_tags(tmp_path, overfit):
    """Lightning's TensorBoardLogger: ``train_loss`` per step, ``val_loss`` per epoch and ``epoch`` per step,
    all against the global step."""
    val_steps = (EVALS + 1) * STEPS_PER_EPOCH - 1
    write("torch", tmp_path / "lightning_logs" / "version_0", {
        "train_loss": (STEPS, train_curve(STEPS)), "epoch": (STEPS, STEPS // STEPS_PER_EPOCH),
        "val_loss": (val_steps, val_curve(EVALS, overfit)), "val_acc": (val_steps, accuracy_curve(EVALS)),
        "lr-AdamW": (STEPS, np.full(len(STEPS), 1e-3))})
    report = only_run(tmp_path)
    assert report.roles == {"loss": "train_loss", "val_loss": "val_loss", "val_accuracy": "val_acc",
                            "lr": "lr-AdamW"}
    if overfit:
        assert found(report) == {("overfitting", "val_loss"): int(val_steps[10])}
    else:
        assert report.findings == []


# --------------------------------------------------------------------------------------------- Hugging Face


HF_EPOCHS = 3


def write_hf_like(path: Path, eval_loss: list[float], eval_accuracy: list[float], train_loss=None) -> None:
    """The tags and steps of Hugging Face's Trainer (``TensorBoardCallback``): ``train/loss``,
    ``train/grad_norm``, ``train/learning_rate``, ``train/epoch`` every 10 global steps, ``eval/*`` once per
    epoch, the run's summary (``train/train_loss`` ...) once at the end; written by torch.utils.tensorboard."""
    per_epoch, n = 50, len(eval_loss)
    steps = np.arange(10, n * per_epoch + 1, 10)
    evals = np.arange(1, n + 1) * per_epoch
    write("torch", path, {
        "train/loss": (steps, train_curve(steps) if train_loss is None else train_loss(steps)),
        "train/grad_norm": (steps, 2.0 + 0.3 * np.sin(steps)),
        "train/learning_rate": (steps, 5e-5 * (1 - steps / steps[-1] + 1e-3)),
        "train/epoch": (steps, steps / per_epoch),
        "eval/loss": (evals, np.asarray(eval_loss)), "eval/accuracy": (evals, np.asarray(eval_accuracy)),
        "eval/runtime": (evals, np.full(n, 1.5)), "eval/samples_per_second": (evals, np.full(n, 600.0)),
        "train/train_loss": (evals[-1:], np.array([0.4])), "train/total_flos": (evals[-1:], np.array([1e12]))})


HF_ROLES = {"loss": "train/loss", "val_loss": "eval/loss", "val_accuracy": "eval/accuracy",
            "grad_norm": "train/grad_norm", "lr": "train/learning_rate"}


def test_hugging_face_fine_tuning_whose_eval_loss_rises_while_accuracy_rises(tmp_path):
    """Fine-tuning for 3 epochs: the eval loss rises (the model grows confident) while eval accuracy rises.
    The model learned: no "no_validation_progress", and no finding at all."""
    write_hf_like(tmp_path / "finetune", [0.35, 0.37, 0.41], [0.86, 0.88, 0.89])
    report = only_run(tmp_path)
    assert report.roles == HF_ROLES
    assert report.findings == [], report.findings


def test_hugging_face_layout_that_diverges(tmp_path):
    def exploding(steps):
        return np.where(steps < 100, train_curve(steps), np.where(steps < 120, 9.0, np.nan))

    write_hf_like(tmp_path / "diverged", [0.5, 2.3, math.nan], [0.8, 0.5, 0.1], train_loss=exploding)
    report = only_run(tmp_path)
    assert report.roles == HF_ROLES
    assert found(report)[("divergence", "train/loss")] == 100
    assert any(f.severity == "error" for f in report.findings)


def _hf_trainer_run(logdir: Path, train_examples: int, epochs: int, width: int) -> None:
    """A real, tiny Hugging Face Trainer run (a torch MLP on a linear rule over 16 features), logged by its
    own TensorBoardCallback into ``logdir``."""
    import torch
    from transformers import Trainer, TrainingArguments

    class MLP(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Sequential(torch.nn.Linear(16, width), torch.nn.ReLU(), torch.nn.Linear(width, 2))

        def forward(self, x, labels=None):
            logits = self.net(x)
            return {"logits": logits, "loss": torch.nn.functional.cross_entropy(logits, labels)}

    g = torch.Generator().manual_seed(0)
    x = torch.randn(train_examples + 200, 16, generator=g)
    y = (x[:, 0] + x[:, 1] + 0.8 * torch.randn(len(x), generator=g) > 0).long()
    rows = [{"x": x[i], "labels": y[i]} for i in range(len(x))]
    args = TrainingArguments(output_dir=str(logdir / "out"), report_to=["tensorboard"], num_train_epochs=epochs,
                             per_device_train_batch_size=8, logging_steps=2, eval_strategy="epoch",
                             save_strategy="no", learning_rate=1e-2, use_cpu=True, disable_tqdm=True, seed=0)

    def accuracy(p):
        return {"accuracy": float((p.predictions.argmax(-1) == p.label_ids).mean())}

    torch.manual_seed(0)
    Trainer(model=MLP(), args=args, train_dataset=rows[:train_examples], eval_dataset=rows[train_examples:],
            compute_metrics=accuracy).train()


@pytest.mark.slow
def test_a_real_hugging_face_trainer_run(tmp_path, monkeypatch):
    """The Trainer's own TensorBoardCallback: a healthy run (800 examples, 3 epochs) is silent; memorising 24
    examples for 40 epochs with a wide layer is overfitting on ``eval/loss``."""
    pytest.importorskip("transformers")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for name, examples, epochs, width in (("healthy", 800, 3, 16), ("overfit", 24, 40, 256)):
        monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", str(tmp_path / "runs" / name))
        _hf_trainer_run(tmp_path / "work" / name, examples, epochs, width)
    reports = {r.run: r for r in diagnose.diagnose(tmp_path / "runs")}
    for report in reports.values():
        assert report.roles == HF_ROLES, report.roles
    assert reports["healthy"].findings == [], reports["healthy"].findings
    assert {f.rule for f in reports["overfit"].findings} == {"overfitting"}, reports["overfit"].findings


# --------------------------------------------------------------------------------------------- Keras and tf.summary


def test_tf2_keras_layout_against_iterations(tmp_path):
    """Keras with ``update_freq="batch"``: ``batch_loss`` in ``train/`` and ``evaluation_loss_vs_iterations``
    in ``validation/``, both against iterations, written as TF2 tensors."""
    write_tf2(tmp_path / "keras" / "train", {"batch_loss": (STEPS, train_curve(STEPS))})
    write_tf2(tmp_path / "keras" / "validation", {
        "evaluation_loss_vs_iterations": (EVALS * STEPS_PER_EPOCH, val_curve(EVALS, overfit=True))})
    report = only_run(tmp_path)
    assert report.roles == {"loss": "batch_loss", "val_loss": "validation/evaluation_loss_vs_iterations"}
    assert found(report) == {("overfitting", "validation/evaluation_loss_vs_iterations"): 10 * STEPS_PER_EPOCH}


def _keras_fit(logdir: Path, train_examples: int, epochs: int, width: int, lr: float) -> None:
    """A real ``model.fit`` with ``keras.callbacks.TensorBoard(histogram_freq=1)``: a ``Normalization`` layer
    (non-trainable mean, variance and count), two Dense layers, accuracy and a validation split."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(train_examples + 200, 16)).astype("float32")
    y = (x[:, 0] + x[:, 1] + 0.8 * rng.normal(size=len(x)) > 0).astype("int32")
    norm = keras.layers.Normalization()
    norm.adapt(x[:train_examples])
    model = keras.Sequential([keras.Input((16,)), norm, keras.layers.Dense(width, activation="relu"),
                              keras.layers.Dense(2)])
    model.compile(optimizer=keras.optimizers.Adam(lr), metrics=["accuracy"],
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x[:train_examples], y[:train_examples], validation_data=(x[train_examples:], y[train_examples:]),
              epochs=epochs, batch_size=16, verbose=0,
              callbacks=[keras.callbacks.TensorBoard(str(logdir), histogram_freq=1)])


@pytest.mark.slow
def test_a_real_keras_fit_with_the_tensorboard_callback(tmp_path):
    """Healthy (800 examples, 8 epochs at Adam's default rate): silent, its Normalization statistics (which never change, by
    design) are no dead layers. Memorising 24 examples for 40 epochs: overfitting on the validation
    writer's ``epoch_loss``."""
    _keras_fit(tmp_path / "healthy", 800, 8, 16, 1e-3)
    _keras_fit(tmp_path / "overfit", 24, 40, 256, 1e-2)
    reports = {r.run: r for r in diagnose.diagnose(tmp_path)}
    assert sorted(reports) == ["healthy", "overfit"]
    for report in reports.values():
        assert {k: report.roles[k] for k in ("loss", "val_loss", "train_accuracy", "val_accuracy", "lr")} == {
            "loss": "epoch_loss", "val_loss": "validation/epoch_loss", "train_accuracy": "epoch_accuracy",
            "val_accuracy": "validation/epoch_accuracy", "lr": "epoch_learning_rate"}
        assert "weights" in report.roles
        assert "weights=" in role_line(report)
    assert reports["healthy"].findings == [], reports["healthy"].findings
    assert {f.rule for f in reports["overfit"].findings} == {"overfitting"}, reports["overfit"].findings
    assert {f.tag for f in reports["overfit"].findings} == {"validation/epoch_loss"}


# --------------------------------------------------------------------------------------------- rules read right


def test_a_rising_training_loss_is_not_a_plateau(tmp_path):
    """Falling for 100 steps, then rising by 40 % (short of divergence): a rising loss, not a plateau."""
    steps = np.arange(400)
    loss = np.where(steps < 100, 2.3 - steps / 100, 1.3 * (1 + 0.4 * (steps - 100) / 300))
    write("tensorboardX", tmp_path / "rising", {"train/loss": (steps, loss)})
    report = only_run(tmp_path)
    assert "plateau" not in {f.rule for f in report.findings}
    assert found(report) == {("rising_loss", "train/loss"): 100}


# --------------------------------------------------------------------------------------------- --tag


def _custom_run(root: Path) -> Path:
    write("tensorboardX", root / "custom", {
        "objective/fit": (STEPS, train_curve(STEPS)),
        "objective/heldout": (EVALS * STEPS_PER_EPOCH, val_curve(EVALS, overfit=True))})
    return root


def test_tag_overrides_the_role_table(tmp_path):
    root = _custom_run(tmp_path)
    assert only_run(root).findings == []  # tags the table does not know: nothing to judge
    lines: list[str] = []
    status = diagnose.main([str(root), "--tag", "loss=objective/fit", "--tag", "val_loss=objective/heldout"],
                           out=lines.append)
    assert status == 0
    text = "\n".join(lines)
    assert "overfitting: objective/heldout step 200" in text
    assert "roles: loss=objective/fit, val_loss=objective/heldout" in text
    report = only_run(root, loss="objective/fit", val_loss="objective/heldout")
    assert found(report) == {("overfitting", "objective/heldout"): 10 * STEPS_PER_EPOCH}


def _snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*"))}


@pytest.mark.parametrize("flag, words", [
    ("los=train/loss", ["argument --tag", "'los=train/loss'", "unknown role 'los'", "val_loss"]),
    ("loss", ["argument --tag", "'loss'", "role=TAG"]),
    ("loss=no/such/tag", ["argument --tag", "'loss=no/such/tag'", "no run", "objective/fit"]),
], ids=["unknown-role", "no-equals", "missing-tag"])
def test_bad_tag_flags_are_refused_with_the_usage_line(tmp_path, capsys, flag, words):
    root = _custom_run(tmp_path)
    before = _snapshot(root)
    with pytest.raises(SystemExit) as exit_:
        diagnose.main([str(root), "--tag", flag], out=lambda _: None)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: python -m utils.diagnose"), err
    error_lines = [line for line in err.splitlines() if line.startswith("python -m utils.diagnose: error:")]
    assert len(error_lines) == 1, err
    for word in words:
        assert word in error_lines[0], err
    assert "Traceback" not in err
    assert _snapshot(root) == before


def test_the_role_table_documents_every_role():
    """Every role has a meaning, and the package docstring names every role and the ``--tag`` flag."""
    assert set(role_table.ROLE_TAGS) | set(role_table.LAYER_ROLES) | set(role_table.LAYER_SCALAR_ROLES) == \
        set(role_table.ROLES)
    for role in role_table.ROLES:
        assert role in diagnose.__doc__, role
    assert "--tag role=TAG" in diagnose.__doc__
