"""A zoo of real small trainings, each built with one known fault or none, to measure ``utils.diagnose`` on
(issue 20: "rules with a noise model, calibrated on a zoo"; ``benchmarks/diagnose_zoo.py`` scores it).

Every training but the GPT's (``gpt-*``: the book's ``utils.gpt.GPT``, two blocks, on the characters of Tiny
Shakespeare) and the Keras ones (below) is chapter 8's MLP on the 8x8 digits
(``utils.chapters.ch08_broken_runs``: its ``Setting``, ``digits_data``, ``DeepMLP``, ``make_optimizer``,
``loss_function``); each is trained by the book's loop (``utils.loop.train``) and logged by it in the book's
layout (``train/loss``, ``train/grad_norm``, ``train/lr``, ``val/loss``, ``val/accuracy``, ``weights/*`` and
``grads/*`` histograms, ``update_ratio/*``, and, with ``layer_stats_every``, ``grad_norm/<matrix>``,
``zero_share/<ReLU>`` and ``dead_share/<ReLU>``), plus, for the MLP, ``activations/layers.<i>`` histograms of
each hidden layer's output on 256 held-out images (what the dead-unit rule reads in a run without zero shares;
the loop does not log them). The same training is then written again in one other layout
(``tests/zoo_layouts.py``), in turn: the PyTorch tutorial's ``Loss/train`` + ``Loss/test`` (tensorboardX), one
writer per split (``RUN/train`` + ``RUN/val``, each logging ``loss`` and ``accuracy``,
torch.utils.tensorboard), or Hugging Face's Trainer's tags (``train/loss`` averaged over 10 updates,
``train/grad_norm``, ``train/learning_rate``, ``train/epoch`` every 10 global steps, 1-based; ``eval/loss``
and ``eval/accuracy`` once per epoch), or the curves overlaid by ``add_scalars("loss", {"train": ..., "val":
...})`` (torch.utils.tensorboard: one sub-writer per name).

The Keras recipes (``keras-*``) are the MLP rebuilt in Keras 3 (TensorFlow backend), trained by ``model.fit``
for ``Recipe.epochs`` epochs on the same digits split, logged only by Keras's own ``keras.callbacks.TensorBoard``
(layout ``keras/``): ``train/`` and ``validation/`` sub-writers holding ``epoch_loss``, ``epoch_accuracy`` (and
``epoch_learning_rate``, ``evaluation_*_vs_iterations``) as TF2 tensors, and weight histograms every
``KERAS_HISTOGRAM_EPOCHS`` epochs (``tests/zoo_keras.py``).

``write_zoo(folder)`` writes every recipe at every seed and batch size and returns ``{run name: fault}``;
run names are ``<layout>/<recipe>-b<batch>-s<seed>`` (what ``utils.diagnose`` calls them when given
``folder``). Faults are named as in ``tests.book_runs.FAULT_NAMES``, plus ``"healthy"``; two are facts, not
faults (``scaler_skips``, ``no_lr_schedule``), labelled only in the layouts that log them (``SHOWN_IN``).
One thread.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from tests.zoo_keras import train_keras
from tests.zoo_layouts import WRITERS
from utils.chapters import ch08_broken_runs as ch08

# facts only some layouts log, and those layouts: a loss scale (the book's only), a learning rate (the book's and
# Hugging Face's); in any other layout the run is a healthy one
SHOWN_IN = {"scaler_skips": {"book"}, "no_lr_schedule": {"book", "hf"}}
HISTOGRAM_EVERY = 25
UPDATE_RATIO_EVERY = 5
LAYER_STATS_EVERY = 5
LAYOUTS = ("book", "tutorial", "split", "hf", "add_scalars")  # the book's, then the others taken in turn
KERAS_LAYOUT = "keras"  # the Keras recipes' only layout: their callback's own
BASE = replace(ch08.Setting(), steps=200)  # depth 2, width 64, ReLU, SGD with momentum at 0.05


@dataclass(frozen=True)
class Recipe:
    """One kind of training: its fault, its setting (``batch`` is set per run), the batch sizes and seeds it
    is trained at, validation every ``eval_every`` updates, a linear warm-up of ``warmup`` updates, and a
    cosine decay to a tenth of the rate when ``decay`` (else a constant rate, as chapter 8). ``model``:
    ``"mlp"``, chapter 8's MLP on the digits, ``"gpt"``, the book's GPT on Tiny Shakespeare (of the
    setting, only ``optimizer``, ``lr``, ``weight_decay``, ``grad_clip`` and ``steps`` apply to it), or
    ``"keras"``, the MLP in Keras, trained for ``epochs`` epochs (not ``steps``, ``eval_every``, ``warmup``,
    ``decay``, ``grad_clip``: Keras validates once an epoch, at a constant rate). ``misaligned_from``: a data
    pipeline that breaks mid-run (a new shard in which a quarter of the labels are one row off their inputs).
    ``fp16``: mixed precision as it is trained outside the book's loop (which computes in bf16, without a
    scaler): its gradient scaler starts too high, so its first updates overflow and are skipped, by design."""

    fault: str
    setting: ch08.Setting
    batches: tuple[int, ...]
    eval_every: int = 10
    warmup: int = 0
    decay: bool = False
    why: str = ""
    model: str = "mlp"
    epochs: int = 0
    misaligned_from: int = 0  # from this update on, a quarter of each batch's labels are one row off (0: never)
    fp16: bool = False  # float16 autocast with torch.amp's GradScaler, by _train_fp16 instead of the book's loop
    keras_normalise: bool = False  # a Keras model begins with a Normalization layer adapted to its inputs


OVERFIT = replace(BASE, depth=1, width=256, optimizer="adamw", lr=3e-3, train_examples=50, steps=300)
EXPLODING = replace(BASE, depth=8, init="kaiming", init_gain=1.8, lr=0.02, steps=150)
VANISHING = replace(BASE, depth=6, activation="sigmoid", lr=0.1, steps=250)
GPT_BASE = replace(BASE, optimizer="adamw", lr=3e-3, steps=200)
GPT_BLOCK, GPT_VAL_BATCHES, GPT_EPOCH = 32, 4, 50  # context, validation windows (x 32), updates per "epoch"

RECIPES: dict[str, Recipe] = {
    "healthy-warmup": Recipe("healthy", BASE, (8, 16), warmup=20, decay=True,
                             why="small noisy batches, warm-up and cosine decay"),
    "healthy-sparse": Recipe("healthy", replace(BASE, lr=0.02, steps=250), (8, 16), eval_every=50, decay=True,
                             why="validation every 50 updates only"),
    "healthy-adamw": Recipe("healthy", replace(BASE, optimizer="adamw", lr=2e-3, weight_decay=0.01), (16, 32),
                            eval_every=20, warmup=30, decay=True, why="AdamW with warm-up"),
    "healthy-constant": Recipe("healthy", BASE, (32, 64), why="chapter 8's reference: a constant rate"),
    "constant-long": Recipe("no_lr_schedule", replace(BASE, lr=0.01, steps=1000), (8, 16), eval_every=50,
                            why="1,000 updates at a constant rate: no warm-up, no decay (two notes)"),
    "lr_too_high": Recipe("lr_too_high", replace(BASE, activation="tanh", lr=2.0), (16, 64),
                          why="tanh units, SGD at 40x the good rate: the loss climbs"),
    "lr_too_high-adamw": Recipe("lr_too_high", replace(BASE, optimizer="adamw", lr=0.5), (16, 64),
                                why="AdamW at 0.5: the loss jumps 100x in its first updates, then sits at ln 10"),
    "lr_too_low": Recipe("lr_too_low", replace(BASE, lr=5e-4), (16, 64), why="SGD at 1/100 of the good rate"),
    "overfitting": Recipe("overfitting", OVERFIT, (16, 50), why="50 examples, a wide layer, no regularisation"),
    "overfitting-sparse": Recipe("overfitting", OVERFIT, (16, 50), eval_every=50,
                                 why="the same, validated every 50 updates only"),
    "exploding_gradients": Recipe("exploding_gradients", EXPLODING, (16, 64),
                                  why="8 ReLU layers at 1.8x Kaiming's scale, no clipping"),
    "vanishing_gradients": Recipe("vanishing_gradients", VANISHING, (16, 64), why="6 sigmoid layers"),
    "dead_relus": Recipe("dead_relus", replace(BASE, lr=0.8), (16, 64), why="ReLUs at a high rate"),
    "data_shift": Recipe("data_shift", BASE, (16, 64), misaligned_from=120,
                         why="from update 120 on, a quarter of each batch's labels one row off: the loss climbs"),
    "fp16-scaler": Recipe("scaler_skips", BASE, (16, 64), fp16=True,
                          why="float16 with a GradScaler starting at 2^24: its first updates are skipped, by design"),
    "shuffled_labels": Recipe("shuffled_labels", replace(BASE, labels="shuffled"), (16, 64),
                              why="labels shuffled apart from their inputs"),
    "non_finite": Recipe("non_finite", replace(BASE, loss="class_mean_unguarded", steps=250), (48, 64),
                         why="the unguarded class-balanced loss: 0/0 when a class is absent from a batch"),
    "gpt-healthy": Recipe("healthy", GPT_BASE, (16, 32), model="gpt",
                          why="the book's GPT, AdamW at 3e-3: 4.2 -> about 2.5 nats per character"),
    "gpt-lr_too_high": Recipe("lr_too_high", replace(GPT_BASE, lr=0.3), (16, 32), model="gpt",
                              why="the GPT at 100x the rate: the loss jumps 5x in its first updates, the blocks' "
                                  "gradients die, and it ends near 3.4 nats"),
    "keras-healthy": Recipe("healthy", replace(BASE, optimizer="adamw", lr=1e-3), (32, 64), model="keras",
                            epochs=10, keras_normalise=True,
                            why="Keras, a Normalization layer, then Adam at its default rate for 10 epochs"),
    "keras-overfitting": Recipe("overfitting", replace(OVERFIT, lr=1e-2), (16, 50), model="keras", epochs=30,
                                why="Keras, 50 examples, a wide layer, no regularisation, 30 epochs"),
    "keras-lr_too_high": Recipe("lr_too_high", replace(BASE, activation="tanh", lr=2.0), (32, 64),
                                model="keras", epochs=10, why="Keras, tanh units, SGD at 40x the good rate"),
}


@dataclass
class Trained:
    """One training as logged in the book's layout, read back, and what the other layouts need."""

    run: Path
    scalars: dict[str, tuple[np.ndarray, np.ndarray]]  # tag -> (steps, values)
    epoch_evals: list[tuple[int, dict[str, float]]]  # (0-based step, metrics) at the end of each epoch
    steps_per_epoch: int


