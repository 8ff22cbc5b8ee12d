"""The Keras recipes of the zoo (``tests/zoo.py``): chapter 8's MLP rebuilt in Keras 3 (TensorFlow backend),
trained by ``model.fit`` on the same digits split and logged only by Keras's own
``keras.callbacks.TensorBoard``: ``train/`` and ``validation/`` sub-writers holding ``epoch_loss`` and
``epoch_accuracy`` as TF2 tensors, weight histograms every ``KERAS_HISTOGRAM_EPOCHS`` epochs."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from utils.chapters import ch08_broken_runs as ch08

if TYPE_CHECKING:  # only for the annotations: tests.zoo imports this module
    from tests.zoo import Recipe

KERAS_HISTOGRAM_EPOCHS = 5


def _keras_mlp(setting: ch08.Setting, x_train: np.ndarray | None = None):
    """Chapter 8's MLP in Keras: a ``Normalization`` layer adapted to ``x_train`` when given (its mean,
    variance and count are weights that never train: histograms that must not read as dead layers),
    ``depth`` Dense layers of ``width`` units and ``activation``, ten logits; compiled with SGD (momentum
    0.9) or AdamW as ``setting.optimizer`` says, as ``ch08.make_optimizer``."""
    import keras

    layers = []
    if x_train is not None:
        # one mean and variance over all pixels: per pixel, the digits' always-dark corners have variance 0,
        # which Keras divides by (its epsilon, 1e-7), blowing up any validation image lit there
        layers.append(keras.layers.Normalization(axis=None))
        layers[0].adapt(x_train)
    layers += [keras.layers.Dense(setting.width, activation=setting.activation) for _ in range(setting.depth)]
    model = keras.Sequential([keras.Input((ch08.SIDE * ch08.SIDE,)), *layers, keras.layers.Dense(10)])
    optimizer = keras.optimizers.SGD(setting.lr, momentum=0.9) if setting.optimizer == "sgd" else \
        keras.optimizers.AdamW(setting.lr, weight_decay=setting.weight_decay)
    model.compile(optimizer=optimizer, metrics=["accuracy"],
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def train_keras(path: Path, recipe: Recipe, batch: int, seed: int) -> None:
    """Train one Keras recipe at one batch size and seed with ``model.fit`` on the digits (the split of
    ``ch08.digits_data``), logged to ``path`` by ``keras.callbacks.TensorBoard``."""
    # TensorFlow's ops on one thread, as torch's in write_zoo, and its start-up notices (which would bury the
    # output) off; it reads these when its runtime starts, so a process that already ran it keeps its own
    for name, value in {"TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1",
                        "TF_CPP_MIN_LOG_LEVEL": "3"}.items():
        os.environ.setdefault(name, value)
    import keras

    setting = replace(recipe.setting, batch=batch)
    data = ch08.digits_data(setting, seed)
    keras.backend.clear_session()  # layer names restart (dense, dense_1): the same histogram tags in every run
    keras.utils.set_random_seed(seed)
    model = _keras_mlp(setting, data.x_train.numpy() if recipe.keras_normalise else None)
    model.fit(data.x_train.numpy(), data.y_train.numpy(), batch_size=batch, epochs=recipe.epochs, verbose=0,
              validation_data=(data.x_val.numpy(), data.y_val.numpy()),
              callbacks=[keras.callbacks.TensorBoard(str(path), histogram_freq=KERAS_HISTOGRAM_EPOCHS)])
