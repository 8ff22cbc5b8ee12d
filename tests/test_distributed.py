"""Data parallelism with torch.distributed (``utils.distributed``), launched as torchrun launches it, on gloo
and 127.0.0.1: two ranks with half the batch each end with the weights of one process with the whole batch
(DDP, the all-reduce written by hand, and FSDP); only rank 0 logs, and it logs the mean over ranks; a run
SIGKILLed between checkpoints resumes with each step logged exactly once and the losses of an uninterrupted
run."""

from __future__ import annotations

import json
import signal
import subprocess

import pytest
import torch

from utils import checkpoint as ckpt
from utils import distributed, tb

STEPS = 6
TOLERANCE = 1e-4  # largest weight difference accepted: float rounding of a sum done in two halves


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("distributed")


@pytest.fixture(scope="module")
def reference(folder):
    """One process, the whole batch, no process group."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        summary = distributed.train_distributed(distributed.DistConfig(
            steps=STEPS, weights_out=str(folder / "reference.pt")))
    finally:
        torch.set_num_threads(threads)
    return summary, torch.load(folder / "reference.pt", weights_only=True)


def launched(folder, mode: str, **changes):
    config = distributed.DistConfig(steps=STEPS, mode=mode, weights_out=str(folder / f"{mode}.pt"),
                                    summary_out=str(folder / f"{mode}.json"), **changes)
    distributed.launch(2, config)
    return (json.loads((folder / f"{mode}.json").read_text()),
            torch.load(folder / f"{mode}.pt", weights_only=True))


def largest_difference(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[name] - b[name]).abs().max().item() for name in a)


@pytest.fixture(scope="module")
def by_hand(folder, monkeypatch_module):
    monkeypatch_module.setenv("BOOK_RUNS_DIR", str(folder / "runs"))
    return launched(folder, "by-hand", log_run="t/rank0", every_rank_run="t/every")


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


# --------------------------------------------------------------------------------------------- no launch


def test_shards_are_disjoint_equal_and_cover_the_batch():
    batch = (torch.arange(12).view(6, 2), torch.arange(6))
    shards = [distributed.shard_rows(batch, rank, 3) for rank in range(3)]
    assert [s[1].tolist() for s in shards] == [[0, 1], [2, 3], [4, 5]]
    assert torch.equal(torch.cat([s[0] for s in shards]), batch[0])
    with pytest.raises(ValueError, match="multiple of the number of processes"):
        distributed.shard_rows(batch, 0, 4)


def test_command_line_round_trips_the_config():
    config = distributed.DistConfig(steps=7, mode="by-hand", log_run="a/b", resume=True, checkpoint_dir="c",
                                    lr=0.5)
    parsed, backend = distributed._arguments(distributed.config_arguments(config))
    assert parsed == config and backend == "gloo"
    command = distributed.launch_command(2, config, port=1234)
    assert command[command.index("--master_addr") + 1] == "127.0.0.1" and "--master_port" in command


def test_bad_settings_say_what_to_do():
    with pytest.raises(ValueError, match="mode='zero' is not allowed: choose one of 'ddp'"):
        distributed.DistConfig(mode="zero")
    with pytest.raises(ValueError, match="sharded ones"):
        distributed.DistConfig(mode="fsdp", checkpoint_every=2, checkpoint_dir="x")
    with pytest.raises(ValueError, match="--checkpoint-dir"):
        distributed.DistConfig(checkpoint_every=2)
    with pytest.raises(ValueError, match="n_head=3 is not allowed with n_embd=64"):
        distributed.DistConfig(n_head=3)


def test_one_process_needs_no_process_group():
    model = torch.nn.Linear(2, 1)
    model(torch.ones(1, 2)).sum().backward()
    before = model.weight.grad.clone()
    distributed.average_gradients(model)
    assert torch.equal(model.weight.grad, before) and distributed.mean_over_ranks(2.5) == 2.5


# --------------------------------------------------------------------------------------------- launched


@pytest.mark.slow
def test_two_ranks_by_hand_equal_one_process_with_the_whole_batch(reference, by_hand):
    (ref_summary, ref_weights), (summary, weights) = reference, by_hand
    assert summary["world_size"] == 2 and summary["parameters_per_rank"] == [ref_summary["parameters"]] * 2
    assert largest_difference(weights, ref_weights) < TOLERANCE
    assert summary["losses"] == pytest.approx(ref_summary["losses"], abs=TOLERANCE)


@pytest.mark.slow
def test_only_rank_0_logs_and_logs_the_mean_over_ranks(by_hand, folder):
    logged = tb.assert_logged(folder / "runs" / "t" / "rank0", {"train/loss": list(range(STEPS))})
    every = tb.read_scalars(folder / "runs" / "t" / "every", ["train/loss"])
    assert every.groupby("step").size().tolist() == [2] * STEPS  # two writers: two points per step
    means = every.groupby("step").value.mean()
    assert logged.set_index("step").value.to_numpy() == pytest.approx(means.to_numpy(), abs=1e-6)
    assert (every.groupby("step").value.nunique() == 2).all()  # each rank saw other rows


@pytest.mark.slow
def test_ddp_equals_one_process_with_the_whole_batch(reference, folder):
    summary, weights = launched(folder, "ddp")
    assert largest_difference(weights, reference[1]) < TOLERANCE


@pytest.mark.slow
def test_fsdp_shards_parameters_and_optimizer_state_and_trains_the_same(reference, folder):
    summary, weights = launched(folder, "fsdp")
    total = reference[0]["parameters"]
    assert sum(summary["parameters_per_rank"]) == total  # every value held once, across the ranks
    assert max(summary["parameters_per_rank"]) < 0.51 * total
    assert sum(summary["optimizer_values_per_rank"]) == 2 * total  # AdamW's two moments, sharded too
    assert largest_difference(weights, reference[1]) < TOLERANCE


KILL_AT, CHECKPOINT_EVERY, RESUME_STEPS = 9, 4, 12


@pytest.mark.slow
def test_sigkill_under_ddp_then_resume_logs_each_step_once(tmp_path, monkeypatch):
    monkeypatch.setenv("BOOK_RUNS_DIR", str(tmp_path / "runs"))
    config = distributed.DistConfig(steps=RESUME_STEPS, log_run="t/resumed", checkpoint_every=CHECKPOINT_EVERY,
                                    checkpoint_dir=str(tmp_path / "ckpt"), flush_every_step=True)
    process = subprocess.Popen(distributed.launch_command(2, config), env=distributed.launch_env(),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = []
    for line in process.stdout:  # wait until rank 0 is past a checkpoint, then kill every process at once
        output.append(line)
        if line.startswith(f"step {KILL_AT} "):
            distributed.kill_launch(process)
            break
    assert process.returncode == -signal.SIGKILL, "".join(output)
    # checkpoints after steps 0, 4, 8 (hooks.due) record the next step: 1, 5, 9
    resumed_at = (KILL_AT - 1) // CHECKPOINT_EVERY * CHECKPOINT_EVERY + 1
    assert ckpt.latest_checkpoint(tmp_path / "ckpt") == ckpt.step_path(tmp_path / "ckpt", resumed_at)
    run = tmp_path / "runs" / "t" / "resumed"
    before = tb.read_scalars(run, ["train/loss"]).set_index("step").value
    assert before.index.max() >= resumed_at, "the kill should leave a step logged after the checkpoint"

    config.resume, config.summary_out = True, str(tmp_path / "resumed.json")
    distributed.launch(2, config)
    summary = json.loads((tmp_path / "resumed.json").read_text())
    assert summary["start_step"] == resumed_at
    loss = tb.assert_logged(run, {"train/loss": list(range(RESUME_STEPS)),
                                  "train/lr": list(range(RESUME_STEPS))})
    loss = loss[loss.tag == "train/loss"].set_index("step").value
    kept = before[before.index < resumed_at]
    assert (loss[kept.index] == kept).all()  # the first segment's points before the checkpoint stay
    uninterrupted = distributed.train_distributed(distributed.DistConfig(steps=RESUME_STEPS))["losses"]
    assert loss.to_numpy() == pytest.approx([uninterrupted[str(s)] for s in range(RESUME_STEPS)], abs=TOLERANCE)
