"""``utils.chapters.ch06_keras``: the two digit tasks, and BatchNorm's behaviour when a base is unfrozen.

What each test guards against: target images that are also source images or an unbalanced few-label set
(data), an ``unfreeze`` that leaves BatchNorm trainable (its moving statistics move during training), a
copy that shares variables with the original, a ``fit_logged`` whose validation is not logged per epoch, a
seeded head whose initial weights depend on what ran before it.
``test_training_false_is_overridden_by_fit_mode`` pins the Keras 3 behaviour chapter 6 reports: if a
Keras release starts honouring ``base(x, training=False)``, this fails and the chapter's box must change.
"""

from __future__ import annotations

import keras  # pinned in requirements.txt: a broken install must fail, not skip
import numpy as np
import pytest

from utils import tb
from utils.chapters import ch06_keras as keras_transfer


@pytest.fixture(scope="module")
def data():
    return keras_transfer.digits_transfer_data(target_per_class=3, source_per_class=10, target_val=50, seed=0)


def _one_update(model, x, y) -> None:
    model.compile(optimizer=keras.optimizers.SGD(0.1),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.train_on_batch(x, y)


def test_tasks_have_the_asked_labels_and_disjoint_images(data):
    x_source, y_source, x_source_val, _ = data.source
    x_target, y_target, x_target_val, y_target_val = data.target
    assert x_target.shape == (30, 8, 8, 1) and x_target_val.shape == (50, 8, 8, 1)
    assert np.bincount(y_target, minlength=10).tolist() == [3] * 10
    assert np.bincount(y_source, minlength=10).tolist() == [10] * 10
    assert len(x_source) + len(x_source_val) in (898, 899)  # half of the 1,797 images
    assert x_target.dtype == np.float32 and 0 <= x_target.min() and x_target.max() <= 1
    clean = {image.tobytes() for image in np.concatenate([x_source, x_source_val])}
    assert not any(image.tobytes() in clean for image in np.concatenate([x_target, x_target_val]))


def test_too_many_labels_per_class_is_refused():
    with pytest.raises(ValueError, match="labelled images per digit"):
        keras_transfer.digits_transfer_data(target_per_class=500)


@pytest.mark.parametrize("batchnorm_trainable", [False, True])
def test_unfreeze_keeps_batchnorm_statistics_only_when_asked(data, batchnorm_trainable):
    base = keras_transfer.make_base(seed=0, width=4)
    base.trainable = False
    frozen_names = keras_transfer.unfreeze(base, batchnorm_trainable=batchnorm_trainable)
    model = keras_transfer.make_classifier(base, 10)
    statistics = keras_transfer.batchnorm_statistics(model)
    kernel = np.array(base.layers[0].kernel)
    _one_update(model, *data.target[:2])
    moved = np.abs(keras_transfer.batchnorm_statistics(model) - statistics).max()
    assert not np.allclose(np.array(base.layers[0].kernel), kernel)  # the base is trainable either way
    if batchnorm_trainable:
        assert frozen_names == [] and moved > 0
    else:
        assert len(frozen_names) == 3 and moved == 0


def test_training_false_is_overridden_by_fit_mode(data):
    base = keras_transfer.make_base(seed=0, width=4)
    model = keras_transfer.make_classifier(base, 10)  # base(x, training=False) inside
    before = keras_transfer.batchnorm_statistics(base)
    model(data.target[0], training=True)
    assert np.abs(keras_transfer.batchnorm_statistics(base) - before).max() > 0


def test_a_seeded_head_starts_from_the_same_weights_whatever_ran_before():
    base = keras_transfer.make_base(seed=0, width=4)
    first = keras_transfer.make_classifier(base, 10, seed=7).get_layer("head").get_weights()
    keras.random.uniform((3,))  # draws from the global generator in between
    again = keras_transfer.make_classifier(base, 10, seed=7).get_layer("head").get_weights()
    other = keras_transfer.make_classifier(base, 10, seed=8).get_layer("head").get_weights()
    np.testing.assert_array_equal(first[0], again[0])
    assert not np.allclose(first[0], other[0])


def test_copy_base_has_its_own_variables(data):
    base = keras_transfer.make_base(seed=0, width=4)
    copy = keras_transfer.copy_base(base)
    for original, copied in zip(base.get_weights(), copy.get_weights(), strict=True):
        np.testing.assert_array_equal(original, copied)
    _one_update(keras_transfer.make_classifier(copy, 10), *data.target[:2])
    assert not np.allclose(np.array(copy.layers[0].kernel), np.array(base.layers[0].kernel))


def test_fit_logged_logs_each_epoch_and_refuses_a_ragged_batch(data, tmp_path):
    model = keras_transfer.make_classifier(keras_transfer.make_base(seed=0, width=4), 10)
    with tb.open_run("test", "fit", root=tmp_path) as writer:
        with pytest.raises(ValueError, match="does not divide"):
            keras_transfer.fit_logged(model, data.target, learning_rate=1e-3, epochs=1, batch_size=4,
                                      writer=writer)
        history = keras_transfer.fit_logged(model, data.target, learning_rate=1e-3, epochs=3, batch_size=10,
                                            writer=writer)
        run = writer.logdir
    accuracy = tb.read_scalars(run, ["val/accuracy"])
    assert accuracy.step.tolist() == [2, 5, 8]  # the last of each epoch's 3 updates
    np.testing.assert_allclose(accuracy.value, history["val_accuracy"], rtol=1e-6)