# --------------------------------------------------------------------------------------------- training


def _activation_logger(model: ch08.DeepMLP, x: torch.Tensor, writer, last: int):
    """``after_update`` that writes ``activations/layers.<i>`` (each hidden layer's output on ``x``) every
    ``HISTOGRAM_EVERY`` updates, through a forward hook on the model's activation module."""
    from utils import hooks

    def after_update(step: int, stats) -> None:
        if not hooks.due(HISTOGRAM_EVERY, step, last):
            return
        outputs: list[torch.Tensor] = []
        handle = model.activation.register_forward_hook(lambda _m, _i, out: outputs.append(out.detach()))
        try:
            with torch.no_grad():
                model(x)
        finally:
            handle.remove()
        for i, out in enumerate(outputs):
            if torch.isfinite(out).all():
                writer.add_histogram(f"activations/layers.{i}", out, step)

    return after_update


def _epoch_evaluator(model, evaluate, per_epoch: int, evals: list, inner):
    """``after_update``: ``inner``, then ``evaluate(model)`` at the end of each epoch into ``evals``."""

    def after_update(step: int, stats) -> None:
        inner(step, stats)
        if (step + 1) % per_epoch == 0:
            evals.append((step, evaluate(model)))
            model.train()

    return after_update


@dataclass
class Training:
    """What ``_train_logged`` needs of one model: the model and its optimizer, its batches and loss, its
    evaluation (``model -> {"loss": ...}``), the updates in an epoch (Hugging Face's evaluations), and an
    ``after_update`` of its own (``writer, last step -> after_update``), if any."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    batch_fn: Callable[[int], tuple[torch.Tensor, torch.Tensor]]
    loss_fn: Callable
    evaluate: Callable[[torch.nn.Module], dict[str, float]]
    per_epoch: int
    extra_logging: Callable | None = None


def _mlp_training(setting: ch08.Setting, seed: int) -> Training:
    """Chapter 8's MLP on the digits, with its activations logged (``_activation_logger``)."""
    from utils import batches, evaluation

    data = ch08.digits_data(setting, seed)
    torch.manual_seed(seed)
    model = ch08.DeepMLP(setting)
    return Training(model, ch08.make_optimizer(model, setting),
                    batches.epoch_batches(data.x_train, data.y_train, setting.batch, seed=seed),
                    ch08.loss_function(setting.loss),
                    lambda m: evaluation.evaluate(m, [(data.x_val, data.y_val)], evaluation.classification_loss),
                    math.ceil(len(data.x_train) / setting.batch),
                    lambda writer, last: _activation_logger(model, data.x_val[:256], writer, last))


