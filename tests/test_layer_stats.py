"""utils.layer_stats and the loop's ``layer_stats_every``: per-parameter gradient norms before clipping and
ReLUs' share of exactly-zero outputs, each checked against a computation made here without the probe, and
read back through TensorBoard's own loader."""

from __future__ import annotations

import pytest
import torch

from utils import tb
from utils.batches import epoch_batches
from utils.evaluation import classification_loss, evaluate
from utils.layer_stats import LayerProbe, gradient_norms
from utils.loop import TrainConfig, accumulated_gradients, train, train_step


def _data(n=96, seed=0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=generator)
    return x, (x[:, 0] - x[:, 2] > 0).long()


def _relu_net(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(6, 32), torch.nn.ReLU(), torch.nn.Linear(32, 16),
                               torch.nn.ReLU(), torch.nn.Linear(16, 2))


class SharedReLU(torch.nn.Module):
    """One ReLU module applied after each of three layers, as chapter 8's DeepMLP does."""

    def __init__(self):
        super().__init__()
        self.layers = torch.nn.ModuleList([torch.nn.Linear(6, 8), torch.nn.Linear(8, 8), torch.nn.Linear(8, 8)])
        self.act = torch.nn.ReLU()
        self.head = torch.nn.Linear(8, 2)

    def forward(self, x):
        for layer in self.layers:
            x = self.act(layer(x))  # (B, 8)
        return self.head(x)


def _zero_shares_by_hand(model, batches):
    """Each hidden layer's share of exact zeros over ``batches``, computed layer by layer."""
    zeros = total = None
    for x, _ in batches:
        outs = []
        with torch.no_grad():
            h = x
            for module in model:
                h = module(h)
                if isinstance(module, torch.nn.ReLU):
                    outs.append(h)
        counts = [(o == 0).sum().item() for o in outs]
        sizes = [o.numel() for o in outs]
        zeros = counts if zeros is None else [a + b for a, b in zip(zeros, counts, strict=True)]
        total = sizes if total is None else [a + b for a, b in zip(total, sizes, strict=True)]
    return [z / t for z, t in zip(zeros, total, strict=True)]


def test_gradient_norms_are_each_parameters_norm():
    x, y = _data()
    model = _relu_net()
    grads = accumulated_gradients(model, classification_loss, [(x, y)])
    classification_loss(model, (x, y))[0].backward()
    norms = gradient_norms(model)
    matrices = [name for name in grads if name.endswith("weight")]
    assert list(norms) == [f"grad_norm/{name}" for name in matrices]  # biases left out
    for name in matrices:
        grad = grads[name]
        assert norms[f"grad_norm/{name}"] == pytest.approx(float(grad.norm()), rel=1e-6)


def test_the_probe_reads_gradients_before_clipping_and_zeros_over_micro_batches():
    x, y = _data()
    micro = [(x[:48], y[:48]), (x[48:], y[48:])]
    model = _relu_net()
    unclipped = accumulated_gradients(model, classification_loss, micro)
    expected_shares = _zero_shares_by_hand(model, micro)
    with LayerProbe(model) as probe:
        stats = train_step(model, torch.optim.SGD(model.parameters(), lr=0.1), micro, classification_loss,
                           grad_clip=1e-3, after_backward=probe.after_backward)
    assert stats.grad_norm > 1e-3  # clipping acted: the gradients the step used were scaled down
    assert len(probe.grad_norms) == 3
    for name in ("0.weight", "2.weight", "4.weight"):
        grad = unclipped[name]
        assert probe.grad_norms[f"grad_norm/{name}"] == pytest.approx(float(grad.norm()), rel=1e-5)
    shares = probe.activation_shares()
    assert sorted(shares) == ["dead_share/1", "dead_share/3", "zero_share/1", "zero_share/3"]
    assert [shares["zero_share/1"], shares["zero_share/3"]] == pytest.approx(expected_shares, abs=1e-12)
    assert 0.1 < expected_shares[0] < 0.9  # a healthy layer: neither none nor all of its outputs are 0


