"""What logging costs: the book's loop with no writer, with tensorboardX at the book's default cadence, and with
histograms of every parameter at every step; then the write throughput of tensorboardX,
``torch.utils.tensorboard`` and ``tf.summary`` side by side, for scalars and histograms.

The loop: ``utils.loop.train`` on the book's GPT at nanoGPT's CPU recipe (4 layers, 4 heads, 128-dim,
context 64, batch 12), one thread. Each variant runs in rounds, interleaved (none, default, histograms,
then histograms, default, none, ...), so that a change in the machine's load hits all of them alike; a
variant's overhead is the median over rounds of its ratio to the same round without logging. Wall time and
the process's CPU time (writer threads included) both. The book's default cadence is ``TrainConfig``'s: the scalars of
``hooks.log_step`` at every step, written as one event. Because a 1 % difference is below the noise of a
shared machine, the cost of that logging is also timed directly: ``hooks.log_step`` alone, called as the
loop calls it, per step, its writer's final flush included.

    python -m benchmarks.logging_overhead                 # the full benchmark (about 4 minutes)
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
from utils import hooks, loop, tb, validate
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


def timed_round(variant: dict[str, Any] | None, steps: int, train_ids: torch.Tensor,
                logdir: Path) -> tuple[float, float]:
    """Wall and CPU seconds per step of ``train`` over ``steps`` updates of a fresh model, after one untimed
    step. CPU time is the whole process's, so it counts tensorboardX's writer thread and its queue's feeder
    thread too, which wall time on a second core would hide."""
    torch.manual_seed(0)
    model = GPT(MODEL)
    optimizer = make_adamw(model, 1e-3)
    batch_fn = random_windows(train_ids, MODEL.block_size, BATCH)
    loop.train_step(model, optimizer, [batch_fn(10_000)], lm_loss)  # AdamW's states, thread pool
    config = loop.TrainConfig(max_steps=steps, lr=1e-3, progress=False, units="tokens", **(variant or {}))
    shutil.rmtree(logdir, ignore_errors=True)
    with tb.open_run("bench", "logging", root=logdir) as writer:
        wall, cpu = time.perf_counter(), time.process_time()
        loop.train(model, optimizer, config, batch_fn=batch_fn, loss_fn=lm_loss,
                   writer=writer if variant is not None else None)
        writer.flush()  # what the writer thread still has queued is part of the cost
        return (time.perf_counter() - wall) / steps, (time.process_time() - cpu) / steps


def log_step_cost(calls: int, logdir: Path, one_event: bool = True) -> tuple[float, float]:
    """Wall and CPU seconds per call of ``hooks.log_step``, the scalars the loop writes at every step by
    default, with the final flush (the writer thread's work) counted. ``one_event=False``: the same scalars
    with one ``add_scalar`` each, as the loop wrote them before."""
    stats = loop.StepStats(loss=2.5, metrics={}, grad_norm=0.7)
    config = loop.TrainConfig(max_steps=calls, units="tokens")
    lrs = {"decay": 1e-3, "no_decay": 1e-3}
    with tb.open_run("bench", f"log_step_{one_event}", root=logdir) as writer:
        wall, cpu = time.perf_counter(), time.process_time()
        for step in range(calls):
            if one_event:
                hooks.log_step(writer, step, stats, lrs, 6000.0, config, None)
            else:
                for tag, value in hooks.step_scalars(stats, lrs, 6000.0, config, None).items():
                    writer.add_scalar(tag, value, step)
        writer.flush()
        return (time.perf_counter() - wall) / calls, (time.process_time() - cpu) / calls


def _paired(times: list[float], base: list[float]) -> dict[str, float]:
    """Overhead against no logging, round by round (the same round shares the machine's load): the median
    ratio - 1 and its quartiles, which show how far the noise reaches."""
    ratios = np.asarray(times) / np.asarray(base) - 1
    return {"overhead": float(np.median(ratios)), "overhead_q1": float(np.percentile(ratios, 25)),
            "overhead_q3": float(np.percentile(ratios, 75))}


def loop_rows(args: argparse.Namespace, folder: Path) -> tuple[list[dict[str, Any]], dict[str, float]]:
    _, train_ids, _ = shakespeare_data()
    wall: dict[str, list[float]] = {name: [] for name in VARIANTS}
    cpu: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for round_index in range(args.rounds):
        for name, variant in record.round_order(list(VARIANTS.items()), round_index):
            round_wall, round_cpu = timed_round(variant, args.steps, train_ids, folder / "loop")
            wall[name].append(round_wall)
            cpu[name].append(round_cpu)
    rows = [{"variant": name, "rounds": len(wall[name]),
             "ms_per_step": float(np.median(wall[name])) * 1e3, **_paired(wall[name], wall["no logging"]),
             "cpu_ms_per_step": float(np.median(cpu[name])) * 1e3,
             "cpu_overhead": _paired(cpu[name], cpu["no logging"])["overhead"],
             "step_s_rounds": wall[name], "cpu_s_rounds": cpu[name]} for name in VARIANTS]  # the samples, in order
    direct_wall, direct_cpu = log_step_cost(args.log_step_calls, folder / "direct")
    per_tag_wall, _ = log_step_cost(args.log_step_calls, folder / "direct", one_event=False)
    step_s = float(np.median(wall["no logging"]))
    return rows, {"log_step_ms": direct_wall * 1e3, "log_step_cpu_ms": direct_cpu * 1e3, "step_ms": step_s * 1e3,
                  "share_of_step": direct_wall / step_s, "cpu_share_of_step": direct_cpu / step_s,
                  "one_add_scalar_per_tag_ms": per_tag_wall * 1e3}


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
        ["variant", "ms/step", "overhead (quartiles)", "CPU ms/step", "CPU overhead"],
        [[row["variant"], f"{row['ms_per_step']:.1f}",
          f"{row['overhead']:+.1%} ({row['overhead_q1']:+.1%} to {row['overhead_q3']:+.1%})",
          f"{row['cpu_ms_per_step']:.1f}", f"{row['cpu_overhead']:+.1%}"] for row in loop_results],
        [f"{args.rounds} rounds of {args.steps} steps per variant, interleaved (the order reversed every other "
         "round); ms/step: median over rounds; overhead: median over rounds of the ratio to the same round "
         "without logging, - 1 (quartiles: the noise of a shared machine). CPU: the whole process's, writer "
         "threads included.",
         f"Timed alone, hooks.log_step (the default cadence's scalars at every step, one event) costs "
         f"{direct['log_step_ms']:.3f} ms wall and {direct['log_step_cpu_ms']:.3f} ms CPU per step = "
         f"{direct['share_of_step']:.2%} and {direct['cpu_share_of_step']:.2%} of the {direct['step_ms']:.1f} ms "
         "step without logging (the book's default must stay under 1 %); the same scalars with one add_scalar "
         f"each cost {direct['one_add_scalar_per_tag_ms']:.3f} ms (tensorboardX hands every event to its writer "
         "thread through a multiprocessing.Queue)."])
    writer_table = record.table(
        f"Write throughput: {args.scalars:,} scalars, {args.histograms} histograms of {args.values:,} floats",
        ["writer", "scalars/s", "histograms/s"],
        [[row["writer"], f"{row['scalars_per_s']:,.0f}", f"{row['histograms_per_s']:,.1f}"] for row in writers],
        ["Default settings of each library (histogram bins: tensorboardX and torch 'tensorflow', about 1,500 "
         "exponential buckets; tf.summary 30 equal buckets); the time includes closing the writer."])
    return [loop_table, writer_table]


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.logging_overhead",
                                     description=__doc__.splitlines()[0])
    at_least_one = validate.whole_number(1)
    parser.add_argument("--steps", type=at_least_one, default=30, help="timed steps per round")
    parser.add_argument("--rounds", type=at_least_one, default=15)
    parser.add_argument("--log-step-calls", type=at_least_one, default=2000)
    parser.add_argument("--writers", default=",".join(WRITERS), help=f"comma-separated, from {WRITERS}")
    parser.add_argument("--scalars", type=at_least_one, default=5000)
    parser.add_argument("--histograms", type=at_least_one, default=100)
    parser.add_argument("--values", type=at_least_one, default=100_000, help="floats per histogram")
    parser.add_argument("--out-dir", type=validate.folder_path, default=None, help="default: benchmarks/results")
    args = parser.parse_args(argv)
    unknown = [kind for kind in args.writers.split(",") if kind not in WRITERS]
    if unknown:
        parser.error(f"argument --writers: unknown writer(s) {unknown}: choose from {', '.join(WRITERS)}")
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
