"""What DDP sends (``utils.comm``), launched on 2 gloo ranks as chapter 9 launches it: every gradient byte
once per update, in one first bucket, then in buckets rebuilt in the order the backward pass completes
them, launched while the backward pass runs; ``no_sync`` under gradient accumulation sends each bucket once
per update instead of once per micro-batch, and leaves the same weights. The ring all-reduce's bytes per
rank; the all-reduce timing mode. ``loop.accumulate_gradients`` enters ``no_sync`` for every micro-batch but
the last."""

from __future__ import annotations

import contextlib
import json

import pytest
import torch

from utils import comm, loop, torchrun
from utils.distributed import DistConfig
from utils.evaluation import classification_loss
from utils.gpt import GPT


@pytest.fixture(scope="module")
def sent(tmp_path_factory):
    out = tmp_path_factory.mktemp("comm") / "comm.json"
    torchrun.launch_module(2, "utils.comm", ["--out", str(out)])
    return json.loads(out.read_text())


def gradient_bytes() -> int:
    return 4 * sum(p.numel() for p in GPT(DistConfig().model).parameters())


def test_ring_all_reduce_sends_two_n_minus_one_over_n_of_the_bytes():
    assert [comm.ring_bytes_per_rank(120, n) for n in (1, 2, 3, 4, 8)] == [0, 120, 160, 180, 210]


@pytest.mark.slow
def test_every_update_sends_every_gradient_byte_once_in_rebuilt_buckets(sent):
    assert sent["world_size"] == 2
    for updates in (sent["buckets_default"], sent["buckets"]):
        for calls in updates:
            assert sum(call["bytes"] for call in calls) == gradient_bytes()
            names = [name for call in calls for name in call["parameters"]]
            assert len(names) == len(set(names)) == len(list(GPT(DistConfig().model).parameters()))
    assert [len(calls) for calls in sent["buckets_default"]] == [1, 1]  # 0.4 MB < the first 1 MB
    first, rebuilt = sent["buckets"]
    assert len(first) == 1 and len(rebuilt) >= 3  # 0.1 MB caps, after DDP rebuilt them
    assert "transformer.ln_f.weight" in rebuilt[0]["parameters"]  # from the loss back to the input
    assert "transformer.wte.weight" in rebuilt[-1]["parameters"]


@pytest.mark.slow
def test_buckets_are_launched_while_the_backward_pass_runs(sent):
    timeline = sent["overlap"]
    launched = timeline["launched_us"]
    assert len(launched) == len(sent["buckets"][1]) == len(timeline["done_us"])
    assert sum(t < timeline["backward_us"] for t in launched) >= len(launched) - 1
    assert launched[0] < timeline["backward_us"] / 2 < timeline["done_us"][-1]


@pytest.mark.slow
def test_no_sync_all_reduces_once_per_update_and_changes_no_weight(sent):
    counts, buckets = sent["no_sync"], len(sent["buckets"][1])
    assert counts["with_no_sync"] == buckets
    assert counts["without"] == counts["micro_batches"] * buckets
    assert counts["weight_gap"] < 1e-5


@pytest.mark.slow
def test_the_timing_mode_times_each_size(tmp_path):
    out = tmp_path / "seconds.json"
    torchrun.launch_module(2, "utils.comm", ["--bandwidth", "--sizes", "16,4096", "--out", str(out)])
    seconds = json.loads(out.read_text())["seconds"]
    assert set(seconds) == {"16", "4096"} and all(s > 0 for s in seconds.values())


def test_accumulation_enters_no_sync_for_every_micro_batch_but_the_last():
    entered = []

    @contextlib.contextmanager
    def no_sync():
        entered.append(len(calls))
        yield

    calls = []

    def loss_fn(model, batch):
        calls.append(batch)
        return classification_loss(model, batch)

    model = torch.nn.Linear(3, 2)
    batches = [(torch.randn(4, 3), torch.randint(2, (4,))) for _ in range(3)]
    loop.accumulate_gradients(model, loss_fn, batches, no_sync=no_sync)
    assert entered == [0, 1]  # before micro-batches 0 and 1; the last one syncs