def test_a_shared_relu_gets_one_share_per_call_and_the_hooks_go_when_closed():
    x, y = _data()
    model = SharedReLU()
    with torch.no_grad():
        h, expected = x, []
        for layer in model.layers:
            h = torch.relu(layer(h))
            expected.append((h == 0).float().mean().item())
    with LayerProbe(model) as probe:
        model(x)
    zeros = {t: v for t, v in probe.activation_shares().items() if t.startswith("zero_share/")}
    assert list(zeros) == ["zero_share/act.0", "zero_share/act.1", "zero_share/act.2"]
    assert list(zeros.values()) == pytest.approx(expected)
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
    model(x)  # after closing, a forward pass counts nothing
    assert probe.activation_shares()["zero_share/act.1"] == pytest.approx(expected[1])


def test_caller_after_backward_runs_first():
    x, y = _data()
    model, order = _relu_net(), []

    def halve(m):
        order.append("caller")
        for p in m.parameters():
            p.grad /= 2

    reference = accumulated_gradients(model, classification_loss, [(x, y)])
    with LayerProbe(model, then=halve) as probe:
        train_step(model, torch.optim.SGD(model.parameters(), lr=0.0), [(x, y)], classification_loss,
                   after_backward=probe.after_backward)
    assert order == ["caller"]
    assert probe.grad_norms["grad_norm/0.weight"] == pytest.approx(float(reference["0.weight"].norm()) / 2)


def test_the_loop_logs_them_at_their_cadence_on_training_batches_only(tmp_path):
    x, y = _data()
    x_val = torch.full((8, 6), -100.0)  # every hidden unit 0 on it: must not enter the training share
    model = _relu_net()
    config = TrainConfig(max_steps=7, lr=0.0, min_lr=0.0, layer_stats_every=3, eval_every=1, progress=False)
    batch_fn = epoch_batches(x, y, 32, seed=0)
    expected = _zero_shares_by_hand(_relu_net(), [batch_fn(0)])
    with tb.open_run("t", "layers", root=tmp_path) as writer:
        train(model, torch.optim.SGD(model.parameters(), lr=0.0), config, batch_fn=batch_fn,
              eval_fn=lambda m: evaluate(m, [(x_val, y[:8])], classification_loss), writer=writer)
    run = tb.run_path("t", "layers", tmp_path)
    scalars = tb.assert_logged(run, {"grad_norm/0.weight": [0, 3, 6], "grad_norm/4.weight": [0, 3, 6],
                                     "zero_share/1": [0, 3, 6], "zero_share/3": [0, 3, 6],
                                     "dead_share/3": [0, 3, 6]})
    assert not scalars[scalars.tag.str.startswith("grad_norm/") & scalars.tag.str.endswith("bias")].size
    first = scalars[(scalars.step == 0) & scalars.tag.str.startswith("zero_share/")].sort_values("tag")
    assert first.value.tolist() == pytest.approx(expected, abs=1e-6)  # float32 in the event file


def test_off_by_default(tmp_path):
    x, y = _data()
    model = _relu_net()
    with tb.open_run("t", "off", root=tmp_path) as writer:
        train(model, torch.optim.SGD(model.parameters(), lr=0.1), TrainConfig(max_steps=3, progress=False),
              batch_fn=epoch_batches(x, y, 32), writer=writer)
    tags = tb.list_tags(tb.run_path("t", "off", tmp_path))["scalars"]
    assert not [t for t in tags if t.startswith(("grad_norm/", "zero_share/", "dead_share/"))]


@pytest.mark.parametrize("every", [-1, 1.5, "2"])
def test_a_bad_cadence_is_refused(every):
    with pytest.raises((ValueError, TypeError), match="layer_stats_every"):
        TrainConfig(max_steps=3, layer_stats_every=every)



