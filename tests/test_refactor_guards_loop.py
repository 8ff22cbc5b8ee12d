"""Guards for what a refactor of the training loop breaks without a sound: each test here fails on a one-line
change that the rest of the suite let through (the change is named in the test's docstring).

- early stopping resumed from a checkpoint whose count of bad evaluations is not zero;
- the writer flushed before each checkpoint is written (checked at the moment of the save, on disk), by the
  loop and by the data-parallel script;
- evaluation under ``torch.no_grad()`` and in eval mode, the caller's mode given back;
- the model back in training mode after an ``eval_fn`` or ``sample_fn`` that switched it to eval mode (as the
  book's sampler does), for every update that follows.
"""

from __future__ import annotations

import torch

from utils import checkpoint as ckpt
from utils import hooks, tb
from utils.batches import epoch_batches
from utils.evaluation import classification_loss, evaluate
from utils.loop import TrainConfig, interrupt_after, train
from utils.optim import make_adamw


def _data(n=64, seed=0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 5, generator=generator)
    return x, (x[:, 0] + x[:, 1] > 0).long()


def _model(seed=0, dropout=0.0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(5, 16), torch.nn.Tanh(), torch.nn.Dropout(dropout),
                               torch.nn.Linear(16, 2))


# --------------------------------------------------------------------------------------------- early stopping


def test_early_stopping_state_round_trips_a_nonzero_count():
    """``EarlyStopping.state``/``restore`` keep the count of evaluations without progress (a restore that
    resets it to 0 gives a resumed run ``patience`` more evaluations than an uninterrupted one)."""
    model = _model()
    stopping = hooks.EarlyStopping(patience=5)
    for step, loss in enumerate([1.0, 0.7, 0.8, 0.7, 0.9]):  # best 0.7 at step 1, then three without progress
        assert not stopping.update(loss, step, model)
    restored = hooks.EarlyStopping(patience=5)
    restored.restore(stopping.state())
    assert (restored.best_loss, restored.best_step, restored.bad_evals) == (0.7, 1, 3)
    assert [restored.update(0.75, 5, model), restored.update(0.75, 6, model)] == [False, True]


def test_early_stopping_resumed_with_bad_evaluations_pending_stops_where_the_straight_run_does(tmp_path):
    """The checkpoint is saved while two evaluations without progress are counted: the resumed run must stop
    after one more, as the uninterrupted run does (with the count reset to 0 on resume it runs 2 updates on)."""
    x, y = _data()
    losses = [1.0, 0.9, 0.95, 0.96, 0.97, 0.98, 0.99, 1.0, 1.01]
    base = dict(max_steps=30, lr=0.05, eval_every=1, early_stopping_patience=3, checkpoint_every=3,
                progress=False)

    def run(folder, resume_from=None, start=0, after_update=None):
        model = _model()
        scripted = iter(losses[start:])
        config = TrainConfig(**base, checkpoint_dir=str(tmp_path / folder))
        return train(model, make_adamw(model, 0.05), config, batch_fn=epoch_batches(x, y, 16),
                     eval_fn=lambda m: {"loss": next(scripted)}, resume_from=resume_from,
                     after_update=after_update)

    straight = run("straight")
    assert straight.stopped_early and straight.eval_steps == [0, 1, 2, 3, 4] and straight.steps_done == 5
    first = run("resumed", after_update=interrupt_after(4))
    assert first.interrupted and not first.stopped_early and first.steps_done == 4
    latest = ckpt.latest_checkpoint(tmp_path / "resumed")
    state = ckpt.read_checkpoint(latest)
    assert state["step"] == 4  # saved after step 3
    assert state["extra"]["train_state"]["bad_evals"] == 2  # the point of this test: a count that is not 0
    second = run("resumed", resume_from=latest, start=4)
    assert second.stopped_early and second.eval_steps == [4]
    assert second.steps_done == straight.steps_done == 5
    assert (second.best_step, second.best_val_loss) == (straight.best_step, straight.best_val_loss) == (1, 0.9)


# --------------------------------------------------------------------------------------------- flush before save