@functools.lru_cache(maxsize=1)
def _shakespeare():
    """Tiny Shakespeare's training ids, and GPT_VAL_BATCHES fixed windows of its validation split."""
    from utils import batches, datasets

    tokenizer, train_ids, val_ids = datasets.shakespeare_data()
    val_fn = batches.random_windows(val_ids, GPT_BLOCK, 32, seed=99)
    return tokenizer.vocab_size, train_ids, [val_fn(i) for i in range(GPT_VAL_BATCHES)]


def _gpt_training(setting: ch08.Setting, seed: int) -> Training:
    """The book's GPT (``utils.gpt``), two blocks of width 48, on characters of Tiny Shakespeare; an "epoch"
    (when Hugging Face's layout evaluates) is GPT_EPOCH updates of random windows."""
    from utils import batches, evaluation
    from utils.gpt import GPT, GPTConfig

    vocab, train_ids, val = _shakespeare()
    torch.manual_seed(seed)
    model = GPT(GPTConfig(vocab_size=vocab, block_size=GPT_BLOCK, n_layer=2, n_head=2, n_embd=48))
    return Training(model, ch08.make_optimizer(model, setting),
                    batches.random_windows(train_ids, GPT_BLOCK, setting.batch, seed=seed), evaluation.lm_loss,
                    lambda m: evaluation.evaluate(m, val, evaluation.lm_loss, units="tokens"), GPT_EPOCH)


