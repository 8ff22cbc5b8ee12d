"""Answers to lab 9's exercise 4, ``all_reduce_gradients(model)``: run in real gloo ranks by the checker (see
``utils.checks.ranks``), each answer a module-level function the ranks import by name."""

from __future__ import annotations

import torch
import torch.distributed as dist

from tests.checker_cases import Cases, Wrong

# ---------------------------------------------------------------- lab09.all_reduce_gradients: right


def all_reduce_then_divide(model):
    world_size = dist.get_world_size()
    for parameter in model.parameters():
        if parameter.grad is not None:
            dist.all_reduce(parameter.grad)
            parameter.grad /= world_size


def all_reduce_then_scale(model):
    for parameter in model.parameters():
        dist.all_reduce(parameter.grad, op=dist.ReduceOp.SUM)
        parameter.grad.mul_(1 / dist.get_world_size())


def one_flat_tensor(model):
    grads = [p.grad for p in model.parameters()]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    start = 0
    for g in grads:
        g.copy_(flat[start:start + g.numel()].view_as(g))
        start += g.numel()


def asynchronous_then_wait(model):
    params = [p for p in model.parameters() if p.grad is not None]
    works = [dist.all_reduce(p.grad, async_op=True) for p in params]
    for work in works:
        work.wait()
    for p in params:
        p.grad = p.grad / dist.get_world_size()


def divide_first_then_sum(model):
    for p in model.parameters():
        p.grad /= dist.get_world_size()
        dist.all_reduce(p.grad)


def with_reduce_op_avg(model):
    """ReduceOp.AVG: gloo has it in the pinned torch (older versions refused it)."""
    for p in model.parameters():
        dist.all_reduce(p.grad, op=dist.ReduceOp.AVG)


# ---------------------------------------------------------------- lab09.all_reduce_gradients: wrong


def sums_only(model):
    for p in model.parameters():
        dist.all_reduce(p.grad)


def divides_by_two(model):
    for p in model.parameters():
        dist.all_reduce(p.grad)
        p.grad /= 2


def average_then_divide(model):
    for p in model.parameters():
        dist.all_reduce(p.grad, op=dist.ReduceOp.AVG)
        p.grad /= dist.get_world_size()


def no_collective(model):
    for p in model.parameters():
        p.grad = p.grad / dist.get_world_size() * dist.get_world_size()


def reduces_a_copy(model):
    for p in model.parameters():
        grad = p.grad.clone()
        dist.all_reduce(grad)
        grad /= dist.get_world_size()


def returns_the_mean(model):
    """Exercise 2's shape: returns {name: mean} and leaves .grad as it was."""
    out = {}
    for name, p in model.named_parameters():
        grad = p.grad.clone()
        dist.all_reduce(grad)
        out[name] = grad / dist.get_world_size()
    return out


def averages_the_weights(model):
    for p in model.parameters():
        dist.all_reduce(p.data)
        p.data /= dist.get_world_size()


def returns_inside_the_loop(model):
    for p in model.parameters():
        dist.all_reduce(p.grad)
        p.grad /= dist.get_world_size()
        return


def matrices_only(model):
    for p in model.parameters():
        if p.dim() == 2:
            dist.all_reduce(p.grad)
            p.grad /= dist.get_world_size()


def broadcasts_rank_zero(model):
    for p in model.parameters():
        dist.broadcast(p.grad, src=0)


def reduces_to_rank_zero(model):
    for p in model.parameters():
        dist.reduce(p.grad, dst=0)
        p.grad /= dist.get_world_size()


def steps_as_well(model):
    """Averages right, then updates the weights: the optimizer's job."""
    all_reduce_then_divide(model)
    with torch.no_grad():
        for p in model.parameters():
            p -= 0.1 * p.grad


def only_rank_zero_reduces(model):
    """A collective inside `if rank == 0`: rank 0 waits for ranks that have returned."""
    if dist.get_rank() == 0:
        all_reduce_then_divide(model)


def waits_for_its_neighbour(model):
    """Every rank receives from the next before sending: a deadlock, until the collective timeout."""
    rank, world_size = dist.get_rank(), dist.get_world_size()
    for p in model.parameters():
        incoming = torch.empty_like(p.grad)
        dist.recv(incoming, src=(rank + 1) % world_size)
        dist.send(p.grad, dst=(rank - 1) % world_size)


def starts_its_own_group(model):
    dist.init_process_group("gloo")
    all_reduce_then_divide(model)


def avg_on_an_older_gloo(model):
    """What ReduceOp.AVG raised on gloo before the pinned torch (2.7, for one): the error as it read."""
    raise RuntimeError("Cannot use ReduceOp.AVG with Gloo")


def leaves_no_gradient(model):
    for p in model.parameters():
        p.grad = None


def divides_by_local_world_size(model):
    import os

    for p in model.parameters():
        dist.all_reduce(p.grad)
        p.grad /= int(os.environ["LOCAL_WORLD_SIZE"])


def reverses_the_order_on_rank_one(model):
    params = list(model.parameters())
    for p in params if dist.get_rank() == 0 else params[::-1]:
        dist.all_reduce(p.grad)
        p.grad /= dist.get_world_size()


def stub(model):
    raise NotImplementedError("average every gradient over the ranks")


CASES = {
    "lab09.all_reduce_gradients": Cases(
        correct=[all_reduce_then_divide, all_reduce_then_scale, one_flat_tensor, asynchronous_then_wait,
                 divide_first_then_sum, with_reduce_op_avg],
        wrong=[
            Wrong(sums_only, "W times the whole batch's"),
            Wrong(divides_by_two, "a hard-coded 2"),
            Wrong(average_then_divide, "divided by the world size twice"),
            Wrong(no_collective, "no collective changed .grad"),
            Wrong(reduces_a_copy, "no collective changed .grad"),
            Wrong(returns_the_mean, "it returned a dict"),
            Wrong(averages_the_weights, "all-reduced the weights"),
            Wrong(returns_inside_the_loop, "only 1 of the model's 16 parameters hold the mean"),
            Wrong(matrices_only, "parameters hold the mean"),
            Wrong(broadcasts_rank_zero, "rank 0's own gradient"),
            Wrong(reduces_to_rank_zero, "only rank 0 holds the mean"),
            Wrong(steps_as_well, "it changed the weights"),
            Wrong(only_rank_zero_reduces, "was left waiting in a collective"),
            Wrong(waits_for_its_neighbour, "was still waiting"),
            Wrong(starts_its_own_group, "calls init_process_group"),
            Wrong(avg_on_an_older_gloo, "has no ReduceOp.AVG"),
            Wrong(leaves_no_gradient, "no gradient (.grad is None)"),
            Wrong(divides_by_local_world_size, "the ranks of one machine (LOCAL_WORLD_SIZE)"),
            Wrong(reverses_the_order_on_rank_one, "visit the parameters in the same order"),
            Wrong(stub, "not implemented yet"),
        ],
    ),
}
