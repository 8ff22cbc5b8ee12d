"""utils.checkpoint: atomic saves, weights_only loads, RNG state, and clear errors."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from utils import checkpoint as ckpt


def _model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))


def _train_a_bit(model, optimizer, scheduler, steps=3):
    for _ in range(steps):
        loss = model(torch.randn(5, 4)).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()


def test_round_trip_restores_everything(tmp_path):
    model = _model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1 / (1 + s))
    _train_a_bit(model, optimizer, scheduler)
    path = ckpt.save_checkpoint(tmp_path / "c.pt", model=model, optimizer=optimizer, scheduler=scheduler, step=3,
                                extra={"note": "hello", "config": {"lr": 1e-2}})
    expected = (random.random(), float(np.random.rand()), torch.rand(3))  # draws right after the save

    other = _model(seed=1)
    other_opt = torch.optim.AdamW(other.parameters(), lr=1e-2)
    other_sched = torch.optim.lr_scheduler.LambdaLR(other_opt, lambda s: 1 / (1 + s))
    state = ckpt.load_checkpoint(path, model=other, optimizer=other_opt, scheduler=other_sched)
    assert state["step"] == 3 and state["extra"] == {"note": "hello", "config": {"lr": 1e-2}}
    for a, b in zip(model.state_dict().values(), other.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)
    assert other_sched.last_epoch == scheduler.last_epoch
    assert other_opt.param_groups[0]["lr"] == pytest.approx(optimizer.param_groups[0]["lr"])
    assert (random.random(), float(np.random.rand())) == expected[:2]  # Python and NumPy generators restored
    torch.testing.assert_close(torch.rand(3), expected[2])  # torch's too
    # the continued training is identical
    torch.manual_seed(5)
    _train_a_bit(model, optimizer, scheduler)
    torch.manual_seed(5)
    _train_a_bit(other, other_opt, other_sched)
    for a, b in zip(model.parameters(), other.parameters(), strict=True):
        torch.testing.assert_close(a, b)


def test_loads_with_weights_only(tmp_path):
    model = _model()
    path = ckpt.save_checkpoint(tmp_path / "c.pt", model=model, step=1)
    state = torch.load(path, weights_only=True)  # raises if anything but plain data was pickled
    assert state["step"] == 1 and "rng" in state


def test_missing_file_error_names_the_path(tmp_path):
    ckpt.save_checkpoint(tmp_path / "step_000010.pt", model=_model(), step=10)
    with pytest.raises(ckpt.CheckpointNotFoundError) as info:
        ckpt.load_checkpoint(tmp_path / "step_000020.pt")
    message = str(info.value)
    assert str(tmp_path / "step_000020.pt") in message and "step_000010.pt" in message
    assert isinstance(info.value, FileNotFoundError)


def test_corrupt_file_error_and_fallback(tmp_path):
    ckpt.save_checkpoint(ckpt.step_path(tmp_path, 10), model=_model(), step=10)
    good = ckpt.step_path(tmp_path, 10).read_bytes()
    ckpt.step_path(tmp_path, 20).write_bytes(good[: len(good) // 2])  # truncated, as by a crash mid-write
    with pytest.raises(ckpt.CheckpointCorruptError, match="truncated or not a checkpoint"):
        ckpt.load_checkpoint(ckpt.step_path(tmp_path, 20))
    with pytest.warns(UserWarning, match="cannot read checkpoint"):
        assert ckpt.latest_checkpoint(tmp_path) == ckpt.step_path(tmp_path, 10)
    torch.save({"weights": torch.zeros(1)}, tmp_path / "not_ours.pt")
    with pytest.raises(ckpt.CheckpointCorruptError, match="not a training checkpoint"):
        ckpt.read_checkpoint(tmp_path / "not_ours.pt")


def test_a_failed_save_leaves_the_previous_file_intact(tmp_path, monkeypatch):
    path = tmp_path / "model.pt"
    ckpt.save_checkpoint(path, model=_model(), step=1)
    before = path.read_bytes()

    def crash(obj, handle, *args, **kwargs):
        handle.write(b"half a checkpoint")
        raise KeyboardInterrupt("killed mid-save")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save_checkpoint(path, model=_model(seed=2), step=2)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]  # no temporary file left behind
    assert ckpt.read_checkpoint(path)["step"] == 1


def test_listing_and_pruning(tmp_path):
    for step in (5, 10, 15):
        ckpt.save_checkpoint(ckpt.step_path(tmp_path, step), model=_model(), step=step)
    (tmp_path / "step_000020.pt.tmp-123").write_bytes(b"partial")
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["step_000005.pt", "step_000010.pt",
                                                                 "step_000015.pt"]
    deleted = ckpt.prune_checkpoints(tmp_path, keep=2)
    assert [p.name for p in deleted] == ["step_000005.pt"]
    assert ckpt.latest_checkpoint(tmp_path) == ckpt.step_path(tmp_path, 15)
    assert ckpt.latest_checkpoint(tmp_path / "none") is None


# --------------------------------------------------------------------------------------------- the shipped GPT


def test_pretrained_weights_are_small_verified_and_good():
    from safetensors import safe_open

    from utils import pretrained

    model, tokenizer, info = pretrained.load_pretrained()
    assert pretrained.PRETRAINED_PATH.suffix == ".safetensors"
    assert pretrained.PRETRAINED_PATH.stat().st_size < 5e6
    assert info["sha256"] == pretrained.expected_sha256() and info["source"] == "checkpoint"
    assert info["metrics"]["val_loss"] < 1.88  # nanoGPT's CPU reference on this corpus
    assert tokenizer.vocab_size == model.config.vocab_size == 65 and not model.training
    with safe_open(str(pretrained.PRETRAINED_PATH), framework="pt") as handle:
        names = set(handle.keys())
    # weights only (no optimizer moments, which would triple the size), the tied matrix stored once
    assert names | {"transformer.wte.weight"} == set(model.state_dict())
    assert model.lm_head.weight is model.transformer.wte.weight


def test_pretrained_weights_tampered_or_missing(tmp_path):
    import shutil

    from utils import pretrained
    from utils.integrity import IntegrityError

    copy = tmp_path / "gpt.safetensors"
    shutil.copy(pretrained.PRETRAINED_PATH, copy)
    with pytest.raises(ckpt.CheckpointNotFoundError, match=r"gpt\.safetensors\.sha256 is missing"):
        pretrained.load_pretrained(copy)
    (tmp_path / "gpt.safetensors.sha256").write_text("0" * 64 + "  gpt.safetensors\n")
    with pytest.raises(IntegrityError, match="modified or truncated"):
        pretrained.load_pretrained(copy)
    with pytest.raises(ckpt.CheckpointNotFoundError, match="make pretrained"):
        pretrained.load_pretrained(tmp_path / "absent.safetensors")


class _Payload:
    """Unpickling this runs code: what a malicious checkpoint would do."""

    def __reduce__(self):
        return (exec, ("import pathlib; pathlib.Path(__import__('os').environ['PAYLOAD_FLAG']).touch()",))


def test_loading_refuses_a_checkpoint_that_would_run_code(tmp_path, monkeypatch):
    flag = tmp_path / "ran"
    monkeypatch.setenv("PAYLOAD_FLAG", str(flag))
    path = tmp_path / "evil.pt"
    torch.save({"format_version": 1, "step": 1, "model": {}, "extra": _Payload()}, path)
    with pytest.raises(ckpt.CheckpointCorruptError):
        ckpt.load_checkpoint(path, model=_model())
    with pytest.raises(ckpt.CheckpointCorruptError, match="not a checkpoint"):
        ckpt.read_checkpoint(path)
    assert not flag.exists()  # the payload never ran