MISALIGNED_SHARE = 4  # 1 row in this many is one row off in a misaligned batch


def _misaligned(batch_fn: Callable, start: int) -> Callable:
    """``batch_fn`` whose batches from index ``start`` on have the labels of their first quarter of rows
    rolled one row within it (one micro-batch per update: the index is the update's)."""
    def batch(i: int):
        x, y = batch_fn(i)
        if i < start:
            return x, y
        off = len(y) // MISALIGNED_SHARE
        return x, torch.cat([y[:off].roll(1), y[off:]])

    return batch


FP16_INIT_SCALE = 2.0**24  # above what this MLP's float16 gradients fit: the scaler halves it, skipping


def _train_fp16(folder: Path, name: str, recipe: Recipe, setting: ch08.Setting, training: Training) -> Trained:
    """``training`` in float16 autocast with ``torch.amp.GradScaler("cpu")``, the usual mixed-precision
    loop, logged in the book's tags plus ``train/loss_scale``; ``train/grad_norm`` (unscaled, before
    clipping) is inf at an update the scaler skipped."""
    from utils import hooks, tb

    model, optimizer, last = training.model, training.optimizer, setting.steps - 1
    scaler = torch.amp.GradScaler("cpu", init_scale=FP16_INIT_SCALE)
    evals: list[tuple[int, dict[str, float]]] = []
    with tb.open_run("book", name, root=folder, allow_non_finite=True) as writer:
        for step in range(setting.steps):
            with torch.autocast("cpu", dtype=torch.float16):
                loss, metrics = training.loss_fn(model, training.batch_fn(step))
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)  # the true gradient, to measure and clip
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), setting.grad_clip or math.inf)
            scaler.step(optimizer)  # skipped when the gradient is not finite
            scaler.update()
            writer.add_step_scalars({"train/loss": loss.item(), "train/grad_norm": norm.item(),
                                     "train/loss_scale": scaler.get_scale(), "train/lr": setting.lr,
                                     **{f"train/{k}": v for k, v in metrics.items()}}, step)
            if hooks.due(recipe.eval_every, step, last):
                writer.add_step_scalars({f"val/{k}": v for k, v in training.evaluate(model).items()}, step)
            if (step + 1) % training.per_epoch == 0:
                evals.append((step, training.evaluate(model)))
            model.train()
        run = Path(writer.logdir)
    return Trained(run, _read_back(run), evals, training.per_epoch)


