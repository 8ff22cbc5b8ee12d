"""Data parallelism with torch.distributed (``utils.distributed``), launched as torchrun launches it
(``utils.torchrun``), on gloo and 127.0.0.1: two ranks with half the batch each end with the weights of one
process with the whole batch (DDP, the all-reduce written by hand, and FSDP); only rank 0 logs, and it logs
the mean over ranks; a run SIGKILLed between checkpoints resumes with each step logged exactly once and the
losses of an uninterrupted run. The settings compose GPTConfig and TrainConfig and round-trip through the
command line; a GPU run all-reduces its logged loss on a CPU backend."""

from __future__ import annotations

import dataclasses
import json
import signal

import pytest
import torch
import torch.distributed as dist

from utils import checkpoint as ckpt
from utils import distributed, tb, torchrun
from utils.gpt import GPT, GPTConfig
from utils.optim import make_adamw

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
            weights_out=str(folder / "reference.pt")).with_training(max_steps=STEPS))
    finally:
        torch.set_num_threads(threads)
    return summary, torch.load(folder / "reference.pt", weights_only=True)


def launched(folder, mode: str, name: str = "", steps: int = STEPS, **changes):
    name = name or mode
    config = distributed.DistConfig(mode=mode, weights_out=str(folder / f"{name}.pt"),
                                    summary_out=str(folder / f"{name}.json"), **changes)
    torchrun.launch(2, config.with_training(max_steps=steps))
    return (json.loads((folder / f"{name}.json").read_text()),
            torch.load(folder / f"{name}.pt", weights_only=True))


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
    config = distributed.DistConfig(mode="by-hand", log_run="a/b", rank_seeds=True,
                                    model=GPTConfig(65, 16, 1, 2, 32))
    config = dataclasses.replace(config.with_training(max_steps=7, lr=0.5, checkpoint_dir="c",
                                                      grad_accum_steps=3), resume=True)
    parsed, backend = torchrun.parse_arguments(torchrun.config_arguments(config))
    assert parsed == config and backend == "gloo"
    command = torchrun.launch_command(2, config)
    assert command[command.index("--rdzv-endpoint") + 1] == "127.0.0.1:0"  # torchrun picks the port
    assert command[command.index("--local-addr") + 1] == "127.0.0.1" and "--master_port" not in command
    with pytest.raises(ValueError, match="no flag for training.log_every"):
        torchrun.config_arguments(config.with_training(log_every=5))
    sharded = distributed.DistConfig(mode="fsdp", sharded_out="s")
    assert torchrun.parse_arguments(torchrun.config_arguments(sharded))[0] == sharded


def test_settings_compose_the_model_and_the_loop():
    config = distributed.DistConfig()
    assert config.training.max_steps == 20 and config.model.n_layer == 2
    assert (config.training.lr, config.training.min_lr, config.training.warmup_steps) == (3e-3, 3e-4, 2)
    assert torchrun.from_flags({"steps": 5, "n_layer": 1}) == distributed.DistConfig(
        model=GPTConfig(65, 32, 1, 2, 64)).with_training(max_steps=5)


def test_bad_settings_say_what_to_do():
    with pytest.raises(ValueError, match="mode='zero' is not allowed: choose one of 'ddp'"):
        distributed.DistConfig(mode="zero")
    with pytest.raises(ValueError, match="sharded ones"):
        distributed.DistConfig(mode="fsdp").with_training(checkpoint_every=2, checkpoint_dir="x")
    with pytest.raises(ValueError, match="sharded_out saves the shards of an FSDP run: use mode='fsdp'"):
        distributed.DistConfig(mode="ddp", sharded_out="s")
    with pytest.raises(ValueError, match="resume needs checkpoint_dir"):
        distributed.DistConfig(resume=True)
    with pytest.raises(ValueError, match="device='mps' is not allowed"):
        distributed.DistConfig().with_training(device="mps")
    with pytest.raises(ValueError, match="takes model=GPTConfig"):
        distributed.DistConfig(model={"n_layer": 2})
    message = "warmup_steps=30 is more than max_steps=10: lower warmup_steps or raise max_steps; lr=0"
    assert torchrun.in_flag_words(message) == ("--warmup-steps 30 is more than --steps 10: lower "
                                               "--warmup-steps or raise --steps; --lr 0")