def test_dead_share_counts_units_zero_for_every_input_of_the_update():
    """Units of a Linear's output (B, C): 5 of 16 made dead by a large negative bias; the others are 0 for
    some rows only. A convolution's units are its channels: a channel 0 at every position of every image
    is dead, one that fires at one position of one image is alive."""
    x, y = _data()
    model = _relu_net()
    with torch.no_grad():
        model[2].bias[:5] = -1e3
    with LayerProbe(model) as probe:
        model(x[:48])
        model(x[48:])
    shares = probe.activation_shares()
    assert shares["dead_share/3"] == pytest.approx(5 / 16) and shares["dead_share/1"] == 0.0
    assert shares["zero_share/3"] > 5 / 16
    conv = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1, bias=False), torch.nn.ReLU())
    with torch.no_grad():
        conv[0].weight.zero_()
        conv[0].weight[0, 0, 1, 1] = 1.0  # channel 0 copies the image; 1-3 output 0 everywhere
    images = torch.zeros(8, 1, 6, 6)
    images[3, 0, 2, 4] = 1.0  # one lit pixel in one image: a sparse input
    with LayerProbe(conv) as probe:
        conv(images)
    assert probe.activation_shares() == {"zero_share/1": pytest.approx(1 - 1 / (8 * 4 * 36)),
                                         "dead_share/1": 0.75}


class Wrapped(torch.nn.Module):
    """A model whose loss function calls its submodule, not the model itself."""

    def __init__(self):
        super().__init__()
        self.net = _relu_net()


def test_a_pass_starts_at_whichever_module_the_loss_calls_first():
    x, y = _data()
    model = Wrapped()

    def loss_fn(m, batch):
        return classification_loss(m.net, batch)

    micro = [(x[:32], y[:32]), (x[32:64], y[32:64]), (x[64:], y[64:])]
    with LayerProbe(model) as probe:
        train_step(model, torch.optim.SGD(model.parameters(), lr=0.0), micro, loss_fn,
                   after_backward=probe.after_backward)
    expected = _zero_shares_by_hand(model.net, micro)
    shares = probe.activation_shares()
    assert sorted(t for t in shares if t.startswith("zero_share/")) == ["zero_share/net.1", "zero_share/net.3"]
    assert [shares["zero_share/net.1"], shares["zero_share/net.3"]] == pytest.approx(expected)


def test_a_ddp_model_is_named_as_the_model_it_wraps(tmp_path):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        x, y = _data()
        model = torch.nn.parallel.DistributedDataParallel(_relu_net())
        with LayerProbe(model) as probe:
            train_step(model, torch.optim.SGD(model.parameters(), lr=0.0), [(x, y)], classification_loss,
                       after_backward=probe.after_backward)
        assert sorted(probe.grad_norms) == ["grad_norm/0.weight", "grad_norm/2.weight", "grad_norm/4.weight"]
        assert "zero_share/1" in probe.activation_shares()
    finally:
        dist.destroy_process_group()


def test_a_diverged_update_logs_its_layers(tmp_path):
    """The update whose loss is non-finite makes no step; its per-layer norms say where it blew up."""
    x, y = _data()
    x[5, 0] = float("inf")
    model = _relu_net()
    config = TrainConfig(max_steps=3, lr=0.1, layer_stats_every=1, progress=False)
    with tb.open_run("t", "diverged", root=tmp_path, allow_non_finite=True) as writer:
        result = train(model, torch.optim.SGD(model.parameters(), lr=0.1), config, batch_fn=lambda i: (x, y),
                       writer=writer)
    assert result.diverged and result.steps_done == 0
    scalars = tb.read_scalars(tb.run_path("t", "diverged", tmp_path))
    assert set(scalars[scalars.tag.str.startswith("grad_norm/")].step) == {0}
    assert len(scalars[scalars.tag.str.startswith(("grad_norm/", "zero_share/", "dead_share/"))]) == 7


def test_the_hooks_go_when_the_update_raises():
    x, y = _data()
    model = _relu_net()

    def broken_loss(m, batch):
        m(batch[0])
        raise RuntimeError("a loss that fails after the forward pass")

    with pytest.raises(RuntimeError, match="fails after"):
        with LayerProbe(model) as probe:
            train_step(model, torch.optim.SGD(model.parameters(), lr=0.1), [(x, y)], broken_loss,
                       after_backward=probe.after_backward)
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
