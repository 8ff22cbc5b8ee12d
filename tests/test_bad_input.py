"""Bad input, as a reader meets it: every command (``python -m utils.*``, ``python -m benchmarks.*``) answers
a bad flag, a bad environment variable or a damaged file handed in with exit status 2 and one message that
names it and what is allowed or what to do, never a traceback; and nothing already written is changed or
deleted on the way (the whole folder the command ran in, its runs and checkpoints included, is byte-identical
afterwards, with nothing new in it). The library functions a notebook calls with a file (weights, data,
checkpoints) raise the book's own errors, naming the file.

Each row of ``COMMANDS`` is one subprocess, run from a scratch folder that holds every file handed in, with
``BOOK_RUNS_DIR`` and ``BOOK_CHECKPOINTS_DIR`` inside it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import pytest
import torch

from utils import checkpoint as ckpt
from utils.gpt import GPT, GPTConfig

REPO = Path(__file__).resolve().parents[1]
SMALL = GPTConfig(vocab_size=65, block_size=32, n_layer=2, n_head=2, n_embd=32)  # not the shipped shape
EVENT = "events.out.tfevents.1700000000.host"  # the name tensorboardX gives an event file


# --------------------------------------------------------------------------------------------- the table


@dataclass(frozen=True)
class Command:
    """One row: what is typed after ``python -m``, the environment it adds, the exit status expected and
    words the error must contain."""

    name: str
    argv: tuple[str, ...]
    words: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)
    status: int = 2


def row(name: str, argv: str, *words: str, **env: str) -> Command:
    return Command(name, tuple(argv.split()), words, env)


PRETRAIN = "utils.pretrain --out out/x.safetensors"
RESUME = f"{PRETRAIN} --resume --checkpoint-dir"
DIST_RESUME = "utils.distributed --log-run t/r --steps 20 --resume --checkpoint-dir"
SHOTS = "utils.tb.screenshots --runs events --only text"
REPORT = "benchmarks.report --readme readme_good.md --main-readme readme_good_too.md --results-dir"

COMMANDS = [
    # utils.pretrain: flags, the environment, and checkpoints that are not this run's (its log must stay)
    row("pretrain-steps-negative", f"{PRETRAIN} --steps -5", "argument --steps", "'-5'", ">= 1"),
    row("pretrain-steps-zero", f"{PRETRAIN} --steps 0", "argument --steps", "'0'", ">= 1"),
    row("pretrain-out-not-safetensors", "utils.pretrain --out out/x.pt", "argument --out", ".safetensors"),
    row("pretrain-out-folder-missing", "utils.pretrain --out nowhere/x.safetensors", "argument --out",
        "does not exist"),
    row("pretrain-device-unknown", f"{PRETRAIN} --device gpu", "--device 'gpu'", "'cpu'"),
    row("pretrain-checkpoints-dir-env-file", PRETRAIN, "BOOK_CHECKPOINTS_DIR", "not a folder",
        BOOK_CHECKPOINTS_DIR="a_file"),
    row("pretrain-resume-other-model", f"{RESUME} checkpoints/other_model", "step_000010.pt", "another model",
        "n_layer", "without --resume"),
    row("pretrain-resume-other-tokenizer", f"{RESUME} checkpoints/other_tokenizer", "another tokenizer",
        "chars"),
    row("pretrain-resume-newer-format", f"{RESUME} checkpoints/newer_format", "newer", "format 99"),
    row("pretrain-resume-truncated", f"{RESUME} checkpoints/truncated", "no readable checkpoint",
        "step_000010.pt"),
    row("pretrain-resume-finished", f"{RESUME} checkpoints/finished --steps 10", "argument --steps",
        "nothing to resume"),
    # utils.distributed: its settings are DistConfig's, checked once
    row("distributed-steps-zero", "utils.distributed --steps 0", "--steps 0", ">= 1"),
    row("distributed-heads-do-not-divide", "utils.distributed --n-head 3", "--n-head 3", "--n-embd 64",
        "divisible"),
    row("distributed-mode-unknown", "utils.distributed --mode zero", "--mode 'zero'", "'by-hand'"),
    row("distributed-warmup-too-long", "utils.distributed --steps 10 --warmup-steps 30", "--warmup-steps 30",
        "--steps 10"),
    row("distributed-log-run-no-chapter", "utils.distributed --log-run r", "--log-run 'r'", "<chapter>/<run>"),
    row("distributed-checkpoints-nowhere", "utils.distributed --checkpoint-every 2", "--checkpoint-dir"),
    row("distributed-batch-does-not-split", "utils.distributed --global-batch 15", "--global-batch",
        "WORLD_SIZE=2", "multiple of 2", WORLD_SIZE="2"),
    row("distributed-runs-dir-env-file", "utils.distributed --log-run t/r", "BOOK_RUNS_DIR", "not a folder",
        BOOK_RUNS_DIR="a_file"),
    row("distributed-resume-other-model", f"{DIST_RESUME} checkpoints/dist_other", "step_000010.pt",
        "another model", "n_layer 3 there, 2 here"),
    row("distributed-resume-pretrain-checkpoint", f"{DIST_RESUME} checkpoints/other_model",
        "weights of another model", "without --resume"),
    row("distributed-resume-nothing", f"{DIST_RESUME} empty_dir", "no readable checkpoint"),
    # utils.diagnose: folders and event files that cannot be diagnosed
    row("diagnose-empty-event-file", "utils.diagnose empty_event", EVENT, "empty (0 bytes)"),
    row("diagnose-truncated-event-file", "utils.diagnose truncated_event", EVENT, "last record is incomplete"),
    row("diagnose-random-bytes", "utils.diagnose random_event", EVENT, "damaged header"),
    row("diagnose-event-file-path", f"utils.diagnose events/run/{EVENT}", "is an event file, not a folder",
        "events/run"),
    row("diagnose-empty-folder", "utils.diagnose empty_dir", "no event file", "it is empty"),
    row("diagnose-folder-of-other-files", "utils.diagnose no_events", "no event file", "notes.txt"),
    row("diagnose-tag-unknown-role", "utils.diagnose events --tag los=train/loss", "argument --tag",
        "'los=train/loss'", "unknown role 'los'", "val_loss"),
    row("diagnose-tag-missing", "utils.diagnose events --tag val_loss=Loss/test", "argument --tag",
        "'val_loss=Loss/test'", "no run", "train/loss"),
    # utils.tb.screenshots: refused before a server starts
    row("screenshots-runs-not-runs", "utils.tb.screenshots --runs empty_dir", "argument --runs", "empty_dir"),
    row("screenshots-out-is-a-file", f"{SHOTS} --out a_file", "argument --out", "is a file"),
    row("screenshots-browser-env-missing", f"{SHOTS} --out pictures", "BOOK_BROWSER", "/nowhere/chromium",
        BOOK_BROWSER="/nowhere/chromium"),
    row("screenshots-unknown-dashboard", "utils.tb.screenshots --only nope", "argument --only", "nope"),
    row("notebooks-unknown-command", "utils.notebooks nope", "invalid choice", "'strip'"),
    # benchmarks
    row("throughput-steps-zero", "benchmarks.train_throughput --steps 0", "argument --steps", "'0'"),
    row("throughput-out-dir-is-a-file", "benchmarks.train_throughput --out-dir a_file", "argument --out-dir",
        "is a file"),
    row("logging-unknown-writer", "benchmarks.logging_overhead --writers nope", "argument --writers", "nope"),
    row("logging-no-values", "benchmarks.logging_overhead --values 0", "argument --values", ">= 1"),
    row("scaling-one-step", "benchmarks.scaling --steps 1", "argument --steps", ">= 2"),
    row("comm-without-torchrun", "utils.comm --out comm.json", "torch.distributed.run", "--nproc_per_node"),
    row("comm-out-in-no-folder", "utils.comm --out nowhere/comm.json", "argument --out", "existing folder"),
    row("comm-sizes-not-numbers", "utils.comm --out comm.json --sizes 16,x", "argument --sizes", "'16,x'"),
    row("communication-rounds-zero", "benchmarks.communication --rounds 0", "argument --rounds", ">= 1"),
    row("batch-scaling-seeds-not-numbers", "benchmarks.batch_scaling --seeds 0,x", "argument --seeds",
        "comma-separated whole numbers"),
    row("batch-scaling-steps-too-few", "benchmarks.batch_scaling --steps 5", "argument --steps", ">= 21"),
    row("notebooks-bench-unknown", "benchmarks.notebooks --only book/nope.ipynb", "argument --only",
        "book/nope.ipynb"),
    row("notebooks-bench-timeout-zero", "benchmarks.notebooks --timeout 0", "argument --timeout", ">= 1"),
    row("report-no-results-folder", f"{REPORT} nowhere", "argument --results-dir", "not a folder"),
    row("report-result-not-json", f"{REPORT} results_bad", "broken.json", "not JSON"),
    row("report-readme-without-markers", "benchmarks.report --results-dir results_ok --readme readme_bad.md "
        "--main-readme readme_good.md", "argument --readme", "readme_bad.md", "exactly one"),
    row("vs-nanogpt-no-checkout", "benchmarks.vs_nanogpt --nanogpt empty_dir", "argument --nanogpt",
        "has no model.py"),
    row("vs-nanogpt-pairs-too-few", "benchmarks.vs_nanogpt --nanogpt empty_dir --pairs 2", "argument --pairs",
        ">= 4"),
    row("robustness-jobs-zero", "benchmarks.robustness --jobs 0", "--jobs 0", "at least 1"),
    row("robustness-unknown-notebook", "benchmarks.robustness --only book/nope.ipynb", "argument --only",
        "book/nope.ipynb"),
    row("zoo-unknown-recipe", "benchmarks.diagnose_zoo --recipes healthy-warmup,nope", "argument --recipes",
        "'nope'", "lr_too_high"),
    row("zoo-seeds-not-numbers", "benchmarks.diagnose_zoo --seeds 0,x", "argument --seeds", "'0,x'"),
    row("speedrun-no-checkout", "benchmarks.speedrun --nanogpt empty_dir", "argument --nanogpt", "has no model.py"),
    row("speedrun-repeats-zero", "benchmarks.speedrun --nanogpt empty_dir --repeats 0", "argument --repeats",
        ">= 1"),
]


# --------------------------------------------------------------------------------------------- the files


def _event_file(folder: Path) -> bytes:
    """The bytes of a small, whole event file written by tensorboardX."""
    from tensorboardX import SummaryWriter

    with SummaryWriter(str(folder)) as writer:
        for step in range(5):
            writer.add_scalar("train/loss", 1.0 / (step + 1), step)
    return next(folder.glob("events.out.tfevents.*")).read_bytes()


def _put(path: Path, data: bytes | str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)


def _write_event_inputs(ws: Path, scratch: Path) -> None:
    good = _event_file(scratch / "tb")
    _put(ws / "events" / "run" / EVENT, good)
    _put(ws / "empty_event" / "run" / EVENT, b"")
    _put(ws / "truncated_event" / "run" / EVENT, good[:-7])
    _put(ws / "random_event" / "run" / EVENT, os.urandom(4096))
    _put(ws / "no_events" / "notes.txt", "what I tried\n")
    _put(ws / "no_events" / "data.csv", "step,loss\n0,1.0\n")
    (ws / "empty_dir").mkdir()
    _put(ws / "out" / "x_run" / "pretrain" / EVENT, good)  # an earlier run's log: resumes must not touch it
    _put(ws / "runs" / "t" / "r" / EVENT, good)


def _save(folder: Path, config: GPTConfig, extra: dict, step: int = 10) -> Path:
    torch.manual_seed(0)
    return ckpt.save_checkpoint(ckpt.step_path(folder, step), model=GPT(config), step=step, extra=extra,
                                include_rng=False)


def _write_checkpoints(ws: Path) -> None:
    from utils.distributed import DistConfig
    from utils.pretrain import PretrainSetup, shakespeare_data

    tokenizer = shakespeare_data()[0].to_dict()
    folder = ws / "checkpoints"
    shipped = PretrainSetup()
    _save(folder / "other_model", SMALL, {"setup": PretrainSetup(model=SMALL).to_dict(), "tokenizer": tokenizer})
    other = {"kind": "char", "chars": tokenizer["chars"][::-1]}
    _save(folder / "other_tokenizer", shipped.model, {"setup": shipped.to_dict(), "tokenizer": other})
    _save(folder / "finished", shipped.model, {"setup": shipped.to_dict(), "tokenizer": tokenizer})
    newer = _save(folder / "newer_format", SMALL, {})
    state = torch.load(newer, weights_only=True)
    torch.save({**state, "format_version": 99}, newer)
    cut = _save(folder / "truncated", SMALL, {})
    cut.write_bytes(cut.read_bytes()[:1000])
    dist = DistConfig(model=replace(DistConfig().model, n_layer=3))
    _save(folder / "dist_other", dist.model, {"distributed": asdict(dist)})


def _write_other_inputs(ws: Path) -> None:
    _put(ws / "a_file", "not a folder\n")
    _put(ws / "results_bad" / "broken.json", '{"benchmark": "cut sho')
    (ws / "results_ok").mkdir()
    from benchmarks.report import BEGIN, END, NOTEBOOKS_BEGIN, NOTEBOOKS_END

    both = f"# kept\n{BEGIN}\nold tables\n{END}\n{NOTEBOOKS_BEGIN}\nold costs\n{NOTEBOOKS_END}\n"
    _put(ws / "readme_good.md", both)
    _put(ws / "readme_good_too.md", both)
    _put(ws / "readme_bad.md", "# a README without the markers\n")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    ws = tmp_path_factory.mktemp("reader")
    scratch = tmp_path_factory.mktemp("scratch")
    _write_event_inputs(ws, scratch)
    _write_checkpoints(ws)
    _write_other_inputs(ws)
    return ws


def snapshot(folder: Path) -> dict[str, str]:
    """Every file and folder below ``folder``: the SHA-256 of each file's bytes, "dir" for a folder."""
    return {str(p.relative_to(folder)): "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*"))}