@pytest.mark.parametrize("backend, works", [("cpu:gloo,cuda:gloo", True), ("cuda:gloo", False)])
def test_a_gpu_run_all_reduces_its_logged_loss_on_a_cpu_backend(backend, works):
    """``--device cuda`` once started nccl alone, which has no CPU backend: the loss all-reduced for the log
    (a CPU tensor) failed at step 0. A CPU torch has no nccl: gloo stands in for it, for CUDA tensors only
    (``cuda:gloo``), which reproduces the failure; ``backend_for`` adds gloo for the CPU ones."""
    assert distributed.backend_for("cuda") == "cpu:gloo,cuda:nccl"
    assert distributed.backend_for("cpu") == "gloo"
    dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)
    try:
        if works:
            assert distributed.mean_over_ranks(2.5) == 2.5
        else:
            with pytest.raises(RuntimeError, match="No backend type associated with device type cpu"):
                distributed.mean_over_ranks(2.5)
    finally:
        dist.destroy_process_group()


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
def test_only_ddp_broadcasts_rank_0s_weights_when_each_rank_seeds_its_own(reference, tmp_path):
    """``rank_seeds``: rank r builds its model from seed + r (rank 0's from the one-process run's seed).
    DDP's constructor broadcasts rank 0's weights, so it still ends where one process ends; the by-hand
    mode averages the gradients but applies them to weights that differ, and never agrees."""
    gaps = {}
    for mode in ("ddp", "by-hand"):
        config = distributed.DistConfig(mode=mode, rank_seeds=True, weights_out=str(tmp_path / f"{mode}.pt"),
                                        summary_out=str(tmp_path / f"{mode}.json"))
        torchrun.launch(2, config.with_training(max_steps=STEPS))
        summary = json.loads((tmp_path / f"{mode}.json").read_text())
        gaps[mode] = largest_difference(torch.load(tmp_path / f"{mode}.pt", weights_only=True), reference[1])
        own = summary["own_losses_per_rank"]  # each rank's loss of its own rows, at every step
        assert [sorted(o, key=int) for o in own] == [[str(s) for s in range(STEPS)]] * 2
    assert gaps["ddp"] < TOLERANCE and gaps["by-hand"] > 100 * TOLERANCE  # chapter 9, 12 steps: 4e-6, 4e-2


@pytest.mark.slow
def test_fsdp_shards_parameters_and_optimizer_state_and_trains_the_same(reference, folder):
    summary, weights = launched(folder, "fsdp", sharded_out=str(folder / "sharded"))
    total = reference[0]["parameters"]
    assert sum(summary["parameters_per_rank"]) == total  # every value held once, across the ranks
    assert max(summary["parameters_per_rank"]) < 0.51 * total
    assert sum(summary["optimizer_values_per_rank"]) == 2 * total  # AdamW's two moments, sharded too
    assert largest_difference(weights, reference[1]) < TOLERANCE
    # its sharded checkpoint: one file per rank, loaded whole into one process
    assert sorted(p.name for p in (folder / "sharded").iterdir()) == [".metadata", "__0_0.distcp",
                                                                       "__1_0.distcp"]
    torch.manual_seed(123)
    model = GPT(distributed.DistConfig().model)
    optimizer = make_adamw(model, 1e-3)
    ckpt.load_sharded(model, optimizer, folder / "sharded")
    assert largest_difference(model.state_dict(), weights) == 0
    moments = [optimizer.state[p] for p in model.parameters()]
    assert {int(m["step"]) for m in moments} == {STEPS}
    assert sum(m["exp_avg"].numel() + m["exp_avg_sq"].numel() for m in moments) == 2 * total


def test_a_folder_without_a_sharded_index_is_refused_with_what_to_do(tmp_path):
    (tmp_path / "__0_0.distcp").write_bytes(b"half a checkpoint")
    model = GPT(distributed.DistConfig().model)
    with pytest.raises(ckpt.CheckpointNotFoundError, match="no .metadata, which torch.distributed"):
        ckpt.load_sharded(model, make_adamw(model, 1e-3), tmp_path)


@pytest.mark.slow
def test_ddp_with_accumulation_equals_one_process_accumulating(folder):
    accumulating = distributed.DistConfig(weights_out=str(folder / "accumulating.pt")).with_training(
        max_steps=3, grad_accum_steps=2)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        one = distributed.train_distributed(accumulating)
    finally:
        torch.set_num_threads(threads)
    one_weights = torch.load(folder / "accumulating.pt", weights_only=True)
    summary, weights = launched(folder, "ddp", "ddp-accumulating", steps=3, training=accumulating.training)
    assert largest_difference(weights, one_weights) < TOLERANCE
    assert max(abs(summary["losses"][s] - v) for s, v in one["losses"].items()) < TOLERANCE


KILL_AT, CHECKPOINT_EVERY, RESUME_STEPS = 9, 4, 12


