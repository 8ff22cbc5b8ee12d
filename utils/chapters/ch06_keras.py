"""Transfer learning in Keras 3 on scikit-learn's bundled digits, and its BatchNorm trap.

A convolutional ``base`` with BatchNormalization is trained on one task (clean digits, many labels), frozen,
given a new head for another (other images of the digits, "scanned": shifted, rotated, noisy; three labels
per digit), then unfrozen and fine-tuned at a low learning rate.

``digits_transfer_data``
    The two tasks, on disjoint halves of the 1,797 images, each ``(x_train, y_train, x_val, y_val)``.
``make_base`` / ``copy_base``
    The feature extractor (two conv + BatchNorm + ReLU blocks, global average pooling, a dense + BatchNorm
    + ReLU layer), and an independent copy of a trained one (so that variants start from the same weights).
``make_classifier``
    ``base(x, training=False)`` plus a new linear head, as Keras's guide writes it (see its docstring for
    what ``training=False`` does *not* do in Keras 3).
``unfreeze``
    Make the base trainable, keeping every BatchNorm layer frozen (inference mode) unless asked otherwise.
``fit_logged``
    ``model.fit`` with the book's tensorboardX callback (``utils.keras_tb``), at a given learning rate.
``batchnorm_statistics``
    The moving means and variances of every BatchNorm layer, to measure how far fine-tuning moved them.

Keras is imported when these are called (``import keras`` costs about 7 s on a 2-core CPU).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from utils import keras_tb

#: Grey levels of scikit-learn's digits run from 0 to 16.
GREY_LEVELS = 16


@dataclass(frozen=True)
class TransferData:
    """Two tasks on disjoint images: ``source`` (clean digits, many labels) and ``target`` (the other images,
    "scanned": shifted, rotated and noisy, few labels). Each is ``(x_train, y_train, x_val, y_val)``, x float32
    (N, 8, 8, 1) in [0, 1], y int64 digits 0-9."""

    source: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
    target: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def digits_transfer_data(target_per_class: int = 3, source_per_class: int = 80, target_val: int | None = 500,
                         seed: int = 0, **scan: float) -> TransferData:
    """scikit-learn's 1,797 digits split in two halves (stratified by digit, drawn from ``seed``): the source
    task keeps its images clean, ``source_per_class`` labelled per digit for training and the rest of its
    half for validation; the target task's half goes through ``utils.datasets.augment_images`` (``scan``:
    its ``max_shift``, ``max_rotation_deg``, ``noise_std``; defaults 1.5 pixels, 20 degrees, 0.1), then
    ``target_per_class`` labelled images per digit train and ``target_val`` of the rest validate (``None``: all
    the rest)."""
    from sklearn.model_selection import train_test_split

    from utils.datasets import augment_images, load_digits_pixels

    pixels, digits = load_digits_pixels()
    images = pixels.reshape(-1, 8, 8)  # (1797, 8, 8) in [0, 1]
    source_rows, target_rows = train_test_split(np.arange(len(digits)), test_size=0.5, stratify=digits,
                                                random_state=seed)
    scan = {"max_shift": 1.5, "max_rotation_deg": 20.0, "noise_std": 0.1, **scan}
    scanned = augment_images(images[target_rows], seed=seed + 1, **scan)
    source = _few_labels(images[source_rows], digits[source_rows], source_per_class, None, seed)
    target = _few_labels(scanned, digits[target_rows], target_per_class, target_val, seed)
    return TransferData(source, target)


def _few_labels(images: np.ndarray, digits: np.ndarray, per_class: int, n_val: int | None, seed: int):
    """``(x_train, y_train, x_val, y_val)``: ``per_class`` images of each digit to train on, ``n_val`` of the
    others (all when None) to validate; images get a channel axis (N, 8, 8, 1)."""
    rng = np.random.default_rng(seed)
    smallest = int(np.bincount(digits).min())
    if not 0 < per_class < smallest:
        raise ValueError(f"per_class={per_class} labelled images per digit: use 1..{smallest - 1} (the rarest "
                         f"digit has {smallest} images in this half)")
    train = np.concatenate([rng.permutation(np.flatnonzero(digits == d))[:per_class] for d in range(10)])
    val = rng.permutation(np.setdiff1d(np.arange(len(digits)), train))[:n_val]
    x = images[..., None]
    return x[train], digits[train].astype(np.int64), x[val], digits[val].astype(np.int64)


def make_base(seed: int, width: int = 16) -> Any:
    """The feature extractor, a ``keras.Sequential`` named ``base``: (N, 8, 8, 1) -> (N, 4 * width). Two
    blocks of 3x3 convolution (no bias: BatchNorm's offset replaces it), BatchNormalization and ReLU, global
    average pooling, then a dense layer with BatchNormalization and ReLU. BatchNorm's momentum is 0.9, not
    Keras's 0.99: runs of a few hundred updates would otherwise validate with moving statistics still close
    to their initial values. Weights drawn from ``seed``."""
    import keras

    keras.utils.set_random_seed(seed)
    layers = [keras.Input(shape=(8, 8, 1))]
    for filters in (width, 2 * width):
        layers += [keras.layers.Conv2D(filters, 3, padding="same", use_bias=False),
                   keras.layers.BatchNormalization(momentum=0.9), keras.layers.ReLU()]
    layers += [keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(4 * width, use_bias=False),
               keras.layers.BatchNormalization(momentum=0.9), keras.layers.ReLU()]
    return keras.Sequential(layers, name="base")


def copy_base(base: Any) -> Any:
    """An independent copy of ``base``: same architecture, same weights (moving statistics included),
    variables of its own, and the same ``trainable`` flag."""
    import keras

    copy = keras.models.clone_model(base)
    copy.set_weights(base.get_weights())
    copy.trainable = base.trainable
    return copy


def make_classifier(base: Any, n_classes: int, name: str = "classifier", seed: int | None = None) -> Any:
    """``base`` followed by a new ``Dense(n_classes)`` head named ``head`` (logits), built the way Keras's
    transfer-learning guide shows: ``base(x, training=False)``. Measure, do not trust, what that buys: in
    Keras 3 ``fit`` calls the outer model with ``training=True``, and a functional model passes that flag on
    to every layer, overriding the ``False`` (keras-team/keras#20285). ``unfreeze`` is what keeps BatchNorm in
    inference mode. The head's initial weights are drawn from ``seed`` (``None``: from Keras's global
    generator as it stands, so they depend on whatever ran before)."""
    import keras

    if seed is not None:
        keras.utils.set_random_seed(seed)
    inputs = keras.Input(shape=base.input_shape[1:])
    features = base(inputs, training=False)
    outputs = keras.layers.Dense(n_classes, name="head")(features)
    return keras.Model(inputs, outputs, name=name)


def unfreeze(base: Any, *, batchnorm_trainable: bool) -> list[str]:
    """Make ``base`` trainable for fine-tuning; unless ``batchnorm_trainable``, set every BatchNormalization
    layer back to ``trainable = False``, which in Keras 3 also runs it in inference mode (moving statistics,
    never updated; its scale and offset frozen), whatever ``training`` flag reaches it. Recompile after this.
    Returns the names of the BatchNorm layers left frozen."""
    import keras

    base.trainable = True
    frozen = []
    for layer in _all_layers(base):
        if isinstance(layer, keras.layers.BatchNormalization) and not batchnorm_trainable:
            layer.trainable = False
            frozen.append(layer.name)
    return frozen


def fit_logged(model: Any, data: tuple[np.ndarray, ...], *, learning_rate: float, epochs: int,
               batch_size: int, writer: Any, seed: int = 0) -> dict[str, list[float]]:
    """Compile ``model`` with Adam at ``learning_rate`` (sparse cross-entropy on logits, accuracy) and fit it
    on ``data = (x_train, y_train, x_val, y_val)``, logged through ``writer`` (a ``tb.RunWriter``) by
    ``keras_tb.TensorBoardXCallback``: ``train/*`` and ``val/loss``, ``val/accuracy`` at each epoch's last
    update (steps count this fit's updates from 0). Compile after changing ``trainable``: Keras reads the
    flag when it compiles. Returns ``fit``'s history (one value per epoch)."""
    import keras

    x_train, y_train, x_val, y_val = data
    keras.utils.set_random_seed(seed)  # the same shuffling for every variant
    if len(x_train) % batch_size:  # a smaller last batch would make TensorFlow trace the step twice (~2 s)
        raise ValueError(f"batch_size={batch_size} does not divide the {len(x_train)} training examples")
    model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"],
                  jit_compile=False)  # XLA compiles slower than these few updates run
    callback = keras_tb.TensorBoardXCallback(writer, batch_size=batch_size)
    history = model.fit(x_train, y_train, batch_size=batch_size, epochs=epochs, validation_data=(x_val, y_val),
                        validation_batch_size=len(x_val), shuffle=True, verbose=0, callbacks=[callback])
    return history.history


def batchnorm_statistics(model: Any) -> np.ndarray:
    """The moving means and variances of every BatchNormalization layer in ``model`` (nested models too),
    concatenated into one float64 vector: compare two calls to see what training did to them."""
    import keras

    values = [np.asarray(v, dtype=np.float64).ravel()
              for layer in _all_layers(model) if isinstance(layer, keras.layers.BatchNormalization)
              for v in (layer.moving_mean, layer.moving_variance)]
    if not values:
        raise ValueError(f"{model.name} has no BatchNormalization layer")
    return np.concatenate(values)


def _all_layers(model: Any) -> list[Any]:
    layers = []
    for layer in model.layers:
        layers.append(layer)
        if hasattr(layer, "layers"):
            layers += _all_layers(layer)
    return layers


__all__ = ["TransferData", "batchnorm_statistics", "copy_base", "digits_transfer_data", "fit_logged", "make_base",
           "make_classifier", "unfreeze"]