@dataclass
class Outcome:
    done: subprocess.CompletedProcess
    before: dict[str, str]
    after: dict[str, str]


def run_command(command: Command, workspace: Path, rows: Path) -> Outcome:
    """Run one row in its own copy of the workspace (hard links: cheap, and a file replaced or added shows
    in this copy only), with the runs and checkpoints folders inside it."""
    cwd = rows / command.name
    shutil.copytree(workspace, cwd, copy_function=os.link)
    env = {k: v for k, v in os.environ.items()
           if k not in ("WORLD_SIZE", "BOOK_BROWSER", "BOOK_SEED", "BOOK_THREADS")}
    env.update({"BOOK_RUNS_DIR": str(cwd / "runs"), "BOOK_CHECKPOINTS_DIR": str(cwd / "ckpt"),
                "PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "1", **command.env})
    before = snapshot(cwd)
    done = subprocess.run([sys.executable, "-m", *command.argv], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)
    return Outcome(done, before, snapshot(cwd))


@pytest.fixture(scope="module")
def outcomes(workspace, tmp_path_factory) -> dict[str, Outcome]:
    """Every row, a few at a time: each subprocess spends seconds importing torch."""
    rows = tmp_path_factory.mktemp("rows")
    with ThreadPoolExecutor(max_workers=min(4, len(os.sched_getaffinity(0)))) as pool:
        futures = {c.name: pool.submit(run_command, c, workspace, rows) for c in COMMANDS}
        return {name: future.result() for name, future in futures.items()}


# --------------------------------------------------------------------------------------------- the tests


@pytest.mark.slow
@pytest.mark.parametrize("command", COMMANDS, ids=[c.name for c in COMMANDS])
def test_command_refuses_bad_input_clearly_and_changes_nothing(command, outcomes):
    outcome = outcomes[command.name]
    done, typed = outcome.done, "python -m " + " ".join(command.argv)
    assert done.returncode == command.status, f"{typed}: exit {done.returncode}\n{done.stderr[-2000:]}"
    assert "Traceback" not in done.stderr, f"{typed} printed a traceback:\n{done.stderr[-3000:]}"
    for words in command.words:
        assert words in done.stderr, f"{typed}: {words!r} not in its error:\n{done.stderr[-2000:]}"
    before, after = outcome.before, outcome.after
    assert after == before, (f"{typed} changed {sorted(k for k in before if after.get(k) != before[k])}, "
                             f"added {sorted(set(after) - set(before))}")


def test_every_entry_point_has_a_row():
    """Each module a reader runs with ``python -m`` (a ``__main__.py``, or a module that runs itself)
    appears in the table."""
    modules = {path.relative_to(REPO).with_suffix("").as_posix().replace("/", ".").removesuffix(".__main__")
               for folder in ("utils", "benchmarks") for path in (REPO / folder).rglob("*.py")
               if path.name == "__main__.py" or '__name__ == "__main__"' in path.read_text()}
    assert {"utils.diagnose", "utils.pretrain", "benchmarks.report"} <= modules
    covered = {command.argv[0] for command in COMMANDS}
    assert modules - covered == set(), f"commands without a row: {sorted(modules - covered)}"


# --------------------------------------------------------------------------------------------- library calls


def _safetensors_with(folder: Path, metadata: dict[str, str]) -> Path:
    """The shipped weights' tensors with other metadata."""
    from safetensors.torch import load_file, save_file

    from utils.pretrained import PRETRAINED_PATH

    path = folder / "gpt.safetensors"
    save_file(load_file(str(PRETRAINED_PATH)), str(path), metadata=metadata)
    return path


def _shipped_metadata() -> dict[str, str]:
    from safetensors import safe_open

    from utils.pretrained import PRETRAINED_PATH

    with safe_open(str(PRETRAINED_PATH), framework="pt") as handle:
        return dict(handle.metadata())


def truncated_weights(folder: Path) -> Path:
    from utils.pretrained import PRETRAINED_PATH

    path = folder / "gpt.safetensors"
    path.write_bytes(PRETRAINED_PATH.read_bytes()[:100_000])
    return path


def weights_without_metadata(folder: Path) -> Path:
    return _safetensors_with(folder, {"format": "pt"})


def weights_of_another_shape(folder: Path) -> Path:
    import json

    metadata = _shipped_metadata()
    metadata["model_config"] = json.dumps({**json.loads(metadata["model_config"]), "n_layer": 2})
    return _safetensors_with(folder, metadata)


def _load_weights(path: Path) -> None:
    from utils.pretrained import load_pretrained

    load_pretrained(path, verify=False)  # the hash would catch it first: this is what follows it


def _data_copy(folder: Path, name: str, change) -> Path:
    from utils.datasets import DATA_DIR

    path = folder / name
    path.write_bytes(change((DATA_DIR / name).read_bytes()))
    return path


@dataclass(frozen=True)
class Call:
    """A library call on a file handed in: how to make the file, the call, the error and words expected."""

    name: str
    make: object  # (folder) -> the path handed in
    call: object  # (path) -> None
    error: str  # the exception's class name
    words: tuple[str, ...]


def _shakespeare(path: Path) -> None:
    from utils.datasets import load_tinyshakespeare

    load_tinyshakespeare(path)


def _kjv(path: Path) -> None:
    from utils.datasets import load_kjv

    load_kjv(path)


def _checkpoint_into_small_model(path: Path) -> None:
    ckpt.load_checkpoint(path, model=GPT(SMALL), restore_rng=False)


def _checkpoint_of(config: GPTConfig, version: int = ckpt.FORMAT_VERSION):
    def make(folder: Path) -> Path:
        path = _save(folder, config, {})
        if version != ckpt.FORMAT_VERSION:
            torch.save({**torch.load(path, weights_only=True), "format_version": version}, path)
        return path

    return make


def _truncated_checkpoint(folder: Path) -> Path:
    path = _checkpoint_of(SMALL)(folder)
    path.write_bytes(path.read_bytes()[:500])
    return path


CALLS = [
    Call("weights-truncated", truncated_weights, _load_weights, "CheckpointCorruptError",
         ("gpt.safetensors", "truncated", "make pretrained")),
    Call("weights-wrong-metadata", weights_without_metadata, _load_weights, "CheckpointCorruptError",
         ("gpt.safetensors", "not the book's GPT weights", "model_config")),
    Call("weights-metadata-another-shape", weights_of_another_shape, _load_weights, "CheckpointMismatchError",
         ("gpt.safetensors", "do not fit")),
    Call("shakespeare-edited", lambda f: _data_copy(f, "tinyshakespeare.txt", lambda b: b.replace(b"\n", b"\r\n")),
         _shakespeare, "IntegrityError", ("tinyshakespeare.txt", "SHA-256", "Restore it")),
    Call("shakespeare-truncated", lambda f: _data_copy(f, "tinyshakespeare.txt", lambda b: b[:1000]),
         _shakespeare, "IntegrityError", ("tinyshakespeare.txt", "modified or truncated")),
    Call("kjv-truncated", lambda f: _data_copy(f, "kjv.jsonl.gz", lambda b: b[:1000]), _kjv, "IntegrityError",
         ("kjv.jsonl.gz", "modified or truncated")),
    Call("checkpoint-truncated", _truncated_checkpoint, _checkpoint_into_small_model, "CheckpointCorruptError", ("step_000010.pt", "truncated")),
    Call("checkpoint-newer-format", _checkpoint_of(SMALL, version=99), _checkpoint_into_small_model,
         "CheckpointFormatError", ("step_000010.pt", "newer version")),
    Call("checkpoint-other-model", _checkpoint_of(GPTConfig(65, 32, 1, 2, 32)), _checkpoint_into_small_model,
         "CheckpointMismatchError", ("step_000010.pt", "another model", "transformer.h.1")),
]


@pytest.mark.parametrize("call", CALLS, ids=[c.name for c in CALLS])
def test_library_names_the_bad_file_and_leaves_it_alone(call, tmp_path):
    path = call.make(tmp_path)
    before = snapshot(tmp_path)
    with pytest.raises(Exception) as raised:
        call.call(path)
    assert type(raised.value).__name__ == call.error, repr(raised.value)
    for words in call.words:
        assert words in str(raised.value), f"{words!r} not in {raised.value}"
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize(("variable", "value", "read", "words"), [
    ("BOOK_SEED", "one", "utils.env:book_seed", "whole number >= 0"),
    ("BOOK_THREADS", "0", "utils.env:threads", "whole number >= 1"),
    ("BOOK_RUNS_DIR", "a_file", "utils.paths:runs_dir", "not a folder"),
    ("BOOK_CHECKPOINTS_DIR", "a_file", "utils.paths:checkpoints_dir", "not a folder"),
])
def test_environment_variables_are_named_in_their_errors(variable, value, read, words, tmp_path, monkeypatch):
    import importlib

    (tmp_path / "a_file").write_text("x")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(variable, value)
    module, function = read.split(":")
    reader = getattr(importlib.import_module(module), function)
    with pytest.raises(ValueError, match=f"{variable}='{value}' is not allowed") as raised:
        reader(1) if module == "utils.env" else reader()
    assert words in str(raised.value)


def test_settings_objects_check_themselves():
    from utils.distributed import DistConfig
    from utils.loop import TrainConfig
    from utils.pretrain import PretrainSetup

    cases = [(lambda: TrainConfig(max_steps=0), "max_steps=0 is not allowed: give a whole number >= 1"),
             (lambda: TrainConfig(max_steps=10, warmup_steps=20), "warmup_steps=20 is more than max_steps=10"),
             (lambda: TrainConfig(max_steps=10, lr=1e-3, min_lr=1e-2), "min_lr=0.01 is above lr=0.001"),
             (lambda: TrainConfig(max_steps=10, autocast="fp16"), "autocast='fp16' is not allowed"),
             (lambda: TrainConfig(max_steps=10, device="gpu"), "device='gpu' is not a device"),
             (lambda: TrainConfig(max_steps=10, checkpoint_every=5), "needs checkpoint_dir"),
             (lambda: GPTConfig(65, 32, 2, 3, 64), "n_head=3 is not allowed with n_embd=64"),
             (lambda: GPTConfig(65, 0, 2, 2, 64), "block_size=0 is not allowed"),
             (lambda: GPTConfig(65, 32, 2, 2, 64, dropout=1.0), "dropout=1.0 is not allowed"),
             (lambda: PretrainSetup(batch_size=0), "batch_size=0 is not allowed"),
             (lambda: PretrainSetup().with_training(max_steps=10), "warmup_steps=100 is more than max_steps=10"),
             (lambda: DistConfig(global_batch=0), "global_batch=0 is not allowed: give a whole number >= 1")]
    for make, words in cases:
        with pytest.raises(ValueError) as raised:
            make()
        assert words in str(raised.value)


def test_intact_files_still_load(tmp_path):
    """The checks refuse only what is damaged: the shipped weights and a fitting checkpoint load."""
    from utils.pretrained import load_pretrained

    model, _, info = load_pretrained()
    assert info["source"] == "checkpoint" and model.config.n_layer == 4
    path = _checkpoint_of(SMALL)(tmp_path)
    assert ckpt.load_checkpoint(path, model=GPT(SMALL), restore_rng=False)["step"] == 10