@pytest.mark.slow
def test_sigkill_under_ddp_then_resume_logs_each_step_once(tmp_path, monkeypatch):
    monkeypatch.setenv("BOOK_RUNS_DIR", str(tmp_path / "runs"))
    config = distributed.DistConfig(log_run="t/resumed", flush_every_step=True).with_training(
        max_steps=RESUME_STEPS, checkpoint_every=CHECKPOINT_EVERY, checkpoint_dir=str(tmp_path / "ckpt"))
    killed = torchrun.kill_at_step(2, config, KILL_AT)  # once rank 0 is past a checkpoint: every process
    assert killed.returncode == -signal.SIGKILL, killed.stdout
    # checkpoints after steps 0, 4, 8 (hooks.due) record the next step: 1, 5, 9
    resumed_at = (KILL_AT - 1) // CHECKPOINT_EVERY * CHECKPOINT_EVERY + 1
    assert ckpt.latest_checkpoint(tmp_path / "ckpt") == ckpt.step_path(tmp_path / "ckpt", resumed_at)
    run = tmp_path / "runs" / "t" / "resumed"
    before = tb.read_scalars(run, ["train/loss"]).set_index("step").value
    assert before.index.max() >= resumed_at, "the kill should leave a step logged after the checkpoint"

    config.resume, config.summary_out = True, str(tmp_path / "resumed.json")
    torchrun.launch(2, config)
    summary = json.loads((tmp_path / "resumed.json").read_text())
    assert summary["start_step"] == resumed_at
    loss = tb.assert_logged(run, {"train/loss": list(range(RESUME_STEPS)),
                                  "train/lr": list(range(RESUME_STEPS))})
    loss = loss[loss.tag == "train/loss"].set_index("step").value
    kept = before[before.index < resumed_at]
    assert (loss[kept.index] == kept).all()  # the first segment's points before the checkpoint stay
    uninterrupted = distributed.train_distributed(
        distributed.DistConfig().with_training(max_steps=RESUME_STEPS))["losses"]
    assert loss.to_numpy() == pytest.approx([uninterrupted[str(s)] for s in range(RESUME_STEPS)], abs=TOLERANCE)


@pytest.mark.slow
def test_a_launch_that_ends_before_the_kill_step_raises_with_its_output(tmp_path):
    config = distributed.DistConfig(global_batch=2, model=GPTConfig(65, 8, 1, 1, 8)).with_training(
        max_steps=2, warmup_steps=0)
    ended = r"(?s)ended \(exit status 0\) before rank 0 reported step 5:.*step 1 done"
    with pytest.raises(RuntimeError, match=ended):
        torchrun.kill_at_step(1, config, 5)


def test_the_two_machine_command_is_the_one_machine_command_with_two_settings_changed():
    config = distributed.DistConfig(mode="ddp")
    two = torchrun.launch_command(8, config, nnodes=2, rdzv_endpoint="node0.cluster:29500")
    one = torchrun.launch_command(8, config)
    assert two[two.index("--nnodes") + 1] == "2" and one[one.index("--nnodes") + 1] == "1"
    assert two[two.index("--rdzv-endpoint") + 1] == "node0.cluster:29500" and "--local-addr" not in two
    local = one.index("--local-addr")
    assert one[local + 1] == "127.0.0.1"
    del one[local:local + 2]  # on one machine only: the agent's own address
    differs = {two[i - 1] for i, (a, b) in enumerate(zip(two, one, strict=True)) if a != b}
    assert differs <= {"--nnodes", "--rdzv-endpoint"}, differs
    assert set(torchrun.CLUSTER_ENVIRONMENT) >= {"MASTER_ADDR, MASTER_PORT", "NCCL_SOCKET_IFNAME",
                                                 "GLOO_SOCKET_IFNAME", "NCCL_DEBUG", "TORCH_DISTRIBUTED_DEBUG",
                                                 "TORCH_NCCL_ASYNC_ERROR_HANDLING"}


@pytest.mark.slow
def test_the_printed_two_machine_command_runs_on_one_machine_with_nnodes_1(tmp_path, monkeypatch):
    """What a reader can try before a cluster: the chapter's two-machine command with --nnodes 1 and the
    rendezvous on 127.0.0.1 runs 2 gloo ranks here."""
    import subprocess

    monkeypatch.setenv("BOOK_RUNS_DIR", str(tmp_path / "runs"))
    config = distributed.DistConfig(mode="ddp", summary_out=str(tmp_path / "summary.json")).with_training(
        max_steps=2)
    command = torchrun.launch_command(2, config, nnodes=2, rdzv_endpoint="node0.cluster:29500")
    command[command.index("--nnodes") + 1] = "1"
    endpoint = command.index("--rdzv-endpoint") + 1
    command[endpoint:endpoint + 1] = [torchrun.LOCAL_ENDPOINT, "--local-addr", "127.0.0.1"]
    done = subprocess.run(command, env=torchrun.launch_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, (done.stdout + done.stderr)[-2000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["mode"] == "ddp" and len(summary["pid_per_rank"]) == 2
