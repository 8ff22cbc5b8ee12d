"""Resume after a real crash: a training process is SIGKILLed between two checkpoints, a new process resumes
from the last checkpoint, and every reader shows each step exactly once: ``tb.read_scalars`` and the real
TensorBoard server with both of its loaders (``--load_fast=true``, Rust; ``--load_fast=false``, Python)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from utils import checkpoint as ckpt
from utils import tb

pytestmark = [pytest.mark.server, pytest.mark.slow]

STEPS, CHECKPOINT_EVERY, EVAL_EVERY, KILL_AT = 60, 10, 5, 26
RUN = "resume/run"

DRIVER = textwrap.dedent(f"""
    import sys

    import torch

    from utils import checkpoint as ckpt
    from utils.batches import epoch_batches
    from utils.evaluation import classification_loss, evaluate
    from utils.loop import TrainConfig, open_segment, train
    from utils.optim import make_adamw

    root, folder, resume = sys.argv[1], sys.argv[2], sys.argv[3] == "resume"
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(256, 5, generator=generator)
    y = (x[:, 0] - x[:, 2] > 0).long()
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2))
    latest = ckpt.latest_checkpoint(folder) if resume else None
    batches = epoch_batches(x, y, 32)
    with open_segment("resume", "run", resume_from=latest, root=root) as writer:
        def batch_fn(index):
            writer.flush()  # put every finished step on disk, so that the kill leaves steps after the checkpoint
            print("step", index, flush=True)
            return batches(index)

        config = TrainConfig(max_steps={STEPS}, lr=0.05, warmup_steps=5, eval_every={EVAL_EVERY},
                             checkpoint_every={CHECKPOINT_EVERY}, checkpoint_dir=folder, progress=False)
        train(model, make_adamw(model, 0.05), config, batch_fn=batch_fn,
              eval_fn=lambda m: evaluate(m, [(x, y)], classification_loss), writer=writer, resume_from=latest)
    print("done", flush=True)
""")


def _start(tmp_path: Path, mode: str) -> subprocess.Popen:
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    return subprocess.Popen([sys.executable, str(script), str(tmp_path / "runs"), str(tmp_path / "ckpt"), mode],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            cwd=tmp_path)


def _served_steps(server, tag: str, want: int, timeout: float = 30.0) -> list[list[float]]:
    deadline = time.monotonic() + timeout
    served = server.scalars(RUN, tag)
    while len(served) < want and time.monotonic() < deadline:  # give the loader time to read every file
        time.sleep(0.5)
        served = server.scalars(RUN, tag)
    time.sleep(1.5)  # one more reload: nothing may arrive late
    return server.scalars(RUN, tag)


def test_sigkill_then_resume_shows_each_step_once(tmp_path, tensorboard_server):
    process = _start(tmp_path, "fresh")
    output = []
    for line in process.stdout:  # wait until the run is past a checkpoint, then kill it without warning
        output.append(line)
        if line.strip() == f"step {KILL_AT}":
            os.kill(process.pid, signal.SIGKILL)
            break
    process.wait(timeout=30)
    killed_pid = process.pid
    assert process.returncode == -signal.SIGKILL, "".join(output)
    # checkpoints are saved after steps 0, 10, 20 (hooks.due) and record the next step: 1, 11, 21
    checkpoint_step = (KILL_AT - 1) // CHECKPOINT_EVERY * CHECKPOINT_EVERY + 1
    assert ckpt.latest_checkpoint(tmp_path / "ckpt") == ckpt.step_path(tmp_path / "ckpt", checkpoint_step)
    run = tmp_path / "runs" / RUN
    before = tb.read_scalars(run, ["train/loss"])
    assert before.step.max() > checkpoint_step, "the kill should leave steps logged after the checkpoint"

    process = _start(tmp_path, "resume")
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 0 and "done" in output, output
    assert f"step {checkpoint_step * 1}" in output and f"step {checkpoint_step - 1}\n" not in output

    # (a) tb.read_scalars (TensorBoard's EventAccumulator): each step once, none lost
    expected_val = [*range(0, STEPS, EVAL_EVERY), STEPS - 1]
    scalars = tb.assert_logged(run, {"train/loss": list(range(STEPS)), "train/lr": list(range(STEPS)),
                                     "val/loss": expected_val})
    # every flush starts a new event file; the two segments' files (named by their writer's pid) must sort
    # in the order they were written, since both TensorBoard loaders read a run's files in name order
    writers = [int(re.search(r"\.(\d+)\.\d+(?:\.\d{6})?$", p.name).group(1))
               for p in sorted(run.glob("events.out.tfevents.*"))]
    first = writers.count(killed_pid)
    assert first > 0 and writers == [killed_pid] * first + [process.pid] * (len(writers) - first)
    train_loss = scalars[scalars.tag == "train/loss"]
    written_before = before.set_index("step").value
    kept = train_loss[train_loss.step < checkpoint_step].set_index("step").value
    assert (kept == written_before[written_before.index < checkpoint_step]).all()

    # (b) the TensorBoard server, both loaders, at the same time
    servers = {fast: tensorboard_server(tmp_path / "runs", fast) for fast in (True, False)}
    try:
        for server in servers.values():
            server.wait_until_ready(RUN, "train/loss")
        for fast, server in servers.items():
            loader = "Rust (--load_fast=true)" if fast else "Python (--load_fast=false)"
            served = _served_steps(server, "train/loss", STEPS)
            assert [int(step) for _, step, _ in served] == list(range(STEPS)), f"{loader}: {served}"
            assert [value for _, _, value in served] == pytest.approx(train_loss.value.tolist()), loader
            served_val = _served_steps(server, "val/loss", len(expected_val))
            assert [int(step) for _, step, _ in served_val] == expected_val, f"{loader}: {served_val}"
    finally:
        for server in servers.values():
            server.stop()
