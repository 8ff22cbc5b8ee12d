"""utils.tb: write -> read round trips of every summary kind the book uses, and each error it promises."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from utils import tb
from utils.tb import reading


@pytest.fixture()
def root(tmp_path):
    return tmp_path / "runs"


def test_scalar_round_trip_exact_values_and_steps(root):
    values = np.random.default_rng(0).normal(size=25)
    with tb.open_run("ch", "scalars", root=root) as writer:
        for step, value in enumerate(values):
            writer.add_scalar("train/loss", value, step)
        writer.add_scalar("lr", torch.tensor(3e-4), 0)  # a torch tensor is taken as a number
    frame = tb.read_scalars(root / "ch" / "scalars")
    loss = frame[frame.tag == "train/loss"]
    assert loss.step.tolist() == list(range(25))
    np.testing.assert_allclose(loss.value, values.astype(np.float32), rtol=0, atol=0)  # stored as float32
    assert frame[frame.tag == "lr"].value.item() == pytest.approx(3e-4)


def test_step_scalars_read_back_exactly_as_add_scalar_writes_them(root):
    values = {"train/loss": 2.5, "train/lr": torch.tensor(3e-4), "perf/tokens per s": np.float64(6e3)}
    with tb.open_run("ch", "one_event", root=root) as writer:
        for step in range(3):
            writer.add_step_scalars({tag: value * (step + 1) for tag, value in values.items()}, step)
        writer.add_step_scalars({}, 3)  # nothing to write: no event
    with tb.open_run("ch", "one_each", root=root) as writer:
        for step in range(3):
            for tag, value in values.items():
                writer.add_scalar(tag, value * (step + 1), step)
    grouped, separate = (tb.read_scalars(root / "ch" / name).sort_values(["tag", "step"])
                         for name in ("one_event", "one_each"))
    assert sorted(grouped.tag.unique()) == ["perf/tokens_per_s", "train/loss", "train/lr"]  # cleaned alike
    pd.testing.assert_frame_equal(grouped[["tag", "step", "value"]].reset_index(drop=True),
                                  separate[["tag", "step", "value"]].reset_index(drop=True))


def test_step_scalars_with_a_non_finite_value_write_nothing_of_that_step(root):
    with tb.open_run("ch", "nan_group", root=root) as writer:
        writer.add_step_scalars({"loss": 1.0, "lr": 0.1}, 0)
        with pytest.raises(tb.NonFiniteScalarError, match="'grad_norm' is nan at step 1"):
            writer.add_step_scalars({"loss": 0.9, "grad_norm": math.nan}, 1)
        with pytest.raises(ValueError, match="needs one number"):
            writer.add_step_scalars({"loss": [0.9, 0.8]}, 1)
    frame = tb.read_scalars(root / "ch" / "nan_group")
    assert frame.step.tolist() == [0, 0] and sorted(frame.tag) == ["loss", "lr"]


def test_more_than_ten_thousand_scalars_are_all_read(root):
    with tb.open_run("ch", "long", root=root) as writer:
        for step in range(10_050):
            writer.add_scalar("x", step, step)
    assert len(tb.read_scalars(root / "ch" / "long")) == 10_050


def test_histogram_round_trip_counts_and_range(root):
    values = np.random.default_rng(1).normal(size=5000)
    with tb.open_run("ch", "hist", root=root) as writer:
        for step in range(3):
            writer.add_histogram("weights", values * (step + 1), step)
        writer.add_histogram("bf16", torch.ones(10, dtype=torch.bfloat16), 0)  # tensorboardX alone rejects bf16
    frame = tb.read_histograms(root / "ch" / "hist", "weights")
    assert frame.step.tolist() == [0, 1, 2]  # all steps kept (the loader's default keeps 1)
    first = frame.iloc[0]
    assert first["count"] == 5000 and first.counts.sum() == 5000
    assert first["min"] == pytest.approx(values.min()) and first["max"] == pytest.approx(values.max())
    assert len(first.edges) == len(first.counts) + 1
    assert tb.read_histograms(root / "ch" / "hist", "bf16").iloc[0]["sum"] == pytest.approx(10)


def test_text_and_image_round_trip(root):
    image = np.zeros((3, 8, 12), dtype=np.float32)  # (C, H, W), values in [0, 1]
    image[0, :, :6] = 1.0
    with tb.open_run("ch", "media", root=root) as writer:
        writer.add_text("note", "hello **TensorBoard**", 7)
        writer.add_image("grid", image, 2)
    text = tb.read_text(root / "ch" / "media", "note")
    assert text.step.tolist() == [7] and text.text.item() == "hello **TensorBoard**"
    [(step, decoded)] = tb.read_images(root / "ch" / "media", "grid")
    assert step == 2 and decoded.shape == (8, 12, 3)
    assert decoded[0, 0].tolist() == [255, 0, 0] and decoded[0, -1].tolist() == [0, 0, 0]


def test_hparams_are_recorded_in_the_run_itself(root):
    with tb.open_run("ch", "hp", root=root, hparams={"lr": 0.1, "layers": 2, "act": "relu"}) as writer:
        writer.add_scalar("hparam/val_loss", 0.5, 10)
    run = root / "ch" / "hp"
    # a session start and end, and no experiment summary: the server would show only the first it found
    assert set(reading.accumulator(run).PluginTagToContent("hparams")) == {
        "_hparams_/session_start_info", "_hparams_/session_end_info"}
    assert [p for p in run.iterdir() if p.is_dir()] == []  # no child run
    assert tb.read_hparams(run) == {"lr": 0.1, "layers": 2, "act": "relu"}
    assert tb.read_scalars(run, ["hparam/val_loss"]).value.tolist() == [0.5]


def test_tf_summary_scalars_histograms_and_images_are_read(tmp_path):
    import tensorflow as tf
    run = tmp_path / "tf2"
    writer = tf.summary.create_file_writer(str(run))
    with writer.as_default():
        for step in range(4):
            tf.summary.scalar("loss", 1.0 / (step + 1), step=step)
        tf.summary.histogram("w", tf.constant(np.arange(100, dtype=np.float32)), step=0)
        tf.summary.image("img", tf.zeros((1, 4, 5, 3)), step=1)
    writer.close()
    assert tb.list_tags(run)["scalars"] == ["loss"]
    scalars = tb.read_scalars(run)
    np.testing.assert_allclose(scalars.value, [1, 1 / 2, 1 / 3, 1 / 4], rtol=1e-6)
    hist = tb.read_histograms(run, "w").iloc[0]
    assert hist["count"] == 100 and hist["min"] == 0 and hist["max"] == 99
    [(step, image)] = tb.read_images(run, "img")
    assert step == 1 and image.shape == (4, 5, 3)


def test_flushed_on_exit_without_waiting(root):
    with tb.open_run("ch", "flush", root=root) as writer:
        for step in range(5):
            writer.add_scalar("a", step, step)  # fewer than max_queue, well within flush_secs
    assert len(tb.read_scalars(root / "ch" / "flush")) == 5  # read immediately: close() flushed


def test_flushed_and_closed_even_when_the_block_raises(root):
    with pytest.raises(RuntimeError), tb.open_run("ch", "crash", root=root) as writer:
        writer.add_scalar("a", 1.0, 0)
        raise RuntimeError("training crashed")
    assert tb.read_scalars(root / "ch" / "crash").value.tolist() == [1.0]
    with tb.open_run("ch", "crash", root=root, on_exists="append"):  # and the directory is free again
        pass


def test_two_writers_in_one_directory_within_a_second_do_not_overwrite(root):
    with tb.open_run("ch", "same", root=root, on_exists="append") as first:
        first.add_scalar("a", 1.0, 0)
    with tb.open_run("ch", "same", root=root, on_exists="append") as second:
        second.add_scalar("b", 2.0, 0)
    files = sorted(p.name for p in (root / "ch" / "same").iterdir())
    assert len(files) == 2 and len(set(files)) == 2
    assert set(tb.read_scalars(root / "ch" / "same").tag) == {"a", "b"}


def test_each_run_gets_its_own_directory_and_replace_starts_afresh(root):
    with tb.open_run("ch", "r1", root=root) as w1, tb.open_run("ch", "r2", root=root) as w2:
        w1.add_scalar("x", 1, 0)
        w2.add_scalar("x", 2, 0)
        assert w1.logdir != w2.logdir
    with tb.open_run("ch", "r1", root=root) as w1:  # re-running a notebook cell replaces its run
        w1.add_scalar("x", 3, 0)
    assert tb.read_scalars(root / "ch" / "r1").value.tolist() == [3]
    assert tb.read_scalars(root / "ch" / "r2").value.tolist() == [2]


def test_opening_a_run_twice_at_once_is_refused(root):
    with tb.open_run("ch", "busy", root=root), pytest.raises(tb.RunInUseError, match="already open"):
        with tb.open_run("ch", "busy", root=root):
            pass


def test_on_exists_error_keeps_the_earlier_run(root):
    with tb.open_run("ch", "keep", root=root) as writer:
        writer.add_scalar("x", 1, 0)
    with pytest.raises(FileExistsError, match="already holds files"):
        with tb.open_run("ch", "keep", root=root, on_exists="error"):
            pass
    assert tb.read_scalars(root / "ch" / "keep").value.tolist() == [1]


def test_unwritable_log_directory_gives_a_clear_error(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(tb.LogDirNotWritableError, match="BOOK_RUNS_DIR"):
        with tb.open_run("ch", "run", root=blocker):
            pass
    assert blocker.read_text() == "not a directory"


def test_bad_run_names_are_refused(root):
    with pytest.raises(ValueError, match="no slashes"):
        tb.run_path("ch", "../escape", root)


def test_missing_run_says_what_exists(root):
    with tb.open_run("ch", "real", root=root) as writer:
        writer.add_scalar("x", 1, 0)
    with pytest.raises(tb.RunNotFoundError, match=r"Runs next to it: \['real'\]"):
        tb.read_scalars(root / "ch" / "typo")
    with pytest.raises(tb.RunNotFoundError, match="sub-runs do"):
        tb.read_scalars(root / "ch")


def test_missing_tag_lists_the_logged_tags(root):
    with tb.open_run("ch", "tags", root=root) as writer:
        writer.add_scalar("train/loss", 1, 0)
        writer.add_histogram("w", np.ones(3), 0)
    with pytest.raises(tb.TagNotFoundError, match=r"Logged scalars: \['train/loss'\]"):
        tb.read_scalars(root / "ch" / "tags", ["val/loss"])
    with pytest.raises(tb.TagNotFoundError, match=r"Logged histograms: \['w'\]"):
        tb.read_histograms(root / "ch" / "tags", "b")


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_scalar_is_refused_and_earlier_points_survive(root, bad):
    with tb.open_run("ch", "nan", root=root) as writer:
        writer.add_scalar("loss", 1.0, 0)
        with pytest.raises(tb.NonFiniteScalarError, match="learning rate"):
            writer.add_scalar("loss", torch.tensor(bad), 1)
    assert tb.read_scalars(root / "ch" / "nan").value.tolist() == [1.0]


def test_non_finite_scalar_allowed_on_request_and_caught_by_assert_logged(root):
    with tb.open_run("ch", "diverged", root=root, allow_non_finite=True) as writer:
        writer.add_scalar("loss", 1.0, 0)
        writer.add_scalar("loss", math.nan, 1)
    with pytest.raises(AssertionError, match="NaN/inf values at steps \\[1\\]"):
        tb.assert_logged(root / "ch" / "diverged", {"loss": 2})


def test_assert_logged_accepts_and_rejects(root):
    with tb.open_run("ch", "a", root=root) as writer:
        for step in range(0, 30, 10):
            writer.add_scalar("loss", 1.0 / (step + 1), step)
        writer.add_histogram("w", np.ones(4), 20)
        writer.add_text("note", "hi", 0)
    run = root / "ch" / "a"
    frame = tb.assert_logged(run, {"loss": [0, 10, 20], "w": 1, "note": None})
    assert isinstance(frame, pd.DataFrame) and frame.step.tolist() == [0, 10, 20]
    with pytest.raises(AssertionError, match=r"expected steps \[0, 10\], found 3 points"):
        tb.assert_logged(run, {"loss": [0, 10]})
    with pytest.raises(AssertionError, match="never logged.*'loss'"):
        tb.assert_logged(run, {"acc": None})


def test_smoothing_matches_tensorboard():
    values = [1.0, 2.0, 3.0, math.nan, 4.0]
    smoothed = tb.smooth(values, 0.5)
    # debiased EMA: 1; (0.25*1+0.5*2... ) computed by hand from TensorBoard's formula
    m1 = 0.5 * 1
    m2 = 0.5 * m1 + 0.5 * 2
    m3 = 0.5 * m2 + 0.5 * 3
    m4 = 0.5 * m3 + 0.5 * 4
    expected = [m1 / 0.5, m2 / 0.75, m3 / 0.875, math.nan, m4 / 0.9375]
    np.testing.assert_allclose(smoothed, expected)
    assert smoothed[0] == 1.0  # debiased: the first point is not pulled towards 0
    np.testing.assert_array_equal(tb.smooth([5.0, 5.0, 5.0], 0.9), [5.0, 5.0, 5.0])
    np.testing.assert_array_equal(tb.smooth(values[:3], 0.0), values[:3])
    with pytest.raises(ValueError):
        tb.smooth(values, 1.0)


def test_plots_and_headless_show(root, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    with tb.open_run("ch", "p1", root=root) as writer:
        for step in range(10):
            writer.add_scalar("loss", 1 / (step + 1), step)
            writer.add_histogram("w", np.arange(10) * step, step)
    with tb.open_run("ch", "p2", root=root) as writer:
        for step in range(10):
            writer.add_scalar("loss", 2 / (step + 1), step)
    fig = tb.plot_scalars({"a": root / "ch" / "p1", "b": root / "ch" / "p2"}, ["loss"])
    assert len(fig.axes[0].lines) == 4  # raw + smoothed for each run
    assert len(tb.plot_histograms(root / "ch" / "p1", "w", max_steps=4).axes[0].lines) == 4
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    assert not tb.is_live_notebook()
    fig = tb.show(root / "ch")
    assert {line.get_label() for line in fig.axes[0].lines} >= {"p1", "p2"}
    monkeypatch.setenv("JPY_SESSION_NAME", "x")
    monkeypatch.setenv("BOOK_HEADLESS", "1")
    assert not tb.is_live_notebook()


def test_graph_round_trip(root):
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 1))
    with tb.open_run("ch", "graph", root=root) as writer:
        writer.add_graph(model, torch.zeros(2, 3))
        writer.add_scalar("x", 1, 0)
    ops = {node.op for node in tb.read_graph(root / "ch" / "graph").node}
    assert {"aten::linear", "aten::relu"} <= ops
    with tb.open_run("ch", "nograph", root=root) as writer:
        writer.add_scalar("x", 1, 0)
    with pytest.raises(tb.TagNotFoundError, match="add_graph"):
        tb.read_graph(root / "ch" / "nograph")


def test_embedding_round_trip(root):
    vectors = np.arange(20, dtype=float).reshape(10, 2)
    sprites = torch.zeros(10, 3, 8, 8)
    with tb.open_run("ch", "emb", root=root) as writer:
        writer.add_embedding(vectors, metadata=[f"digit {i}" for i in range(10)], label_img=sprites,
                             global_step=0, tag="pixels")
    [row] = tb.read_embeddings(root / "ch" / "emb").itertuples()
    np.testing.assert_allclose(row.vectors, vectors)
    assert row.labels == [f"digit {i}" for i in range(10)]
    assert row.sprite.shape[:2] == (32, 32)  # 10 images of 8x8 on a 4x4 grid
    with pytest.raises(tb.RunNotFoundError, match="projector_config"):
        tb.read_embeddings(root)


def test_resumed_run_reads_each_step_once_for_every_kind(root):
    """Steps 0-4 written, then the run resumed at step 3 (as after a crash): scalars and text show each step
    once, with the values written after the resume."""
    with tb.open_run("ch", "resumed", root=root, purge_step=0) as writer:
        for step in range(5):
            writer.add_scalar("loss", float(step), step)
            writer.add_text("note", f"first {step}", step)
    with tb.open_run("ch", "resumed", root=root, on_exists="append", purge_step=3) as writer:
        for step in range(3, 6):
            writer.add_scalar("loss", 10.0 + step, step)
            writer.add_text("note", f"second {step}", step)
    run = root / "ch" / "resumed"
    scalars = tb.read_scalars(run, ["loss"])
    assert scalars.step.tolist() == [0, 1, 2, 3, 4, 5]
    assert scalars.value.tolist() == [0, 1, 2, 13, 14, 15]
    text = tb.read_text(run, "note")
    assert text.step.tolist() == [0, 1, 2, 3, 4, 5]
    assert text.text.tolist()[2:4] == ["first 2", "second 3"]


def test_a_run_is_parsed_once_until_its_files_change(root):
    with tb.open_run("ch", "cached", root=root) as writer:
        writer.add_scalar("x", 1.0, 0)
    run = root / "ch" / "cached"
    assert reading.accumulator(run) is reading.accumulator(run)  # read_* and assert_logged share a parse
    with tb.open_run("ch", "cached", root=root, on_exists="append") as writer:
        writer.add_scalar("x", 2.0, 1)
    assert tb.read_scalars(run).value.tolist() == [1.0, 2.0]  # a new file is seen
    writer = tb.RunWriter(run, flush_secs=1)
    writer.add_scalar("x", 3.0, 2)
    writer.flush()
    assert tb.read_scalars(run).value.tolist() == [1.0, 2.0, 3.0]  # so is a file that grew
    writer.add_scalar("x", 4.0, 3)
    writer.close()
    assert tb.read_scalars(run).value.tolist() == [1.0, 2.0, 3.0, 4.0]


def test_flush_writes_every_pending_event_at_once(root):
    """tensorboardX's flush() leaves queued events unwritten; RunWriter.flush() writes them before returning,
    so a run killed right after a flush (as before a checkpoint) has lost nothing."""
    with tb.open_run("ch", "flushed", root=root, purge_step=0) as writer:
        run = Path(writer.logdir)
        for step in range(3):
            writer.add_scalar("x", float(step), step)
            writer.flush()
            assert tb.read_scalars(run).step.tolist() == list(range(step + 1))
        writer.flush()  # nothing pending: no new file
        files = sorted(p.name for p in run.iterdir())
    assert len(files) == 3  # one event file per flushed segment, all read as one run
    assert tb.read_scalars(run).step.tolist() == [0, 1, 2]


def test_read_hparams_of_a_run_without_any_is_empty(tmp_path):
    with tb.open_run("ch", "plain", root=tmp_path) as writer:
        writer.add_scalar("a", 1.0, 0)
    assert tb.read_hparams(writer.logdir) == {}


def test_a_later_writers_event_file_sorts_after_an_earlier_ones(root, monkeypatch):
    """TensorBoard's loaders read a run's files in name order: the 10th writer of a process must sort after
    the 9th even when both open in the same second (a resumed segment read first hides the other)."""
    import itertools

    from utils.tb import writing

    monkeypatch.setattr(writing, "_writer_serial", itertools.count(9))
    with tb.open_run("order", "r", root=root) as writer:
        writer.add_scalar("x", 1.0, 0)
    with tb.open_run("order", "r", root=root, on_exists="append") as writer:
        writer.add_scalar("x", 2.0, 1)
    import re

    # as if both had opened in the same second: the rest of the name alone must give the order
    names = [re.sub(r"tfevents\.\d+\.", "tfevents.T.", p.name)
             for p in (root / "order" / "r").glob("events.out.tfevents.*")]
    serials = [int(name.split(".")[-1]) for name in sorted(names)]
    assert serials == [9, 10], names
    assert tb.read_scalars(root / "order" / "r", "x")["value"].tolist() == [1.0, 2.0]
