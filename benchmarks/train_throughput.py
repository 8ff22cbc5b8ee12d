"""Training throughput of the book's GPT and training step, at nanoGPT's CPU recipe and larger.

What is timed: one optimizer update exactly as the book's loop makes it, ``utils.loop.train_step`` (zero the
gradients, forward, backward, clip the global norm, AdamW step) plus drawing its batch
(``utils.batches.random_windows``), in fp32, after warm-up steps that are not timed; the median of the timed
steps. Model FLOPs utilisation (MFU) = tokens/s x training FLOPs per token / the fp32 matmul peak measured
in the same run at the same thread count (``utils.perf.matmul_peak_gflops``, the best of every measurement of
the run, taken before and after each configuration). FLOPs per token: ``utils.gpt.flops_per_token``, nanoGPT's
``estimate_mfu`` formula ``6 N + 12 L H Q T`` (N = parameters without the position embedding), for the
book's runs and nanoGPT's figures alike.

Each configuration is timed in rounds (``--repeats``), the order of the configurations reversed every round,
and every timed step is kept: the table gives the median and the quartiles of all of them, and the spread of
the rounds' medians, because the same step measured minutes apart on a shared machine differs by tens of
per cent. Step time against nanoGPT's own code is ``benchmarks.vs_nanogpt`` (both run side by side).

    python -m benchmarks.train_throughput                  # the full benchmark (about 3 minutes)
    python -m benchmarks.train_throughput --configs nanogpt-cpu --threads 1 --max-seconds 5
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from benchmarks import record
from utils import loop, perf, validate
from utils.batches import random_windows
from utils.evaluation import lm_loss
from utils.gpt import GPTConfig, flops_per_token, parameter_count_formula
from utils.optim import make_adamw
from utils.pretrain import PretrainSetup, build_model, shakespeare_data

NAME = "train_throughput"

#: nanoGPT's README ("I only have a macbook"): the CPU recipe, "about ~3 minutes", "a loss of only 1.88".
NANOGPT_README = {
    "source": "https://github.com/karpathy/nanoGPT README.md, section 'I only have a macbook'",
    "command": "python train.py config/train_shakespeare_char.py --device=cpu --compile=False --eval_iters=20 "
               "--log_interval=1 --block_size=64 --batch_size=12 --n_layer=4 --n_head=4 --n_embd=128 "
               "--max_iters=2000 --lr_decay_iters=2000 --dropout=0.0",
    "iterations": 2000, "minutes": 3, "val_loss": 1.88, "machine": "a MacBook CPU (model not stated)",
}
#: nanoGPT's train_shakespeare_char.py optimizer settings (the speed does not depend on them; kept equal).
LR, WEIGHT_DECAY, BETAS, GRAD_CLIP = 1e-3, 0.1, (0.9, 0.99), 1.0
VOCAB_SIZE = 65  # Tiny Shakespeare's characters
REFERENCE = "nanogpt-cpu"


def _nanogpt_shape(block_size: int, n_layer: int, n_head: int, n_embd: int) -> GPTConfig:
    """A GPT as nanoGPT's recipe runs it: Tiny Shakespeare's characters, ``bias=False``, dropout 0."""
    return GPTConfig(vocab_size=VOCAB_SIZE, block_size=block_size, n_layer=n_layer, n_head=n_head,
                     n_embd=n_embd, dropout=0.0, bias=False)


@dataclass(frozen=True)
class BenchConfig:
    """A model (``GPTConfig``) and its batch: ``batch_size`` windows of ``model.block_size`` tokens."""

    name: str
    model: GPTConfig
    batch_size: int

    def shape(self) -> dict[str, int]:
        """What a result row records of it: layers, heads, width, context and batch."""
        return {"n_layer": self.model.n_layer, "n_head": self.model.n_head, "n_embd": self.model.n_embd,
                "block_size": self.model.block_size, "batch_size": self.batch_size}


CONFIGS = {config.name: config for config in (
    BenchConfig(REFERENCE, _nanogpt_shape(block_size=64, n_layer=4, n_head=4, n_embd=128), batch_size=12),
    BenchConfig("medium", _nanogpt_shape(block_size=128, n_layer=6, n_head=6, n_embd=192), batch_size=12),
    BenchConfig("large", _nanogpt_shape(block_size=256, n_layer=8, n_head=8, n_embd=256), batch_size=8),
    BenchConfig("tiny", _nanogpt_shape(block_size=16, n_layer=1, n_head=2, n_embd=32), batch_size=4),  # tests
)}
DEFAULT_CONFIGS = (REFERENCE, "medium", "large")


# --------------------------------------------------------------------------------------------- one step


def _trainer(config: BenchConfig, train_ids: torch.Tensor) -> Callable[[int], float]:
    """``step(i)``: draw batch ``i`` and make one update of a fresh model with ``loop.train_step``; returns
    the loss (a float: the step ends with its host sync, as in the book's loop)."""
    model = build_model(PretrainSetup(model=config.model))
    model.train()
    optimizer = make_adamw(model, LR, WEIGHT_DECAY, betas=BETAS)
    batch_fn = random_windows(train_ids, config.model.block_size, config.batch_size, seed=0)
    autocast = loop.autocast_context("off", "cpu")  # fp32, as nanoGPT's CPU recipe

    def step(index: int) -> float:
        stats = loop.train_step(model, optimizer, [batch_fn(index)], lm_loss, grad_clip=GRAD_CLIP,
                                autocast=autocast)
        if not stats.finite:
            raise RuntimeError(f"{config.name}: non-finite loss or gradient at step {index}")
        return stats.loss

    return step


def time_steps(config: BenchConfig, train_ids: torch.Tensor, warmup: int, steps: int,
               max_seconds: float) -> dict[str, Any]:
    """Median time of up to ``steps`` timed updates after ``warmup`` untimed ones. Both phases end early
    on a slow configuration: the warm-up once it took a quarter of ``max_seconds`` (at least 2 steps: the
    first allocates the optimizer's state), the timing once it took ``max_seconds`` (at least 3 steps)."""
    step = _trainer(config, train_ids)
    start = time.perf_counter()
    for index in range(warmup):
        step(index)
        if index >= 1 and time.perf_counter() - start >= max_seconds / 4:
            warmup = index + 1
            break
    times, loss = [], math.nan
    for index in range(warmup, warmup + steps):
        start = time.perf_counter()
        loss = step(index)
        times.append(time.perf_counter() - start)
        if len(times) >= 3 and sum(times) >= max_seconds:
            break
    return {"step_s_median": record.median(times), "step_s_min": min(times), "steps_timed": len(times),
            "steps_warmup": warmup, "last_loss": loss, "step_s_samples": times}


def matmul_peak(threads: int, size: int) -> float:
    """The fp32 matmul peak now, at ``threads`` threads (measured again, not the cached value)."""
    torch.set_num_threads(threads)
    return perf.measure_matmul_peak(n=size, repeats=10, dtype=torch.float32, device="cpu")


# --------------------------------------------------------------------------------------------- the profile


def profile(config: BenchConfig, train_ids: torch.Tensor, threads: int, steps: int) -> dict[str, Any]:
    """Where the time of ``steps`` updates goes: torch.profiler's operators, the top 10 by self CPU time
    (time in the operator itself, not in the operators it calls), after 2 untimed steps."""
    torch.set_num_threads(threads)
    step = _trainer(config, train_ids)
    step(0)
    step(1)
    activities = [torch.profiler.ProfilerActivity.CPU]
    start = time.perf_counter()
    with torch.profiler.profile(activities=activities) as profiler:
        for index in range(2, 2 + steps):
            step(index)
    wall_s = time.perf_counter() - start
    events = list(profiler.key_averages())
    total_us = sum(event.self_cpu_time_total for event in events)
    top = sorted(events, key=lambda event: event.self_cpu_time_total, reverse=True)[:10]
    operators = [{"operator": event.key, "self_cpu_ms_per_step": event.self_cpu_time_total / 1e3 / steps,
                  "share_of_self_cpu": event.self_cpu_time_total / total_us, "calls_per_step": event.count / steps}
                 for event in top]
    return {"config": config.name, "threads": threads, "steps": steps, "wall_s_profiled": wall_s,
            "self_cpu_ms_per_step_total": total_us / 1e3 / steps, "top_operators": operators}


# --------------------------------------------------------------------------------------------- the run


def measure_all(configs: Sequence[BenchConfig], threads: Sequence[int], args: argparse.Namespace,
                train_ids: torch.Tensor) -> list[dict[str, Any]]:
    """Every configuration at every thread count, ``args.repeats`` rounds (the order reversed every round);
    MFU against the best matmul peak seen at that thread count."""
    peaks: dict[int, list[float]] = {count: [] for count in threads}
    pairs = [(config, count) for config in configs for count in threads]
    rounds: dict[tuple[str, int], list[dict[str, Any]]] = {(c.name, n): [] for c, n in pairs}
    for round_index in range(args.repeats):
        for config, count in record.round_order(pairs, round_index):
            peaks[count].append(matmul_peak(count, args.peak_size))
            rounds[config.name, count].append(
                time_steps(config, train_ids, args.warmup, args.steps, args.max_seconds))
    rows = []
    for config, count in pairs:
        rows.append(_row(config, count, rounds[config.name, count], max(peaks[count])))
    return rows


def _row(config: BenchConfig, threads: int, rounds: list[dict[str, Any]], peak: float) -> dict[str, Any]:
    """One configuration at one thread count: every timed step of every round, their quartiles, the rounds'
    medians, and what follows from the median (tokens/s, model GFLOP/s, MFU)."""
    samples = [t for timing in rounds for t in timing["step_s_samples"]]
    q1, median, q3 = record.quartiles(samples)
    tokens = config.batch_size * config.model.block_size
    row = {"config": config.name, **config.shape(), "threads": threads,
           "load_1min": (record.load_average() or [math.nan])[0], "rounds": len(rounds),
           "steps_timed": len(samples), "step_s_median": median, "step_s_q1": q1, "step_s_q3": q3,
           "round_medians_s": [record.median(t["step_s_samples"]) for t in rounds],
           "last_loss": rounds[-1]["last_loss"], "step_s_samples": samples,
           "parameters_non_embedding": parameter_count_formula(config.model, non_embedding=True),
           "flops_per_token": flops_per_token(config.model), "tokens_per_s": tokens / median,
           "peak_gflops": peak}
    row["model_gflops_per_s"] = row["tokens_per_s"] * row["flops_per_token"] / 1e9
    row["mfu"] = perf.mfu(row["tokens_per_s"], row["flops_per_token"], peak)
    return row


# --------------------------------------------------------------------------------------------- the tables


def _shape(config: dict[str, Any]) -> str:
    return f"{config['n_layer']}/{config['n_head']}/{config['n_embd']}"


def throughput_table(rows: list[dict[str, Any]], machine: dict[str, Any]) -> dict[str, Any]:
    columns = ["configuration", "layers/heads/dim", "context", "batch", "threads", "ms/step median (q1-q3)",
               "rounds' medians ms", "tokens/s", "model GFLOP/s", "matmul peak GFLOP/s", "MFU", "load (1 min)"]
    cells = [[row["config"], _shape(row), row["block_size"], row["batch_size"], row["threads"],
              f"{row['step_s_median'] * 1e3:.1f} ({row['step_s_q1'] * 1e3:.1f}-{row['step_s_q3'] * 1e3:.1f})",
              ", ".join(f"{m * 1e3:.1f}" for m in row["round_medians_s"]), f"{row['tokens_per_s']:,.0f}",
              f"{row['model_gflops_per_s']:.1f}", f"{row['peak_gflops']:.1f}", f"{row['mfu']:.0%}",
              f"{row['load_1min']:.2f}"] for row in rows]
    nanogpt_flops = flops_per_token(CONFIGS[REFERENCE].model)
    n_reference = parameter_count_formula(CONFIGS[REFERENCE].model, non_embedding=True)
    notes = [f"FLOPs per token: utils.gpt.flops_per_token = nanoGPT's estimate_mfu formula 6N + 12·L·H·Q·T "
             f"(N = parameters without the position embedding: {n_reference:,} at nanoGPT's recipe, "
             f"which makes {nanogpt_flops:,} FLOPs per token); "
             "model GFLOP/s = tokens/s × that; MFU = model GFLOP/s / the best fp32 matmul peak (n × n) "
             "measured in this run at the same thread count. MFU depends on the machine and on the size "
             "of the peak's matmul, as the step time does: compare it within one run only.",
             "Step time: median and quartiles of every timed step of every round; the rounds' medians show "
             "how much the machine moved between rounds.",
             f"Load average (1, 5, 15 min) at start {machine['load_average_start']}, at end "
             f"{machine['load_average_end']}, on {machine['cpus_usable']} usable CPUs ({machine['cpu']}): "
             "a busy machine gives lower numbers.",
             f"nanoGPT's README: {NANOGPT_README['iterations']:,} iterations of its CPU recipe in about "
             f"{NANOGPT_README['minutes']} minutes to val loss {NANOGPT_README['val_loss']} on "
             f"{NANOGPT_README['machine']}. Its step against the book's, on one machine: "
             "python -m benchmarks.vs_nanogpt."]
    return record.table("Training throughput: loop.train_step, fp32, bias-free GPT, dropout 0", columns,
                        cells, notes)


def profile_table(summary: dict[str, Any]) -> dict[str, Any]:
    rows = [[f"`{op['operator']}`", f"{op['self_cpu_ms_per_step']:.2f}", f"{op['share_of_self_cpu']:.0%}",
             f"{op['calls_per_step']:.0f}"] for op in summary["top_operators"]]
    title = (f"Where the time goes: top 10 operators by self CPU time ({summary['config']}, "
             f"{summary['threads']} thread(s), {summary['steps']} profiled steps)")
    notes = [f"Self CPU time of all operators: {summary['self_cpu_ms_per_step_total']:.1f} ms per step "
             "(under the profiler, which adds its own cost)."]
    return record.table(title, ["operator", "self CPU ms/step", "share", "calls/step"], rows, notes)


# --------------------------------------------------------------------------------------------- main


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.train_throughput",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default=",".join(DEFAULT_CONFIGS),
                        help=f"comma-separated, from {', '.join(CONFIGS)}")
    parser.add_argument("--threads", type=validate.whole_number(1), nargs="+", default=[1, 2],
                        help="torch thread counts")
    parser.add_argument("--warmup", type=validate.whole_number(0), default=5, help="untimed steps before timing")
    parser.add_argument("--steps", type=validate.whole_number(1), default=60, help="timed steps at most")
    parser.add_argument("--max-seconds", type=validate.decimal(0, above=True), default=12.0,
                        help="stop timing a configuration once its timed steps took this long (>= 3 steps)")
    parser.add_argument("--repeats", type=validate.whole_number(1), default=3,
                        help="rounds over every configuration, the order reversed every round")
    parser.add_argument("--profile-steps", type=validate.whole_number(0), default=5, help="0: no profile")
    parser.add_argument("--profile-threads", type=validate.whole_number(1), default=1)
    parser.add_argument("--peak-size", type=validate.whole_number(1), default=1024,
                        help="n of the n x n matmul peak")
    parser.add_argument("--out-dir", type=validate.folder_path, default=None, help="default: benchmarks/results")
    args = parser.parse_args(argv)
    unknown = [name for name in args.configs.split(",") if name not in CONFIGS]
    if unknown:
        parser.error(f"argument --configs: unknown configuration(s) {unknown}: choose from {', '.join(CONFIGS)}")
    return args


