"""``python -m utils.distributed`` as a command line: its flags (``FLAGS``, one per setting of a
``DistConfig``), and launching it with torchrun on this machine, from a notebook or a test.

``launch(2, config)`` runs two ranks and waits; ``launch_command`` is the command it runs, all on 127.0.0.1,
with the rendezvous port picked by torchrun itself (``--rdzv-endpoint 127.0.0.1:0``: two launches at once
cannot collide on a port chosen beforehand); ``kill_at_step`` kills a launch with ``SIGKILL`` once rank 0
has reported a given update, as a lost machine would stop it.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import re
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from utils.distributed import DistConfig, backend_for

#: Each flag of ``python -m utils.distributed`` and the setting it gives: (part of DistConfig, field).
FLAGS = {"steps": ("training", "max_steps"), "global_batch": ("", "global_batch"),
         "block_size": ("model", "block_size"), "n_layer": ("model", "n_layer"),
         "n_head": ("model", "n_head"), "n_embd": ("model", "n_embd"), "lr": ("training", "lr"),
         "min_lr": ("training", "min_lr"), "warmup_steps": ("training", "warmup_steps"),
         "grad_clip": ("training", "grad_clip"), "seed": ("", "seed"), "rank_seeds": ("", "rank_seeds"),
         "mode": ("", "mode"),
         "device": ("training", "device"), "log_run": ("", "log_run"), "every_rank_run": ("", "every_rank_run"),
         "checkpoint_every": ("training", "checkpoint_every"),
         "checkpoint_dir": ("training", "checkpoint_dir"), "resume": ("", "resume"),
         "flush_every_step": ("", "flush_every_step"), "weights_out": ("", "weights_out"),
         "summary_out": ("", "summary_out"), "sharded_out": ("", "sharded_out"),
         "grad_accum_steps": ("training", "grad_accum_steps")}


# --------------------------------------------------------------------------------------------- flags


def flag_values(config: DistConfig) -> dict[str, Any]:
    """``{flag: value}`` of every flag, read from ``config``."""
    return {flag: getattr(getattr(config, part) if part else config, name)
            for flag, (part, name) in FLAGS.items()}


def from_flags(values: Mapping[str, Any]) -> DistConfig:
    """The ``DistConfig`` that flags give (``{flag: value}``, e.g. ``{"steps": 12, "n_layer": 1}``); every
    setting without a flag keeps its default."""
    parts: dict[str, dict[str, Any]] = {"model": {}, "training": {}, "": {}}
    for flag, value in values.items():
        part, name = FLAGS[flag]
        parts[part][name] = value
    defaults = DistConfig()
    return DistConfig(model=dataclasses.replace(defaults.model, **parts["model"]),
                      training=dataclasses.replace(defaults.training, **parts["training"]), **parts[""])


def config_arguments(config: DistConfig) -> list[str]:
    """The command-line arguments of ``python -m utils.distributed`` that reproduce ``config``; a setting no
    flag carries, left at another value than its default, is refused rather than lost."""
    values = flag_values(config)
    carried = from_flags(values)
    lost = [f"{part}.{name}" for part in ("model", "training") for name in asdict(getattr(config, part))
            if getattr(getattr(config, part), name) != getattr(getattr(carried, part), name)]
    if lost:
        raise ValueError(f"python -m utils.distributed has no flag for {', '.join(lost)}: leave "
                         f"{'it' if len(lost) == 1 else 'them'} at the default to launch this run")
    arguments = []
    for flag, value in values.items():
        option = "--" + flag.replace("_", "-")
        if isinstance(value, bool):
            arguments += [option] if value else []
        elif value is not None:
            arguments += [option, str(value)]
    return arguments


def in_flag_words(message: str) -> str:
    """A settings error in the words of the command line: ``max_steps=10`` becomes ``--steps 10``, and a
    field name with an underscore (never an English word) on its own becomes its flag: ``checkpoint_dir``."""
    for flag, (_, name) in FLAGS.items():
        option = "--" + flag.replace("_", "-")
        message = re.sub(rf"\b{name}=", f"{option} ", message)
        if "_" in name:
            message = re.sub(rf"\b{name}\b", option, message)
    return message


def parse_arguments(argv: Sequence[str] | None) -> tuple[DistConfig, str]:
    """``(config, process group backend)`` from the command line; bad input exits 2 with the usage line."""
    parser = argparse.ArgumentParser(prog="python -m utils.distributed",
                                     description="Data-parallel training of the book's GPT (chapter 9).")
    for flag, value in flag_values(DistConfig()).items():
        option = "--" + flag.replace("_", "-")
        if isinstance(value, bool):
            parser.add_argument(option, action="store_true")
        else:
            parser.add_argument(option, type=str if value is None else type(value), default=value)
    parser.add_argument("--backend", default=None,
                        help="default: gloo, or cpu:gloo,cuda:nccl with --device cuda")
    args = vars(parser.parse_args(argv))
    backend = args.pop("backend") or backend_for(args["device"])
    try:
        config = from_flags(args)
    except ValueError as exc:
        parser.error(in_flag_words(str(exc)))
    _check_surroundings(parser, config)
    return config, backend


def _check_surroundings(parser: argparse.ArgumentParser, config: DistConfig) -> None:
    """What the settings alone cannot tell: the ranks torchrun started, the folders written to."""
    ranks = os.environ.get("WORLD_SIZE", "1")
    if ranks.isdigit() and int(ranks) > 1 and config.global_batch % int(ranks):
        parser.error(f"argument --global-batch: {config.global_batch} rows do not split evenly over the "
                     f"{ranks} ranks torchrun started (WORLD_SIZE={ranks}): give a multiple of {ranks}")
    folder = config.training.checkpoint_dir
    if folder and Path(folder).is_file():
        parser.error(f"argument --checkpoint-dir: {folder!r} is a file: give a folder")
    if config.log_run or config.every_rank_run:
        from utils.paths import runs_dir

        try:
            runs_dir()
        except ValueError as exc:
            parser.error(str(exc))


# --------------------------------------------------------------------------------------------- launching


LOCAL_ENDPOINT = "127.0.0.1:0"  # this machine alone; port 0: torchrun's agent picks a free one as it binds


def launch_command(nproc: int, config: DistConfig, *, nnodes: int = 1,
                   rdzv_endpoint: str = LOCAL_ENDPOINT) -> list[str]:
    """torchrun's command line for ``nproc`` ranks per machine of ``utils.distributed`` on ``nnodes``
    machines that meet at ``rdzv_endpoint`` (``HOST:PORT`` of one of them, the same command on each). By
    default this machine alone, on 127.0.0.1 (the agent's address too, ``--local-addr``), at a port torchrun's
    agent opens itself and hands to the ranks."""
    return module_command(nproc, "utils.distributed", config_arguments(config), nnodes=nnodes,
                          rdzv_endpoint=rdzv_endpoint)


def module_command(nproc: int, module: str, arguments: Sequence[str], *, nnodes: int = 1,
                   rdzv_endpoint: str = LOCAL_ENDPOINT) -> list[str]:
    """torchrun's command line for ``nproc`` ranks per machine of ``python -m module *arguments``."""
    local = ["--local-addr", "127.0.0.1"] if rdzv_endpoint == LOCAL_ENDPOINT else []
    return [sys.executable, "-m", "torch.distributed.run", "--nnodes", str(nnodes), "--nproc_per_node",
            str(nproc), "--rdzv-backend", "c10d", "--rdzv-endpoint", rdzv_endpoint, *local,
            "-m", module, *arguments]


#: What a run on several machines needs from its environment, and what each setting does.
CLUSTER_ENVIRONMENT = {
    "MASTER_ADDR, MASTER_PORT": "where the ranks meet; torchrun sets both for its ranks from the "
    "rendezvous. Set them yourself only when starting ranks without torchrun (init_method='env://')",
    "RANK, WORLD_SIZE, LOCAL_RANK": "set by torchrun for each rank; guard the writer and the checkpoint "
    "with the global RANK: every machine has a LOCAL_RANK 0",
    "NCCL_SOCKET_IFNAME": "the network interface NCCL uses between machines (eth0, ib0...): set it when a "
    "machine has several and NCCL picks one the others cannot reach (a hang at the first collective)",
    "GLOO_SOCKET_IFNAME": "the same for gloo; launch_env sets it to lo, the loopback interface, for this "
    "book's runs on one machine",
    "NCCL_DEBUG": "INFO prints NCCL's set-up (the interfaces and the rings or trees it chose), WARN its "
    "errors: the first setting to try when a multi-machine job hangs",
    "TORCH_NCCL_ASYNC_ERROR_HANDLING": "what a failed or timed-out NCCL collective does: 3, the default, "
    "tears the process down (torchrun can then restart the job from its last checkpoint); 0 leaves it "
    "hanging",
    "TORCH_DISTRIBUTED_DEBUG": "DETAIL checks that every rank calls the same collectives with the same "
    "shapes and names the parameters DDP found unused; slow, for debugging",
    "init_process_group(timeout=...)": "how long a collective waits for the slowest rank before it fails; "
    "raise it when rank 0 alone does something long (a checkpoint save) while the others wait",
}


def launch_env() -> dict[str, str]:
    """The environment of the launched ranks: one torch thread each (torchrun's default, said explicitly so
    that it does not print a banner), gloo on the loopback interface (``GLOO_SOCKET_IFNAME=lo`` on Linux,
    where the machine's other interfaces may not route back to it), this repository importable."""
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)}
    if sys.platform.startswith("linux"):
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")
    return env


