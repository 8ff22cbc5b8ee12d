"""What logging costs: the book's loop with no writer, with tensorboardX at the book's default cadence, and with
histograms of every parameter at every step; then the write throughput of tensorboardX,
``torch.utils.tensorboard`` and ``tf.summary`` side by side, for scalars and histograms.

The loop: ``utils.loop.train`` on the book's GPT at nanoGPT's CPU recipe (4 layers, 4 heads, 128-dim,
context 64, batch 12), one thread. Each variant runs in rounds, interleaved (none, default, histograms,
none, ...), so that a change in the machine's load hits all of them alike; the figure is the median over
rounds of the mean step time of a round (wall time of ``train`` / steps). The book's default cadence is
``TrainConfig``'s: the scalars of ``hooks.log_step`` at every step. Because a 1 % difference is below the
noise of a shared machine, the cost of that logging is also timed directly: ``hooks.log_step`` alone,
called as the loop calls it, per step.

    python -m benchmarks.logging_overhead                 # the full benchmark (about 3 minutes)
    python -m benchmarks.logging_overhead --steps 5 --rounds 1 --writers tensorboardX
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks import record
from utils import hooks, loop, tb
from utils.batches import random_windows
from utils.evaluation import lm_loss
from utils.gpt import GPT, GPTConfig
from utils.optim import make_adamw
from utils.pretrain import shakespeare_data

NAME = "logging_overhead"
MODEL = GPTConfig(vocab_size=65, block_size=64, n_layer=4, n_head=4, n_embd=128, dropout=0.0, bias=False)
BATCH = 12
VARIANTS = {"no logging": None, "tensorboardX, default cadence": {},
            "tensorboardX, histograms every step": {"histogram_every": 1}}
WRITERS = ("tensorboardX", "torch.utils.tensorboard", "tf.summary")


# --------------------------------------------------------------------------------------------- the loop


def timed_round(variant: dict[str, Any] | None, steps: int, train_ids: torch.Tensor, logdir: Path) -> float:
    """Mean seconds per step of ``train`` over ``steps`` updates of a fresh model, after one untimed step."""
    torch.manual_seed(0)
    model = GPT(MODEL)
    optimizer = make_adamw(model, 1e-3)
    batch_fn = random_windows(train_ids, MODEL.block_size, BATCH)
    loop.train_step(model, optimizer, [batch_fn(10_000)], lm_loss)  # AdamW's states, thread pool
    config = loop.TrainConfig(max_steps=steps, lr=1e-3, progress=False, units="tokens", **(variant or {}))
    shutil.rmtree(logdir, ignore_errors=True)
    with tb.open_run("bench", "logging", root=logdir) as writer:
        start = time.perf_counter()
        loop.train(model, optimizer, config, batch_fn=batch_fn, loss_fn=lm_loss,
                   writer=writer if variant is not None else None)
        elapsed = time.perf_counter() - start
    return elapsed / steps


def log_step_cost(calls: int, logdir: Path) -> float:
    """Seconds per call of ``hooks.log_step``, the scalars the loop writes at every step by default."""
    stats = loop.StepStats(loss=2.5, metrics={}, grad_norm=0.7)
    config = loop.TrainConfig(max_steps=calls, units="tokens")
    with tb.open_run("bench", "log_step", root=logdir) as writer:
        start = time.perf_counter()
        for step in range(calls):
            hooks.log_step(writer, step, stats, {"decay": 1e-3, "no_decay": 1e-3}, 6000.0, config, None)
        writer.flush()
        return (time.perf_counter() - start) / calls


def loop_rows(args: argparse.Namespace, folder: Path) -> tuple[list[dict[str, Any]], dict[str, float]]:
    _, train_ids, _ = shakespeare_data()
    rounds: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for _ in range(args.rounds):
        for name, variant in VARIANTS.items():
            rounds[name].append(timed_round(variant, args.steps, train_ids, folder / "loop"))
    base = float(np.median(rounds["no logging"]))
    rows = [{"variant": name, "ms_per_step": float(np.median(times)) * 1e3,
             "overhead": float(np.median(times)) / base - 1, "rounds": len(times)}
            for name, times in rounds.items()]
    direct = log_step_cost(args.log_step_calls, folder / "direct")
    return rows, {"log_step_ms": direct * 1e3, "share_of_step": direct / base, "step_ms": base * 1e3}


# --------------------------------------------------------------------------------------------- the writers


def _writer(kind: str, logdir: Path):
    """``(add_scalar(tag, value, step), add_histogram(tag, values, step), close())`` of one library."""
    if kind == "tf.summary":
        import tensorflow as tf

        writer = tf.summary.create_file_writer(str(logdir))
        default = writer.as_default()  # entered once, as a training loop would
        default.__enter__()

        def close():
            default.__exit__(None, None, None)
            writer.close()

        def scalar(tag, value, step):
            tf.summary.scalar(tag, value, step=step)

        def histogram(tag, values, step):
            tf.summary.histogram(tag, values, step=step)

        return scalar, histogram, close
    if kind == "torch.utils.tensorboard":
        from torch.utils.tensorboard import SummaryWriter
    else:
        from tensorboardX import SummaryWriter
    writer = SummaryWriter(str(logdir))
    return writer.add_scalar, writer.add_histogram, writer.close


def writer_rows(kinds: Sequence[str], scalars: int, histograms: int, values: int,
                folder: Path) -> list[dict[str, Any]]:
    """Calls per second of each library, scalars and histograms (of ``values`` floats, default bins),
    counting the final close (which writes what is still queued)."""
    data = np.random.default_rng(0).standard_normal(values).astype(np.float32)
    rows = []
    for kind in kinds:
        scalar, histogram, close = _writer(kind, folder / kind / "scalars")
        start = time.perf_counter()
        for step in range(scalars):
            scalar("loss", 1.0 / (step + 1), step)
        close()
        scalar_s = time.perf_counter() - start
        _, histogram, close = _writer(kind, folder / kind / "histograms")
        start = time.perf_counter()
        for step in range(histograms):
            histogram("weights", data, step)
        close()
        rows.append({"writer": kind, "scalars_per_s": scalars / scalar_s,
                     "histograms_per_s": histograms / (time.perf_counter() - start)})
    return rows


# --------------------------------------------------------------------------------------------- main


def tables(loop_results: list[dict[str, Any]], direct: dict[str, float], writers: list[dict[str, Any]],
           args: argparse.Namespace) -> list[dict[str, Any]]:
    loop_table = record.table(
        "Logging overhead: utils.loop.train, nanoGPT's CPU recipe, 1 thread",
        ["variant", "ms/step (median of rounds)", "overhead vs no logging"],
        [[row["variant"], f"{row['ms_per_step']:.1f}", f"{row['overhead']:+.1%}"] for row in loop_results],
        [f"{args.rounds} rounds of {args.steps} steps per variant, interleaved; overhead = ratio of medians - 1.",
         f"Timed alone, hooks.log_step (the default cadence's scalars at every step) costs "
         f"{direct['log_step_ms']:.3f} ms per step = {direct['share_of_step']:.2%} of the {direct['step_ms']:.1f} "
         "ms step without logging (the book's default must stay under 1 %)."])
    writer_table = record.table(
        f"Write throughput: {args.scalars:,} scalars, {args.histograms} histograms of {args.values:,} floats",
        ["writer", "scalars/s", "histograms/s"],
        [[row["writer"], f"{row['scalars_per_s']:,.0f}", f"{row['histograms_per_s']:,.1f}"] for row in writers],
        ["Default settings of each library (histogram bins: tensorboardX and torch 'tensorflow', about 1,500 "
         "exponential buckets; tf.summary 30 equal buckets); the time includes closing the writer."])
    return [loop_table, writer_table]


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40, help="timed steps per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--log-step-calls", type=int, default=2000)
    parser.add_argument("--writers", default=",".join(WRITERS), help=f"comma-separated, from {WRITERS}")
    parser.add_argument("--scalars", type=int, default=5000)
    parser.add_argument("--histograms", type=int, default=100)
    parser.add_argument("--values", type=int, default=100_000, help="floats per histogram")
    parser.add_argument("--out-dir", default=None, help="default: benchmarks/results")
    args = parser.parse_args(argv)
    unknown = [kind for kind in args.writers.split(",") if kind not in WRITERS]
    if unknown or args.steps < 1 or args.rounds < 1:
        parser.error(f"--writers from {WRITERS} (got {unknown}); --steps and --rounds >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = _arguments(argv)
    threads = torch.get_num_threads()
    load_start, machine, started = record.load_average(), record.machine(), time.perf_counter()
    folder = Path(tempfile.mkdtemp(prefix="bench-logging-"))
    try:
        torch.set_num_threads(1)
        loop_results, direct = loop_rows(args, folder)
        writers = writer_rows(args.writers.split(","), args.scalars, args.histograms, args.values, folder)
    finally:
        torch.set_num_threads(threads)
        shutil.rmtree(folder, ignore_errors=True)
    result = {**record.provenance(NAME, argv, machine, load_start, started), "settings": vars(args),
              "loop": loop_results, "log_step": direct, "writers": writers,
              "tables": tables(loop_results, direct, writers, args)}
    record.finish(NAME, result, args.out_dir)
    return result


if __name__ == "__main__":
    main()
