"""utils.train: the one training loop (logging cadence, accumulation, clipping, early stopping, resume)."""

from __future__ import annotations

import math

import pytest
import torch

from utils import checkpoint as ckpt
from utils import tb
from utils.train import (
    TrainConfig,
    accumulated_gradients,
    classification_loss,
    epoch_batches,
    evaluate,
    global_grad_norm,
    lm_loss,
    make_adamw,
    open_segment,
    random_windows,
    train,
)


def _data(n=64, seed=0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 5, generator=generator)
    y = (x[:, 0] + x[:, 1] > 0).long()
    return x, y


def _model(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(5, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2))


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
        "weights/0.weight": [0, 6], "grads/2.bias": [0, 6], "update_ratio/0.weight": [0, 4, 8]})
    assert result.steps_done == 12 and result.eval_steps == [0, 5, 10, 11]
    lrs = scalars[scalars.tag == "train/lr"].value.tolist()
    assert lrs[0] == pytest.approx(0.025) and lrs[1] == pytest.approx(0.05)  # warm-up then cosine
    assert 0 < scalars[scalars.tag == "update_ratio/0.weight"].value.min() < 1


def test_accumulated_gradient_equals_the_big_batch_gradient():
    x, y = _data(48)
    model = _model()
    accumulated = accumulated_gradients(model, classification_loss, [(x[i:i + 12], y[i:i + 12])
                                                                    for i in range(0, 48, 12)])
    model.zero_grad()
    classification_loss(model, (x, y))[0].backward()
    for name, p in model.named_parameters():
        torch.testing.assert_close(accumulated[name], p.grad, rtol=1e-5, atol=1e-7)


def test_accumulation_in_the_loop_matches_one_large_batch():
    x, y = _data(64)
    runs = []
    for k in (1, 4):
        model = _model()
        config = TrainConfig(max_steps=3, lr=0.1, schedule="constant", grad_clip=None, grad_accum_steps=k,
                             progress=False)
        big = epoch_batches(x, y, 32, seed=3)
        # micro-batch i of the accumulated run = quarter (i mod k) of big batch (i div k)
        batch_fn = big if k == 1 else (lambda i, big=big, k=k: tuple(t[(i % k) * 8:(i % k + 1) * 8]
                                                                    for t in big(i // k)))
        train(model, torch.optim.SGD(model.parameters(), lr=0.1), config, batch_fn=batch_fn)
        runs.append(model)
    for a, b in zip(runs[0].parameters(), runs[1].parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_clipping_bounds_the_update_and_logs_the_norm_before_clipping(tmp_path):
    x, y = _data(16)
    model = _model()
    before = [p.detach().clone() for p in model.parameters()]
    batch = (x, y)
    model.zero_grad()
    classification_loss(model, batch)[0].backward()
    norm = global_grad_norm(model.parameters())
    model.zero_grad()
    config = TrainConfig(max_steps=1, lr=1.0, schedule="constant", grad_clip=norm / 10, progress=False)
    with tb.open_run("t", "clip", root=tmp_path) as writer:
        train(model, torch.optim.SGD(model.parameters(), lr=1.0), config, batch_fn=lambda i: batch,
              writer=writer)
    step = torch.sqrt(sum(((p.detach() - b) ** 2).sum() for p, b in zip(model.parameters(), before, strict=True)))
    assert float(step) == pytest.approx(norm / 10, rel=1e-4)  # SGD lr=1: the update is the clipped gradient
    logged = tb.read_scalars(tb.run_path("t", "clip", tmp_path), ["train/grad_norm"]).value.item()
    assert logged == pytest.approx(norm, rel=1e-5)


def test_weight_decay_only_on_matrices():
    optimizer = make_adamw(_model(), 1e-3, weight_decay=0.1)
    decays = {tuple(p.shape): g["weight_decay"] for g in optimizer.param_groups for p in g["params"]}
    assert decays == {(16, 5): 0.1, (16,): 0.0, (2, 16): 0.1, (2,): 0.0}


def test_early_stopping_and_restore_best():
    x, y = _data()
    model = _model()
    losses = iter([1.0, 0.8, 0.9, 0.95, 0.99, 0.5])
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


def test_divergence_stops_the_run():
    x, y = _data()
    model = _model()
    x_bad = x.clone()
    x_bad[0, 0] = math.nan
    result = train(model, make_adamw(model, 0.05), TrainConfig(max_steps=5, progress=False),
                   batch_fn=lambda i: (x_bad, y))
    assert result.diverged and result.steps_done == 0


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
                      TrainConfig(**config, checkpoint_every=5, checkpoint_dir=str(folder), stop_after=13),
                      batch_fn=epoch_batches(x, y, 16), eval_fn=eval_fn, writer=writer)
    assert first.interrupted and first.steps_done == 13
    latest = ckpt.latest_checkpoint(folder)
    assert latest == ckpt.step_path(folder, 10)  # steps 10-12 were logged after it: they will be redone
    model = _model(seed=99)  # a fresh process would start from other weights: all must come from the file
    with open_segment("t", "resumed", resume_from=latest, root=tmp_path / "runs") as writer:
        second = train(model, make_adamw(model, 0.05), TrainConfig(**config, checkpoint_every=5, checkpoint_dir=str(folder)),
                       batch_fn=epoch_batches(x, y, 16), eval_fn=eval_fn, writer=writer, resume_from=latest)
    assert second.start_step == 10 and second.steps_done == 20
    for a, b in zip(straight.parameters(), model.parameters(), strict=True):
        torch.testing.assert_close(a, b)
    tb.assert_logged(tmp_path / "runs" / "t" / "resumed", {"train/loss": list(range(20)),
                                                           "val/loss": [0, 4, 8, 12, 16, 19]})


def test_random_windows_are_shifted_and_deterministic():
    tokens = torch.arange(100)
    batch_fn = random_windows(tokens, block_size=8, batch_size=4, seed=1)
    x, y = batch_fn(7)
    assert x.shape == (4, 8) and torch.equal(y, x + 1)
    assert torch.equal(batch_fn(7)[0], x) and not torch.equal(batch_fn(8)[0], x)


def test_lm_loss_with_a_gpt_like_model():
    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = torch.nn.Embedding(10, 10)

        def forward(self, idx, targets=None):
            logits = self.emb(idx)
            return logits, torch.nn.functional.cross_entropy(logits.view(-1, 10), targets.view(-1))

    torch.manual_seed(0)
    tokens = torch.randint(0, 10, (200,))
    loss, metrics = lm_loss(Tiny(), random_windows(tokens, 8, 4)(0))
    assert metrics == {} and loss.ndim == 0


def test_bf16_autocast_runs_and_is_reported():
    x, y = _data()
    model = _model()
    result = train(model, make_adamw(model, 0.05), TrainConfig(max_steps=3, autocast="bf16", progress=False),
                   batch_fn=epoch_batches(x, y, 16))
    assert result.autocast_dtype == "bfloat16" and all(math.isfinite(v) for v in result.train_loss)
    assert next(model.parameters()).dtype == torch.float32  # autocast computes in bf16, keeps fp32 weights