def _read_back(run: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    from utils import tb

    frame = tb.read_scalars(run)
    return {tag: (points.step.to_numpy(), points.value.to_numpy(dtype=float))
            for tag, points in frame.groupby("tag", sort=False)}


def train_recipe(folder: Path, name: str, recipe: Recipe, batch: int, seed: int) -> Trained:
    """Train one recipe at one batch size and seed with ``utils.loop.train``, logged to
    ``folder/book/<name>``; return its scalars read back."""
    from utils import loop, tb

    setting = replace(recipe.setting, batch=batch)
    training = (_gpt_training if recipe.model == "gpt" else _mlp_training)(setting, seed)
    if recipe.misaligned_from:
        training.batch_fn = _misaligned(training.batch_fn, recipe.misaligned_from)
    if recipe.fp16:
        return _train_fp16(folder, name, recipe, setting, training)
    min_lr = setting.lr / 10 if recipe.decay else setting.lr
    config = loop.TrainConfig(max_steps=setting.steps, lr=setting.lr, min_lr=min_lr, warmup_steps=recipe.warmup,
                              grad_clip=setting.grad_clip, eval_every=recipe.eval_every,
                              histogram_every=HISTOGRAM_EVERY, update_ratio_every=UPDATE_RATIO_EVERY,
                              layer_stats_every=LAYER_STATS_EVERY, progress=False)
    evals: list[tuple[int, dict[str, float]]] = []
    with tb.open_run("book", name, root=folder, hparams=ch08.setting_hparams(setting),
                     allow_non_finite=True) as writer:
        extra = training.extra_logging(writer, setting.steps - 1) if training.extra_logging else \
            (lambda step, stats: None)
        loop.train(training.model, training.optimizer, config, batch_fn=training.batch_fn,
                   loss_fn=training.loss_fn, writer=writer, eval_fn=training.evaluate,
                   after_update=_epoch_evaluator(training.model, training.evaluate, training.per_epoch, evals,
                                                 extra))
        run = Path(writer.logdir)
    return Trained(run, _read_back(run), evals, training.per_epoch)


# --------------------------------------------------------------------------------------------- the zoo


def zoo_plan(seeds: Iterable[int] = (0, 1, 2), recipes: Iterable[str] | None = None,
             one_batch: bool = False) -> list[tuple[str, int, int, str]]:
    """``(recipe, batch, seed, other layout)`` of every training, the other layouts taken in turn so that
    each recipe is written in each of them across its seeds and batch sizes; a Keras recipe's layout is
    always ``KERAS_LAYOUT`` (its only one)."""
    plan = []
    others = [layout for layout in LAYOUTS if layout != "book"]
    for r, name in enumerate(recipes or RECIPES):
        sizes = RECIPES[name].batches[:1] if one_batch else RECIPES[name].batches
        for i, (batch, seed) in enumerate((b, s) for s in seeds for b in sizes):
            keras = RECIPES[name].model == "keras"
            plan.append((name, batch, seed, KERAS_LAYOUT if keras else others[(r + i) % len(others)]))
    return plan


def write_zoo(folder: str | Path, seeds: Iterable[int] = (0, 1, 2), recipes: Iterable[str] | None = None,
              one_batch: bool = False) -> dict[str, str]:
    """Train and write the zoo under ``folder``: ``{run name: fault}``, one run per training in the book's
    layout and one in another (``zoo_plan``), a Keras training's one run in its own. Runs torch on one
    thread, restoring the caller's count."""
    folder = Path(folder)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    labels: dict[str, str] = {}
    try:
        for name, batch, seed, layout in zoo_plan(seeds, recipes, one_batch):
            run = f"{name}-b{batch}-s{seed}"
            if layout == KERAS_LAYOUT:
                train_keras(folder / layout / run, RECIPES[name], batch, seed)
            else:
                WRITERS[layout](folder / layout / run, train_recipe(folder, run, RECIPES[name], batch, seed))
                labels[f"book/{run}"] = RECIPES[name].fault
            fault = RECIPES[name].fault
            labels[f"{layout}/{run}"] = "healthy" if layout not in SHOWN_IN.get(fault, {layout}) else fault
    finally:
        torch.set_num_threads(threads)
    return labels
