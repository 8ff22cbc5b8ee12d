"""Per-layer signals of one update, for diagnosing a run from its logs (the signals AUTOTRAINER reads,
Zhang et al., ICSE 2021): the L2 norm of each matrix's gradient before clipping, ``grad_norm/<name>``;
the share of exactly-zero outputs of each ReLU, ``zero_share/<module>``; and the share of its units that
output 0 for every input of the update, ``dead_share/<module>``; all measured on the update's own
micro-batches. ``utils.loop.train`` logs them every ``TrainConfig.layer_stats_every`` updates.

Why these two. A global gradient norm cannot tell a net whose first layers get no gradient (vanishing
gradients: the first layer's norm a thousandth of the last one's) from a net that has converged; the norms
layer by layer can. A ReLU that outputs 0 passes back no gradient, so a unit that outputs 0 for every input
never recovers. About half of a healthy ReLU layer's outputs are 0 (more on sparse inputs), but hardly
any of its units is 0 for every input of a batch; a dead layer's are.

Only ReLU modules are watched (``ZERO_ACTIVATIONS``): their "off" output is exactly 0, while GELU's or
SiLU's is only small, so its share of exact zeros says nothing. A ReLU called as a function
(``torch.nn.functional.relu``) has no module to hook and is not seen.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

#: the activations whose "off" output is exactly 0
ZERO_ACTIVATIONS = (torch.nn.ReLU, torch.nn.ReLU6)
GRAD_NORM_PREFIX = "grad_norm/"
ZERO_SHARE_PREFIX = "zero_share/"
DEAD_SHARE_PREFIX = "dead_share/"


def _unwrapped(model: torch.nn.Module) -> torch.nn.Module:
    """The model a DDP wrapper holds (its names without ``module.``), else ``model``."""
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


def unit_alive(out: torch.Tensor) -> torch.Tensor:
    """Per unit, whether it output anything but 0 for some input: units are channels (dim 1) of a
    convolution's (B, C, H, W) or (B, C, D, H, W) output, else the last dim ((B, C), (B, T, C));
    shape (units,)."""
    dim = 1 if out.ndim >= 4 else out.ndim - 1
    return (out.detach() != 0).movedim(dim, -1).reshape(-1, out.shape[dim]).any(dim=0)


def gradient_norms(model: torch.nn.Module) -> dict[str, float]:
    """``{grad_norm/<name>: ||grad||}`` for each matrix (``ndim >= 2``, as the update
    ratios) that has a gradient, in one transfer from the device. Biases and norm
    layers' gains are left out: their gradients are small by nature, and a layer's
    matrix says what reaches it."""
    names, norms = [], []
    for name, p in _unwrapped(model).named_parameters():
        if p.grad is not None and p.ndim >= 2:
            names.append(f"{GRAD_NORM_PREFIX}{name}")
            norms.append(torch.linalg.vector_norm(p.grad.detach().float()))
    values = torch.stack(norms).tolist() if norms else []
    return dict(zip(names, values, strict=True))


class LayerProbe:
    """The per-layer signals of one update: open it (``with``) around ``train_step``
    and pass ``probe.after_backward`` as the step's ``after_backward``; then
    ``scalars()`` holds them by tag.

    While open, a forward hook on each ReLU module counts its exactly-zero outputs
    and the units that were not always 0, over the update's micro-batches. One ReLU
    object applied k times in a forward pass (one module shared by every layer) gets
    an entry per call, ``<name>.<i>``; a pass begins whenever a module is entered
    from outside every module (the model, or the submodule ``loss_fn`` calls).
    ``after_backward`` runs the caller's own first (the gradients averaged over
    ranks), then reads the gradient norms: complete there, and not yet clipped."""

    def __init__(self, model: torch.nn.Module,
                 then: Callable[[torch.nn.Module], None] | None = None) -> None:
        self.model, self.then = _unwrapped(model), then
        self.grad_norms: dict[str, float] = {}
        # (name, call) -> [zeros, outputs, alive units]; tensors: no transfer until read
        self.counts: dict[tuple[str, int], list] = {}
        self._calls: dict[str, int] = {}
        self._depth = 0
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def __enter__(self) -> LayerProbe:
        for name, module in self.model.named_modules():
            self._handles.append(module.register_forward_pre_hook(self._enter))
            self._handles.append(module.register_forward_hook(self._leave, always_call=True))
            if isinstance(module, ZERO_ACTIVATIONS):
                self._handles.append(module.register_forward_hook(self._counter(name)))
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _enter(self, module: torch.nn.Module, args: object) -> None:
        if self._depth == 0:  # a new forward pass
            self._calls.clear()
        self._depth += 1

    def _leave(self, module: torch.nn.Module, args: object, out: object) -> None:
        self._depth = max(self._depth - 1, 0)

    def _counter(self, name: str) -> Callable[..., None]:
        def count(module: torch.nn.Module, args: object, out: torch.Tensor) -> None:
            call = self._calls.get(name, 0)
            self._calls[name] = call + 1
            zeros, total, alive = self.counts.get((name, call), (0, 0, False))
            self.counts[(name, call)] = [zeros + (out.detach() == 0).sum(), total + out.numel(),
                                         unit_alive(out) | alive]
        return count

    def after_backward(self, model: torch.nn.Module) -> None:
        if self.then is not None:
            self.then(model)
        self.grad_norms = gradient_norms(model)

    def _tag(self, prefix: str, name: str, call: int, repeated: set[str]) -> str:
        return f"{prefix}{name}.{call}" if name in repeated else f"{prefix}{name}"

    def activation_shares(self) -> dict[str, float]:
        """``{zero_share/<name>: share of outputs exactly 0, dead_share/<name>: share
        of units 0 for every input}`` (``<name>.<i>`` for a module called more than
        once per forward pass)."""
        repeated = {name for name, call in self.counts if call > 0}
        shares = {}
        for (name, call), (zeros, total, alive) in self.counts.items():
            shares[self._tag(ZERO_SHARE_PREFIX, name, call, repeated)] = float(zeros) / total
            shares[self._tag(DEAD_SHARE_PREFIX, name, call, repeated)] = 1.0 - float(alive.float().mean())
        return shares

    def scalars(self) -> dict[str, float]:
        return {**self.grad_norms, **self.activation_shares()}