def launch(nproc: int, config: DistConfig, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run ``nproc`` ranks with torchrun and wait; raise with the output's end if any rank failed."""
    return run_command(launch_command(nproc, config), timeout)


def launch_module(nproc: int, module: str, arguments: Sequence[str],
                  timeout: float = 600) -> subprocess.CompletedProcess:
    """``launch`` for another script: ``nproc`` ranks of ``python -m module *arguments``."""
    return run_command(module_command(nproc, module, arguments), timeout)


def run_command(command: list[str], timeout: float) -> subprocess.CompletedProcess:
    """Run a torchrun command with ``launch_env`` and wait; raise with the output's end if a rank failed."""
    done = subprocess.run(command, env=launch_env(), capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"torchrun exited with {done.returncode}:\n{(done.stdout + done.stderr)[-3000:]}")
    return done


def kill_launch(process: subprocess.Popen) -> None:
    """SIGKILL a launch started with ``launch_command``: torchrun *and* every rank it started, each by its
    process id, as a lost machine stops them (killing torchrun alone leaves its ranks running on)."""
    import psutil  # installed with Jupyter's kernel

    try:
        ranks = psutil.Process(process.pid).children(recursive=True)
    except psutil.NoSuchProcess:  # torchrun has ended on its own, and its ranks with it
        ranks = []
    process.kill()  # torchrun first: killed after its ranks, it would report their end and exit with 1
    for rank in ranks:
        with contextlib.suppress(psutil.NoSuchProcess):
            rank.kill()
    process.wait(timeout=60)


def kill_at_step(nproc: int, config: DistConfig, step: int) -> subprocess.CompletedProcess:
    """Launch ``nproc`` ranks and ``kill_launch`` them as soon as rank 0 reports update ``step`` done.
    Returns the launch's exit status (``-9``) and output so far; raises, with the output, when the launch
    ends before reaching ``step`` (a rank failed, or the run is shorter)."""
    process = subprocess.Popen(launch_command(nproc, config), env=launch_env(), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    output = []
    for line in process.stdout:
        output.append(line)
        if line.startswith(f"step {step} "):
            kill_launch(process)
            process.stdout.close()
            return subprocess.CompletedProcess(process.args, process.returncode, "".join(output))
    process.wait()
    raise RuntimeError(f"the launch ended (exit status {process.returncode}) before rank 0 reported step "
                       f"{step}:\n{''.join(output)[-3000:]}")
