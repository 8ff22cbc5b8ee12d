"""utils.loop: train_step and the loop (cadence, accumulation, clipping, per-group rates, early stopping,
divergence, samples, devices, resume, the caller's own work after each update, several ranks)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

from utils import checkpoint as ckpt
from utils import hooks, perf, tb
from utils.batches import epoch_batches
from utils.evaluation import classification_loss, evaluate
from utils.loop import (
    Ranks,
    TrainConfig,
    accumulated_gradients,
    autocast_context,
    interrupt_after,
    open_segment,
    resolve_device,
    train,
    train_step,
)
from utils.optim import make_adamw


def _data(n=64, seed=0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 5, generator=generator)
    y = (x[:, 0] + x[:, 1] > 0).long()
    return x, y


def _model(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(5, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2))


def _constant(lr, **kwargs):
    return TrainConfig(lr=lr, min_lr=lr, progress=False, **kwargs)


def test_one_rule_for_every_n_steps():
    assert [s for s in range(12) if hooks.due(4, s, 11)] == [0, 4, 8, 11]
    assert [s for s in range(12) if hooks.due(0, s, 11)] == []
    assert [s for s in range(3) if hooks.due(1, s, 2)] == [0, 1, 2]


def test_logs_every_tag_at_its_cadence(tmp_path):
    x, y = _data()
    model = _model()
    config = TrainConfig(max_steps=12, lr=0.05, warmup_steps=2, log_every=2, eval_every=5, histogram_every=6,
                         update_ratio_every=4, flops_per_unit=100.0, progress=False)
    with tb.open_run("t", "cadence", root=tmp_path) as writer:
        result = train(model, make_adamw(model, 0.05), config, batch_fn=epoch_batches(x, y, 16),
                       eval_fn=lambda m: evaluate(m, [(x, y)], classification_loss), writer=writer,
                       peak_gflops=1.0)
    run = tb.run_path("t", "cadence", tmp_path)
    logged = [0, 2, 4, 6, 8, 10, 11]
    scalars = tb.assert_logged(run, {
        "train/loss": logged, "train/accuracy": logged, "train/lr": logged, "train/grad_norm": logged,
        "perf/examples_per_s": logged, "perf/mfu": logged, "val/loss": [0, 5, 10, 11], "val/accuracy": 4,
        "weights/0.weight": [0, 6, 11], "grads/2.bias": [0, 6, 11], "update_ratio/0.weight": [0, 4, 8, 11]})
    assert result.steps_done == 12 and result.eval_steps == [0, 5, 10, 11]
    lrs = scalars[scalars.tag == "train/lr"].value.tolist()
    assert lrs[0] == pytest.approx(0.025) and lrs[1] == pytest.approx(0.05)  # warm-up then cosine
    assert 0 < scalars[scalars.tag == "update_ratio/0.weight"].value.min() < 1


def test_train_step_is_one_sgd_update():
    x, y = _data(16)
    model, reference = _model(), _model()
    train_step(model, torch.optim.SGD(model.parameters(), lr=0.1), [(x, y)], classification_loss)
    classification_loss(reference, (x, y))[0].backward()
    for p, q in zip(model.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(p, q - 0.1 * q.grad)


def test_accumulated_gradient_equals_the_big_batch_gradient():
    x, y = _data(48)
    model = _model()
    accumulated = accumulated_gradients(model, classification_loss, [(x[i:i + 12], y[i:i + 12])
                                                                    for i in range(0, 48, 12)])
    assert all(p.grad is None for p in model.parameters())
    classification_loss(model, (x, y))[0].backward()
    for name, p in model.named_parameters():
        torch.testing.assert_close(accumulated[name], p.grad, rtol=1e-5, atol=1e-7)


def test_accumulation_in_the_loop_matches_one_large_batch():
    x, y = _data(64)
    runs = []
    for k in (1, 4):
        model = _model()
        big = epoch_batches(x, y, 32, seed=3)
        # micro-batch i of the accumulated run = quarter (i mod k) of big batch (i div k)
        batch_fn = big if k == 1 else (lambda i, big=big, k=k: tuple(t[(i % k) * 8:(i % k + 1) * 8]
                                                                    for t in big(i // k)))
        train(model, torch.optim.SGD(model.parameters(), lr=0.1),
              _constant(0.1, max_steps=3, grad_clip=None, grad_accum_steps=k), batch_fn=batch_fn)
        runs.append(model)
    for a, b in zip(runs[0].parameters(), runs[1].parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_micro_batch_metrics_are_averaged(tmp_path):
    x, y = _data(64)
    model = _model()
    micro = [(x[i:i + 16], y[i:i + 16]) for i in range(0, 64, 16)]
    with torch.no_grad():
        expected_acc = sum(classification_loss(model, b)[1]["accuracy"] for b in micro) / 4
        expected_loss = sum(classification_loss(model, b)[0].item() for b in micro) / 4
    with tb.open_run("t", "micro", root=tmp_path) as writer:
        result = train(model, torch.optim.SGD(model.parameters(), lr=0.0),
                       _constant(0.0, max_steps=1, grad_accum_steps=4), batch_fn=lambda i: micro[i % 4],
                       writer=writer)
    logged = tb.read_scalars(writer.logdir)
    assert logged[logged.tag == "train/accuracy"].value.item() == pytest.approx(expected_acc, rel=1e-6)
    assert result.train_loss[0] == pytest.approx(expected_loss, rel=1e-6)


def _update_size(grad_clip, scale=1.0):
    """(gradient norm, size of the SGD update at lr 1, result) of one update on inputs times ``scale``."""
    x, y = _data(16)
    x = x * scale
    model = _model()
    before = [p.detach().clone() for p in model.parameters()]
    classification_loss(model, (x, y))[0].backward()
    norm = float(torch.nn.utils.get_total_norm([p.grad for p in model.parameters()]))
    model.zero_grad(set_to_none=True)
    config = _constant(1.0, max_steps=1, grad_clip=grad_clip(norm))
    result = train(model, torch.optim.SGD(model.parameters(), lr=1.0), config, batch_fn=lambda i: (x, y))
    size = torch.sqrt(sum(((p.detach() - b) ** 2).sum() for p, b in zip(model.parameters(), before, strict=True)))
    return norm, float(size), result


def test_clipping_bounds_the_update_and_logs_the_norm_before_clipping(tmp_path):
    norm, size, _ = _update_size(lambda n: n / 10)
    assert size == pytest.approx(norm / 10, rel=1e-4)  # SGD lr=1: the update is the clipped gradient


def test_clipping_off_leaves_a_large_gradient_alone():
    norm, size, _ = _update_size(lambda n: None, scale=50.0)  # a gradient norm well above 1
    assert norm > 1 and size == pytest.approx(norm, rel=1e-4)


def test_weight_decay_only_on_matrices():
    optimizer = make_adamw(_model(), 1e-3, weight_decay=0.1)
    decays = {tuple(p.shape): g["weight_decay"] for g in optimizer.param_groups for p in g["params"]}
    assert decays == {(16, 5): 0.1, (16,): 0.0, (2, 16): 0.1, (2,): 0.0}


def test_per_group_learning_rates_survive_the_schedule_and_are_logged(tmp_path):
    x, y = _data()
    model = _model()
    optimizer = make_adamw(model, 1e-2, lr_by_prefix={"0.": 1e-3})  # layer 0 ten times slower
    config = TrainConfig(max_steps=10, lr=1e-2, min_lr=1e-3, warmup_steps=2, progress=False)
    with tb.open_run("t", "groups", root=tmp_path) as writer:
        train(model, optimizer, config, batch_fn=epoch_batches(x, y, 16), writer=writer)
    logged = tb.read_scalars(writer.logdir)
    slow = logged[logged.tag == "train/lr/0.decay"].value.to_numpy()
    fast = logged[logged.tag == "train/lr/decay"].value.to_numpy()
    assert len(slow) == len(fast) == 10
    assert slow == pytest.approx(fast / 10)
    assert fast[1] == pytest.approx(1e-2) and fast[-1] < fast[1]


def test_the_peak_learning_rate_is_the_configs_and_the_groups_keep_their_ratio(tmp_path):
    x, y = _data()
    model = _model()
    optimizer = make_adamw(model, 0.5, lr_by_prefix={"0.": 0.05})  # these only say: layer 0 ten times slower
    with tb.open_run("t", "peak", root=tmp_path) as writer:
        train(model, optimizer, _constant(0.1, max_steps=2), batch_fn=epoch_batches(x, y, 16), writer=writer)
    logged = tb.read_scalars(writer.logdir)
    assert logged[logged.tag == "train/lr/decay"].value.tolist() == pytest.approx([0.1, 0.1])
    assert logged[logged.tag == "train/lr/0.decay"].value.tolist() == pytest.approx([0.01, 0.01])


def test_early_stopping_and_restore_best():
    x, y = _data()
    model = _model()
    losses = iter([1.0, 0.8, 0.9, 0.8, 0.99, 0.5])  # 0.8 again is a tie: not progress
    snapshots = []

    def eval_fn(m):
        snapshots.append({k: v.clone() for k, v in m.state_dict().items()})
        return {"loss": next(losses)}

    config = TrainConfig(max_steps=50, lr=0.05, eval_every=2, early_stopping_patience=3, restore_best=True,
                         progress=False)
    result = train(model, make_adamw(model, 0.05), config, batch_fn=epoch_batches(x, y, 16), eval_fn=eval_fn)
    assert result.stopped_early and result.eval_steps == [0, 2, 4, 6, 8] and result.steps_done == 9
    assert result.best_step == 2 and result.best_val_loss == 0.8
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, snapshots[1][key])


def test_early_stopping_across_a_resume_stops_where_an_uninterrupted_run_does(tmp_path):
    x, y = _data()
    losses = [1.0, 0.8, 0.9, 0.95, 0.99, 0.5, 0.4]
    base = dict(max_steps=50, lr=0.05, eval_every=2, early_stopping_patience=3, progress=False,
                checkpoint_every=3, checkpoint_dir=str(tmp_path / "ck"))

    def run(config, resume_from=None, start=0, after_update=None):
        model = _model()
        scripted = iter(losses[start:])
        return train(model, make_adamw(model, 0.05), config, batch_fn=epoch_batches(x, y, 16),
                     eval_fn=lambda m: {"loss": next(scripted)}, resume_from=resume_from,
                     after_update=after_update)

    straight = run(TrainConfig(**{**base, "checkpoint_dir": str(tmp_path / "straight")}))
    first = run(TrainConfig(**base), after_update=interrupt_after(5))
    assert first.interrupted and first.eval_steps == [0, 2, 4]
    latest = ckpt.latest_checkpoint(tmp_path / "ck")
    assert ckpt.read_checkpoint(latest)["step"] == 4  # saved after step 3: evaluations at 0 and 2 behind it
    second = run(TrainConfig(**base), resume_from=latest, start=2)
    assert straight.stopped_early and second.stopped_early
    assert second.steps_done == straight.steps_done == 9 and second.best_step == straight.best_step == 2


def test_divergence_stops_the_run_and_keeps_the_weights():
    x, y = _data()
    model = _model()
    x_bad = x.clone()
    x_bad[0, 0] = math.nan
    state = {k: v.clone() for k, v in model.state_dict().items()}
    result = train(model, make_adamw(model, 0.05), TrainConfig(max_steps=5, lr=0.05, progress=False),
                   batch_fn=lambda i: (x_bad, y) if i == 3 else (x, y))
    assert result.diverged and result.steps_done == 3 and result.train_steps == [0, 1, 2]
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert any(not torch.equal(state[k], v) for k, v in model.state_dict().items())  # 3 updates were made


def test_divergence_by_an_infinite_gradient_makes_no_update():
    x, y = _data(16)
    model = _model()
    state = {k: v.clone() for k, v in model.state_dict().items()}

    model[0].weight.register_hook(lambda grad: grad * math.inf)  # a finite loss whose gradient overflows
    stats = train_step(model, torch.optim.SGD(model.parameters(), lr=0.1), [(x, y)], classification_loss)
    assert math.isfinite(stats.loss) and not stats.finite
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, state[key])


def test_samples_follow_the_one_rule(tmp_path):
    x, y = _data()
    model = _model()
    calls = []

    def sample_fn(m):
        calls.append(m.training)
        return f"sample {len(calls)}"

    with tb.open_run("t", "samples", root=tmp_path) as writer:
        train(model, make_adamw(model, 0.05), TrainConfig(max_steps=10, lr=0.05, sample_every=4, progress=False),
              batch_fn=epoch_batches(x, y, 16), writer=writer, sample_fn=sample_fn)
    text = tb.read_text(writer.logdir, "samples")
    assert text.step.tolist() == [0, 4, 8, 9] and model.training


def test_interrupted_and_resumed_equals_uninterrupted(tmp_path):
    x, y = _data()
    config = dict(max_steps=20, lr=0.05, warmup_steps=3, log_every=1, eval_every=4, progress=False)
    eval_fn = lambda m: evaluate(m, [(x, y)], classification_loss)  # noqa: E731
    straight = _model()
    train(straight, make_adamw(straight, 0.05), TrainConfig(**config), batch_fn=epoch_batches(x, y, 16),
          eval_fn=eval_fn)

    folder = tmp_path / "ckpt"
    model = _model()
    with open_segment("t", "resumed", root=tmp_path / "runs") as writer:
        first = train(model, make_adamw(model, 0.05),
                      TrainConfig(**config, checkpoint_every=5, checkpoint_dir=str(folder)),
                      batch_fn=epoch_batches(x, y, 16), eval_fn=eval_fn, writer=writer,
                      after_update=interrupt_after(13))
    assert first.interrupted and first.steps_done == 13
    latest = ckpt.latest_checkpoint(folder)
    assert latest == ckpt.step_path(folder, 11)  # saved after step 10; steps 11-12 will be redone
    model = _model(seed=99)  # a fresh process would start from other weights: all must come from the file
    with open_segment("t", "resumed", resume_from=latest, root=tmp_path / "runs") as writer:
        second = train(model, make_adamw(model, 0.05),
                       TrainConfig(**config, checkpoint_every=5, checkpoint_dir=str(folder)),
                       batch_fn=epoch_batches(x, y, 16), eval_fn=eval_fn, writer=writer, resume_from=latest)
    assert second.start_step == 11 and second.steps_done == 20
    for a, b in zip(straight.parameters(), model.parameters(), strict=True):
        torch.testing.assert_close(a, b)
    tb.assert_logged(tmp_path / "runs" / "t" / "resumed", {"train/loss": list(range(20)),
                                                           "val/loss": [0, 4, 8, 12, 16, 19]})


def test_after_update_sees_each_update_and_interrupt_after_is_the_same_interruption():
    x, y = _data()
    seen = []

    def after_update(step, stats):
        seen.append((step, stats.loss))
        return step == 3

    model = _model()
    result = train(model, make_adamw(model, 0.05), _constant(0.05, max_steps=8),
                   batch_fn=epoch_batches(x, y, 16), after_update=after_update)
    assert [s for s, _ in seen] == [0, 1, 2, 3] and [loss for _, loss in seen] == result.train_loss
    assert result.interrupted and result.steps_done == 4
    model = _model()
    again = train(model, make_adamw(model, 0.05), _constant(0.05, max_steps=8),
                  batch_fn=epoch_batches(x, y, 16), after_update=interrupt_after(4))
    assert again.interrupted and again.train_loss == result.train_loss
    model = _model()
    ends = train(model, make_adamw(model, 0.05), _constant(0.05, max_steps=4),
                 batch_fn=epoch_batches(x, y, 16), after_update=interrupt_after(4))
    assert not ends.interrupted and ends.steps_done == 4  # stopping at the last update interrupts nothing


def test_eval_fn_is_given_the_step_when_it_asks_for_it():
    x, y = _data()
    steps = []

    def eval_fn(model, step):
        steps.append(step)
        return {"loss": 1.0}

    model = _model()
    result = train(model, make_adamw(model, 0.05), _constant(0.05, max_steps=12, eval_every=5),
                   batch_fn=epoch_batches(x, y, 16), eval_fn=eval_fn)
    assert steps == result.eval_steps == [0, 5, 10, 11]


def test_after_backward_runs_before_clipping_and_the_step():
    x, y = _data(16)
    model = _model()
    before = [p.detach().clone() for p in model.parameters()]
    calls = []

    def after_backward(m):
        calls.append(all(p.grad is not None for p in m.parameters()))
        for p in m.parameters():
            p.grad.zero_()  # what the update then uses

    stats = train_step(model, torch.optim.SGD(model.parameters(), lr=1.0), [(x, y)], classification_loss,
                       grad_clip=1.0, after_backward=after_backward)
    assert calls == [True] and stats.grad_norm == 0.0
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before, strict=True))


def test_on_several_ranks_rank_0_saves_every_rank_waits_and_the_loss_is_averaged(tmp_path):
    """A stand-in for ``utils.distributed.group_ranks()``: ``mean`` adds 100, as if the other rank's loss
    were 200 higher; ``barrier`` counts. Rank 1 saves nothing but waits at every checkpoint rank 0 saves."""
    x, y = _data()
    counts = {}
    for rank in (0, 1):
        waits: list[int] = []
        ranks = Ranks(rank=rank, size=2, mean=lambda value: value + 100.0,
                      barrier=lambda w=waits: w.append(1))
        folder = tmp_path / f"rank{rank}"
        config = _constant(0.05, max_steps=6, checkpoint_every=2, checkpoint_dir=str(folder))
        model = _model()
        result = train(model, make_adamw(model, 0.05), config, batch_fn=epoch_batches(x, y, 16), ranks=ranks)
        counts[rank] = (len(waits), len(ckpt.list_checkpoints(folder)), result)
    assert counts[0][:2] == (4, 2) and counts[1][:2] == (4, 0)  # after steps 0, 2, 4, 5; 2 kept
    assert len(counts[0][2].checkpoints) == 4 and counts[1][2].checkpoints == []
    assert all(loss > 100 for loss in counts[1][2].train_loss)


def test_a_fresh_segment_writes_the_start_marker_that_makes_later_purges_work(tmp_path):
    # TensorBoard's Python loader treats the first START marker of a run as its beginning: without one in the
    # first segment (purge_step=0), the purge of a resumed segment is ignored and steps appear twice.
    with open_segment("t", "fresh", root=tmp_path) as writer:
        writer.add_scalar("a", 1.0, 0)
    files = sorted(p for p in Path(writer.logdir).iterdir() if "tfevents" in p.name)
    statuses = [e.session_log.status for f in files for e in EventFileLoader(str(f)).Load()
                if e.HasField("session_log")]
    assert 1 in statuses  # SessionLog.START


def test_devices_are_resolved_and_checked():
    assert resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        assert resolve_device("auto").type in ("cpu", "mps")
        with pytest.raises(ValueError, match="no CUDA GPU"):
            resolve_device("cuda")
    with pytest.raises(ValueError, match="autocast must be"):
        autocast_context("fp8", "cpu")


def test_autocast_is_decided_once_per_run():
    x, y = _data()
    model = _model()
    perf.bf16_autocast_supported.cache_clear()
    result = train(model, make_adamw(model, 0.05), TrainConfig(max_steps=6, lr=0.05, autocast="auto",
                                                              progress=False), batch_fn=epoch_batches(x, y, 16))
    info = perf.bf16_autocast_supported.cache_info()
    assert info.misses == 1 and info.hits == 0 and result.steps_done == 6


def test_bf16_autocast_runs_and_is_reported():
    x, y = _data()
    model = _model()
    result = train(model, make_adamw(model, 0.05), TrainConfig(max_steps=3, lr=0.05, autocast="bf16",
                                                              progress=False), batch_fn=epoch_batches(x, y, 16))
    assert result.autocast_dtype == "bfloat16" and all(math.isfinite(v) for v in result.train_loss)
    assert next(model.parameters()).dtype == torch.float32  # autocast computes in bf16, keeps fp32 weights


def test_the_matmul_peak_is_cached_per_thread_count():
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = perf.matmul_peak_gflops(n=64, repeats=2)
        assert perf.matmul_peak_gflops(n=64, repeats=2) == one  # cached
        torch.set_num_threads(2)
        perf.matmul_peak_gflops(n=64, repeats=2)
        keys = perf._cached_peak.cache_info().currsize
        assert keys >= 2  # one entry per thread count, not the 1-thread value again
    finally:
        torch.set_num_threads(threads)