def run(args: argparse.Namespace, argv: Sequence[str] | None) -> dict[str, Any]:
    load_start, machine = record.load_average(), record.machine()
    started = time.perf_counter()
    _, train_ids, _ = shakespeare_data()
    configs = [CONFIGS[name] for name in args.configs.split(",")]
    rows = measure_all(configs, args.threads, args, train_ids)
    summary = profile(configs[0], train_ids, args.profile_threads, args.profile_steps) if args.profile_steps else None
    header = record.provenance(NAME, argv, machine, load_start, started)
    tables = [throughput_table(rows, header["machine"])]
    if summary is not None:
        tables.append(profile_table(summary))
    return {**header,
            "settings": {"dtype": "float32", "warmup_steps": args.warmup, "max_timed_steps": args.steps,
                         "max_seconds": args.max_seconds, "repeats": args.repeats, "peak_matmul_size": args.peak_size, "lr": LR,
                         "weight_decay": WEIGHT_DECAY, "betas": list(BETAS), "grad_clip": GRAD_CLIP},
            "flops_formula": "utils.gpt.flops_per_token: 6*N + 12*L*H*Q*T, N = parameters without the "
                             "position embedding (nanoGPT's estimate_mfu)",
            "results": rows, "profile": summary,
            "nanogpt": {"readme": NANOGPT_README},
            "tables": tables}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = _arguments(argv)
    threads = torch.get_num_threads()
    try:
        result = run(args, argv)
    finally:
        torch.set_num_threads(threads)  # the caller's setting back (a test runs this in its own process)
    record.finish(NAME, result, args.out_dir)
    return result


if __name__ == "__main__":
    main()
