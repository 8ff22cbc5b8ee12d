"""TensorFlow and Keras, logged through tensorboardX into runs comparable with
``utils.loop``'s.

``TensorBoardXCallback``
    What the original article called ``tensorboardX.TBCallback`` (no such class exists): a
    ``keras.callbacks.Callback`` that writes ``model.fit``'s losses, metrics and learning rate through a
    tensorboardX writer, on the same step axis as the PyTorch loop (optimizer updates, 0-based).
``WarmupCosine``
    ``utils.schedule.warmup_cosine`` as a Keras ``LearningRateSchedule`` (the same numbers, step by step).
``tape_train``
    A ``tf.GradientTape`` training loop done correctly: validation data, a defined step counter (the
    optimizer's ``iterations``), batch-size-weighted averages, clipping, logging through tensorboardX.

TensorFlow and Keras are imported when these are used (``import keras`` costs about 7 s
on a 2-core CPU).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from utils.evaluation import WeightedMean


def _keras():
    import keras

    return keras


def _current_lr(optimizer: Any) -> float:
    return float(np.asarray(optimizer.learning_rate))


def make_callback_class():
    """Build the callback class (keras is imported only when it is needed); see
    ``TensorBoardXCallback``."""
    keras = _keras()

    class _TensorBoardXCallback(keras.callbacks.Callback):
        """Log ``model.fit`` through a tensorboardX ``writer`` (a ``tb.RunWriter``).

        Tags and steps (step = number of optimizer updates before this one, as in
        ``utils.loop``): ``train/loss_running`` and ``train/<metric>_running`` every
        ``log_every`` batches: what Keras passes to ``on_train_batch_end``, the *mean
        since the start of the epoch*, not the batch's own value; ``train/lr`` every
        ``log_every`` batches; ``train/loss``, ``train/<metric>`` (epoch means) and
        ``val/loss``, ``val/<metric>`` at the last update of each epoch;
        ``perf/examples_per_s`` per epoch; ``weights/<variable>`` histograms every
        ``histogram_every`` epochs (0 = never).
        """

        def __init__(self, writer: Any, log_every: int = 1, histogram_every: int = 0,
                     batch_size: int | None = None) -> None:
            super().__init__()
            self.writer = writer
            self.log_every = log_every
            self.histogram_every = histogram_every
            self.batch_size = batch_size
            self._epoch_start = 0.0
            self._epoch_batches = 0

        def _step(self) -> int:
            return int(np.asarray(self.model.optimizer.iterations)) - 1

        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            self._epoch_start = time.perf_counter()
            self._epoch_batches = 0

        def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
            self._epoch_batches += 1
            step = self._step()
            if self.log_every and step % self.log_every == 0:
                for name, value in (logs or {}).items():
                    self.writer.add_scalar(f"train/{name}_running", float(value), step)
                self.writer.add_scalar("train/lr", _current_lr(self.model.optimizer), step)

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            step = self._step()
            for name, value in (logs or {}).items():
                if name == "learning_rate":
                    continue
                tag = f"val/{name[4:]}" if name.startswith("val_") else f"train/{name}"
                self.writer.add_scalar(tag, float(value), step)
            seconds = time.perf_counter() - self._epoch_start
            if self.batch_size and seconds > 0:
                self.writer.add_scalar("perf/examples_per_s", self._epoch_batches * self.batch_size / seconds, step)
            if self.histogram_every and epoch % self.histogram_every == 0:
                for variable in self.model.trainable_variables:
                    self.writer.add_histogram(f"weights/{variable.path}", np.asarray(variable), step)
            self.writer.flush()

    return _TensorBoardXCallback


def TensorBoardXCallback(writer: Any, log_every: int = 1, histogram_every: int = 0,  # noqa: N802 (a class factory)
                         batch_size: int | None = None):
    """A ``keras.callbacks.Callback`` logging ``model.fit`` through tensorboardX (see
    ``make_callback_class`` for the tags). Use: ``model.fit(...,
    callbacks=[TensorBoardXCallback(writer, batch_size=64)])``."""
    return make_callback_class()(writer, log_every=log_every, histogram_every=histogram_every,
                                 batch_size=batch_size)


def warmup_cosine_schedule(max_lr: float, warmup_steps: int, total_steps: int, min_lr: float = 0.0):
    """``utils.schedule.warmup_cosine`` as a
    ``keras.optimizers.schedules.LearningRateSchedule``: Keras calls it with the
    optimizer's ``iterations`` (updates done so far = the 0-based index of this update).
    """
    keras = _keras()
    ops = keras.ops

    class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
        def __call__(self, step):
            step = ops.cast(step, "float32")
            warm = max_lr * (step + 1.0) / max(1, warmup_steps)
            progress = ops.clip((step - warmup_steps) / max(1, total_steps - warmup_steps), 0.0, 1.0)
            cosine = min_lr + 0.5 * (1.0 + ops.cos(math.pi * progress)) * (max_lr - min_lr)
            return ops.where(step < warmup_steps, warm, cosine)

        def get_config(self):
            return {"max_lr": max_lr, "warmup_steps": warmup_steps, "total_steps": total_steps, "min_lr": min_lr}

    return WarmupCosine()


def tape_train(model: Any, optimizer: Any, loss_fn: Callable, train_data: Any,
               val_data: Any, *, epochs: int, writer: Any = None,
               metric_fn: Callable | None = None, grad_clip: float | None = None,
               histogram_every: int = 0, schedule: Callable[[int], float] | None = None,
               progress: bool = True) -> dict[str, list]:
    """Train a Keras model with ``tf.GradientTape``, logging as ``utils.loop.train``
    does.

    train_data / val_data: iterables of ``(x, y)`` batches (a ``tf.data.Dataset``; its
    length need not be known). loss_fn(y, outputs) -> mean loss of the batch;
    metric_fn(y, outputs) -> mean metric (accuracy). The step is
    ``optimizer.iterations`` before the update (0-based), so steps never restart at an
    epoch. schedule(step) -> learning rate, assigned before each update (e.g.
    ``partial(warmup_cosine, ...)``). Validation after each epoch, averaged **by batch
    size** (``sum(loss_b * n_b) / sum(n_b)``), logged at the step of the epoch's last
    update. Returns ``{"steps", "train_loss", "val_steps", "val_loss", "val_metric"}``.
    """
    names = ("steps", "train_loss", "val_steps", "val_loss", "val_metric")
    history: dict[str, list] = {name: [] for name in names}
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(desc="GradientTape", unit="step", mininterval=1.0)
    for epoch in range(epochs):
        for x, y in train_data:
            step, loss, outputs, norm = _tape_update(model, optimizer, loss_fn, x, y,
                                                     grad_clip, schedule)
            history["steps"].append(step)
            history["train_loss"].append(loss)
            if writer is not None:
                writer.add_scalar("train/loss", loss, step)
                if metric_fn is not None:
                    accuracy = float(metric_fn(y, outputs))
                    writer.add_scalar("train/accuracy", accuracy, step)
                writer.add_scalar("train/lr", _current_lr(optimizer), step)
                writer.add_scalar("train/grad_norm", norm, step)
            if bar is not None:
                bar.update(1)
        step = int(optimizer.iterations.numpy()) - 1
        val_loss, val_metric = _tape_validate(model, loss_fn, metric_fn, val_data)
        history["val_steps"].append(step)
        history["val_loss"].append(val_loss)
        history["val_metric"].append(val_metric)
        if writer is not None:
            writer.add_scalar("val/loss", val_loss, step)
            if metric_fn is not None:
                writer.add_scalar("val/accuracy", val_metric, step)
            if histogram_every and epoch % histogram_every == 0:
                for variable in model.trainable_variables:
                    writer.add_histogram(f"weights/{variable.path}", variable.numpy(),
                                         step)
    if bar is not None:
        bar.close()
    return history


def _tape_update(model: Any, optimizer: Any, loss_fn: Callable, x: Any, y: Any, grad_clip: float | None,
                 schedule: Callable[[int], float] | None) -> tuple[int, float, Any, float]:
    """One update: ``(step, loss, outputs, gradient norm before clipping)``."""
    import tensorflow as tf

    step = int(optimizer.iterations.numpy())
    if schedule is not None:
        optimizer.learning_rate.assign(schedule(step))
    with tf.GradientTape() as tape:
        outputs = model(x, training=True)
        loss = loss_fn(y, outputs)
    grads = tape.gradient(loss, model.trainable_variables)
    norm = tf.linalg.global_norm(grads)
    if grad_clip is not None:
        grads, _ = tf.clip_by_global_norm(grads, grad_clip, use_norm=norm)
    optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
    return step, float(loss), outputs, float(norm)


def _tape_validate(model: Any, loss_fn: Callable, metric_fn: Callable | None, val_data: Any) -> tuple[float, float]:
    """Validation loss and metric, each batch weighted by its size (``WeightedMean``).
    """
    import tensorflow as tf

    average = WeightedMean()
    for x, y in val_data:
        outputs = model(x, training=False)
        average.add({"loss": float(loss_fn(y, outputs)),
                     "metric": float(metric_fn(y, outputs)) if metric_fn is not None else 0.0},
                    int(tf.shape(x)[0]))
    means = average.means()
    return means["loss"], means["metric"]


__all__ = ["TensorBoardXCallback", "make_callback_class", "tape_train", "warmup_cosine_schedule"]