def test_every_logged_step_is_on_disk_when_a_checkpoint_is_written(tmp_path, monkeypatch):
    """At the moment each checkpoint file is written, the run's event files already hold every step up to
    the checkpoint's: a crash right after the save loses no logged point (``hooks.save_checkpoint`` flushes
    the writer first; without that flush the events sit in tensorboardX's queue)."""
    x, y = _data()
    run = tb.run_path("t", "flushed", tmp_path / "runs")
    seen: dict[int, list[int]] = {}
    real_save = ckpt.save_checkpoint

    def save_and_look(path, **kwargs):
        on_disk = tb.read_scalars(run, ["train/loss"]) if list(run.glob("events.out.tfevents.*")) else None
        seen[kwargs["step"]] = [] if on_disk is None else on_disk.step.tolist()
        return real_save(path, **kwargs)

    monkeypatch.setattr(ckpt, "save_checkpoint", save_and_look)
    model = _model()
    config = TrainConfig(max_steps=8, lr=0.05, checkpoint_every=3, checkpoint_dir=str(tmp_path / "ck"),
                         progress=False)
    with tb.open_run("t", "flushed", root=tmp_path / "runs", flush_secs=600) as writer:
        train(model, make_adamw(model, 0.05), config, batch_fn=epoch_batches(x, y, 16), writer=writer)
    assert seen == {1: [0], 4: [0, 1, 2, 3], 7: list(range(7)), 8: list(range(8))}


def test_the_data_parallel_script_flushes_its_log_before_each_checkpoint(tmp_path, monkeypatch):
    """On rank 0 of several ranks (``utils.distributed`` trains with the loop), ``hooks.save_checkpoint``
    flushes the writer before the checkpoint is written, and waits for the other ranks after it."""
    calls: list[str] = []

    class Writer:
        def flush(self):
            calls.append("flush")

    real_save = ckpt.save_checkpoint

    def save(path, **kwargs):
        calls.append(f"save {kwargs['step']}")
        return real_save(path, **kwargs)

    monkeypatch.setattr(ckpt, "save_checkpoint", save)
    model = _model()
    optimizer = make_adamw(model, 0.05)
    config = TrainConfig(max_steps=8, checkpoint_every=2, checkpoint_dir=str(tmp_path / "ck"))
    ranks = hooks.Ranks(rank=0, size=2, barrier=lambda: calls.append("barrier"))
    hooks.save_checkpoint(config, 3, model=model, optimizer=optimizer, scheduler=None,
                          stopping=hooks.EarlyStopping(), writer=Writer(), extra_state=None, ranks=ranks)
    assert calls == ["flush", "save 4", "barrier"]


# --------------------------------------------------------------------------------------------- modes


def test_evaluate_runs_without_gradients_in_eval_mode_and_gives_the_mode_back():
    """``evaluate``: no autograd graph (``torch.no_grad``) and eval mode during every batch; afterwards the
    model is in the mode it was in before, eval included."""
    x, y = _data(20)
    seen = []

    def loss_fn(model, batch):
        loss, metrics = classification_loss(model, batch)
        seen.append((torch.is_grad_enabled(), model.training, loss.requires_grad))
        return loss, metrics

    model = _model(dropout=0.5)
    evaluate(model, [(x[:10], y[:10]), (x[10:], y[10:])], loss_fn)
    assert seen == [(False, False, False)] * 2 and model.training
    model.eval()
    evaluate(model, [(x, y)], loss_fn)
    assert not model.training  # a model the caller had in eval mode stays there


def _recording_loss(modes: list[bool]):
    def loss_fn(model, batch):
        modes.append(model.training)
        return classification_loss(model, batch)

    return loss_fn


def test_every_update_after_a_sample_runs_in_training_mode(tmp_path):
    """A ``sample_fn`` that switches the model to eval mode, as the book's sampler does: every later update
    still trains with dropout on (``hooks.log_sample`` puts the model back in training mode)."""
    x, y = _data()
    model = _model(dropout=0.5)
    modes: list[bool] = []

    def sample_fn(m):
        m.eval()
        return "sample"

    with tb.open_run("t", "modes", root=tmp_path) as writer:
        train(model, make_adamw(model, 0.05), TrainConfig(max_steps=6, lr=0.05, sample_every=2, progress=False),
              batch_fn=epoch_batches(x, y, 16), loss_fn=_recording_loss(modes), writer=writer, sample_fn=sample_fn)
    assert tb.read_text(writer.logdir, "samples").step.tolist() == [0, 2, 4, 5]
    assert modes == [True] * 6 and model.training


def test_every_update_after_an_evaluation_runs_in_training_mode():
    """An ``eval_fn`` that leaves the model in eval mode: the loop itself puts it back in training mode
    (``hooks.evaluate_and_log``)."""
    x, y = _data()
    model = _model(dropout=0.5)
    modes: list[bool] = []

    def eval_fn(m):
        m.eval()
        return {"loss": 1.0}

    train(model, make_adamw(model, 0.05), TrainConfig(max_steps=6, lr=0.05, eval_every=2, progress=False),
          batch_fn=epoch_batches(x, y, 16), loss_fn=_recording_loss(modes), eval_fn=eval_fn)
    assert modes == [True] * 6 and model.training
