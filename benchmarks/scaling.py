"""Data-parallel throughput with 1 and 2 ranks on this machine, and the memory arithmetic against measured
peaks.

Throughput: ``utils.distributed`` (DDP on gloo, 127.0.0.1) launched by torchrun with 1 rank and with 2, the
same global batch, each rank on one thread; and, for comparison, 1 rank on 2 threads (the same two cores
used by intra-op parallelism instead of data parallelism). The figure is the median tokens/s of the timed
steps that rank 0 reports (the first step left out).

Memory: ``utils.memory.training_memory`` against what torch keeps, for a few sizes of the book's GPT:
activations against autograd's saved tensors, and a whole step's peak against torch.profiler's memory
timeline (bounds: weights + AdamW + activations <= peak <= all four).

    python -m benchmarks.scaling                          # the full benchmark (about 3 minutes)
    python -m benchmarks.scaling --steps 4 --configs tiny --memory-configs tiny
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from benchmarks import record
from utils import distributed, loop, memory, torchrun, validate
from utils.evaluation import lm_loss
from utils.gpt import GPT, GPTConfig
from utils.optim import make_adamw

NAME = "scaling"
#: (model, global batch in windows of its block_size tokens)
CONFIGS = {"nanogpt-cpu": (GPTConfig(vocab_size=65, block_size=64, n_layer=4, n_head=4, n_embd=128), 24),
           "small": (GPTConfig(vocab_size=65, block_size=32, n_layer=2, n_head=2, n_embd=64), 16),
           "tiny": (GPTConfig(vocab_size=65, block_size=16, n_layer=1, n_head=2, n_embd=32), 4)}
LAYOUTS = ((1, 1), (1, 2), (2, 1))  # (ranks, threads per rank)


def throughput(config_name: str, ranks: int, threads: int, steps: int, folder: Path,
               global_batch: int | None = None) -> dict[str, Any]:
    """One launch; rank 0's summary (median tokens/s of the timed steps). ``global_batch``: windows per
    update, by default the configuration's."""
    model, default_batch = CONFIGS[config_name]
    batch = global_batch or default_batch
    summary_path = folder / f"{config_name}-{ranks}x{threads}-{batch}.json"
    config = distributed.DistConfig(model=model, global_batch=batch, mode="ddp",
                                    summary_out=str(summary_path)).with_training(max_steps=steps)
    env = {**torchrun.launch_env(), "OMP_NUM_THREADS": str(threads)}
    done = subprocess.run(torchrun.launch_command(ranks, config), env=env, capture_output=True, text=True,
                          timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(f"torchrun failed ({done.returncode}):\n{(done.stdout + done.stderr)[-2000:]}")
    summary = json.loads(summary_path.read_text())
    return {"config": config_name, "ranks": ranks, "threads_per_rank": threads, "global_batch": batch,
            "block_size": model.block_size, "steps": steps, "tokens_per_s": summary["tokens_per_s"],
            "load_1min": (record.load_average() or [float("nan")])[0]}


def memory_row(config_name: str) -> dict[str, Any]:
    """Predicted against measured activations and step peak, for one size at its per-rank batch."""
    gpt, B = CONFIGS[config_name]
    T = gpt.block_size
    torch.manual_seed(0)
    model = GPT(gpt)
    optimizer = make_adamw(model, 1e-3)
    generator = torch.Generator().manual_seed(0)
    batch = tuple(torch.randint(65, (B, T), generator=generator) for _ in range(2))
    saved = memory.saved_activation_bytes(model, batch, lm_loss)

    def step():
        loop.train_step(model, optimizer, [batch], lm_loss, grad_clip=1.0)

    step()
    peak = memory.measure_step_peak(step)["peak"]
    estimate = memory.training_memory(gpt, B)
    return {"config": config_name, "batch": B, "block_size": T, **{f"predicted_{k}": v for k, v in
            estimate.as_dict().items()}, "measured_activations": saved, "measured_peak": peak,
            "lower_bound": estimate.weights + estimate.optimizer + estimate.activations}


def tables(rows: list[dict[str, Any]], memory_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    base = {row["config"]: row["tokens_per_s"] for row in rows if (row["ranks"], row["threads_per_rank"]) == (1, 1)}
    speed = record.table(
        "Data parallelism on this machine: DDP on gloo, torchrun, the same global batch",
        ["configuration", "ranks x threads", "global batch", "tokens/s (median)", "vs 1 x 1", "load (1 min)"],
        [[row["config"], f"{row['ranks']} x {row['threads_per_rank']}", row["global_batch"],
          f"{row['tokens_per_s']:,.0f}", f"{row['tokens_per_s'] / base[row['config']]:.2f}x",
          f"{row['load_1min']:.2f}"] for row in rows],
        ["Two ranks on two cores split the batch but each step waits for the all-reduce of every gradient "
         "bucket over the loopback interface, and each rank's matmuls are half as large; 1 x 2 spends the "
         "same two cores on intra-op threads instead. Compare rows measured at a similar load."])
    mib = lambda value: f"{value / 2**20:.2f}"  # noqa: E731
    mem = record.table(
        "Memory arithmetic (utils.memory) against measured, fp32, MiB",
        ["configuration", "batch x context", "weights", "gradients", "AdamW", "activations predicted",
         "activations measured", "peak bounds", "peak measured"],
        [[row["config"], f"{row['batch']} x {row['block_size']}", mib(row["predicted_weights"]),
          mib(row["predicted_gradients"]), mib(row["predicted_optimizer"]), mib(row["predicted_activations"]),
          mib(row["measured_activations"]), f"{mib(row['lower_bound'])} to {mib(row['predicted_total'])}",
          mib(row["measured_peak"])] for row in memory_rows],
        ["Activations measured with autograd's saved-tensor hooks (each storage once); the peak of one "
         "training step with torch.profiler's memory timeline (the CPU has no max_memory_allocated)."])
    return [speed, mem]


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scaling", description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="nanogpt-cpu", help=f"comma-separated, from {list(CONFIGS)}")
    parser.add_argument("--memory-configs", default="nanogpt-cpu,small")
    parser.add_argument("--steps", type=validate.whole_number(2), default=30, help=">= 2: the first is not timed")
    parser.add_argument("--out-dir", type=validate.folder_path, default=None, help="default: benchmarks/results")
    args = parser.parse_args(argv)
    for flag, names in (("--configs", args.configs), ("--memory-configs", args.memory_configs)):
        unknown = [name for name in names.split(",") if name not in CONFIGS]
        if unknown:
            parser.error(f"argument {flag}: unknown configuration(s) {unknown}: choose from {', '.join(CONFIGS)}")
    load_start, machine, started = record.load_average(), record.machine(), time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        rows = [throughput(name, ranks, threads, args.steps, Path(folder))
                for name in args.configs.split(",") for ranks, threads in LAYOUTS]
    memory_rows = [memory_row(name) for name in args.memory_configs.split(",")]
    result = {**record.provenance(NAME, argv, machine, load_start, started), "throughput": rows,
              "memory": memory_rows, "tables": tables(rows, memory_rows)}
    record.finish(NAME, result, args.out_dir)
    return result


if __name__ == "__main__":
    main()
