"""utils.tb reads every record of a run, beyond each default cap of TensorBoard's loader.

``EventAccumulator`` keeps, per tag and unless told otherwise, 10 tensor events (text, and TF2
``tf.summary`` scalars, histograms and images), 4 images and 1 histogram, sampled at random. Each test writes
more than its kind's cap and asserts that every step comes back, in order and with its own value, so a
reader that drops the ``size_guidance`` for one kind fails here.
"""

from __future__ import annotations

import numpy as np
import pytest

from utils import tb

BEYOND_TENSOR_CAP = 25  # the loader's default keeps 10 tensor events per tag
BEYOND_IMAGE_CAP = 12  # 4 images per tag
BEYOND_HISTOGRAM_CAP = 12  # 1 histogram per tag


def write_tf2(run, write_step) -> None:
    """Write ``write_step(step)`` for every step under a TF2 ``tf.summary`` file writer at ``run``."""
    import tensorflow as tf

    writer = tf.summary.create_file_writer(str(run))
    with writer.as_default():
        for step in range(BEYOND_TENSOR_CAP):
            write_step(tf, step)
    writer.close()


def test_every_text_event_is_read(tmp_path):
    with tb.open_run("ch", "text", root=tmp_path) as writer:
        for step in range(BEYOND_TENSOR_CAP):
            writer.add_text("note", f"note at step {step}", step)
    run = tmp_path / "ch" / "text"
    text = tb.read_text(run, "note")
    assert text.step.tolist() == list(range(BEYOND_TENSOR_CAP))
    assert text.text.tolist() == [f"note at step {step}" for step in range(BEYOND_TENSOR_CAP)]
    tb.assert_logged(run, {"note": list(range(BEYOND_TENSOR_CAP))})


def test_every_tensorboardx_image_is_read(tmp_path):
    with tb.open_run("ch", "images", root=tmp_path) as writer:
        for step in range(BEYOND_IMAGE_CAP):
            writer.add_image("grid", np.full((1, 4, 6), step / 255, dtype=np.float32), step)  # (C, H, W)
    run = tmp_path / "ch" / "images"
    images = tb.read_images(run, "grid")
    assert [step for step, _ in images] == list(range(BEYOND_IMAGE_CAP))
    assert [int(image[0, 0, 0]) for _, image in images] == list(range(BEYOND_IMAGE_CAP))
    tb.assert_logged(run, {"grid": BEYOND_IMAGE_CAP})


def test_every_tensorboardx_histogram_is_read(tmp_path):
    with tb.open_run("ch", "histograms", root=tmp_path) as writer:
        for step in range(BEYOND_HISTOGRAM_CAP):
            writer.add_histogram("w", np.arange(10.0) + step, step)
    run = tmp_path / "ch" / "histograms"
    frame = tb.read_histograms(run, "w")
    assert frame.step.tolist() == list(range(BEYOND_HISTOGRAM_CAP))
    assert frame["min"].tolist() == list(range(BEYOND_HISTOGRAM_CAP))
    tb.assert_logged(run, {"w": list(range(BEYOND_HISTOGRAM_CAP))})


def test_every_tf2_scalar_is_read(tmp_path):
    write_tf2(tmp_path, lambda tf, step: tf.summary.scalar("loss", 100.0 + step, step=step))
    scalars = tb.read_scalars(tmp_path, ["loss"])
    assert scalars.step.tolist() == list(range(BEYOND_TENSOR_CAP))
    assert scalars.value.tolist() == [100.0 + step for step in range(BEYOND_TENSOR_CAP)]
    tb.assert_logged(tmp_path, {"loss": list(range(BEYOND_TENSOR_CAP))})


def test_every_tf2_histogram_is_read(tmp_path):
    write_tf2(tmp_path, lambda tf, step: tf.summary.histogram("w", tf.range(10.0) + step, step=step))
    frame = tb.read_histograms(tmp_path, "w")
    assert frame.step.tolist() == list(range(BEYOND_TENSOR_CAP))
    assert frame["count"].tolist() == [10] * BEYOND_TENSOR_CAP
    assert frame["min"].tolist() == pytest.approx(list(range(BEYOND_TENSOR_CAP)))


def test_every_tf2_image_is_read_with_each_image_of_a_batch(tmp_path):
    def two_images(tf, step):  # a batch of 2 images per step: pixel values step and step + 100
        batch = tf.stack([tf.fill((3, 5, 1), step / 255), tf.fill((3, 5, 1), (step + 100) / 255)])
        tf.summary.image("digits", batch, step=step, max_outputs=2)

    write_tf2(tmp_path, two_images)
    images = tb.read_images(tmp_path, "digits")
    assert [step for step, _ in images] == [step for step in range(BEYOND_TENSOR_CAP) for _ in range(2)]
    pixels = [int(image[0, 0, 0]) for _, image in images]
    assert pixels == [value for step in range(BEYOND_TENSOR_CAP) for value in (step, step + 100)]
    assert {image.shape for _, image in images} == {(3, 5, 1)}
