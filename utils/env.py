"""Reproducibility and an environment check.

``seed_everything`` seeds every random number generator a chapter may use; ``check_environment`` prints one
line per dependency (OK or FAIL, the version found, and what to do when it fails).

Two switches re-run the whole book as another machine would (``python -m benchmarks.robustness`` sets them):
``BOOK_SEED`` is added to every seed a chapter uses (``book_seed``; unset or 0 = the book as published), and
``BOOK_THREADS`` replaces the thread count a chapter chooses for torch and TensorFlow (``threads``).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import platform
import random
import sys
from dataclasses import dataclass

import numpy as np
from packaging.version import Version


def _env_int(name: str, minimum: int, meaning: str) -> int | None:
    """The integer in environment variable ``name``, or ``None`` when unset or empty; a clear error otherwise."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError:
        value = None
    if value is None or value < minimum:
        raise ValueError(f"{name}={raw!r} is not allowed: it must be a whole number >= {minimum} ({meaning}). "
                         f"Unset it to run the book as published.")
    return value


def book_seed(seed: int) -> int:
    """``seed`` plus the offset in ``$BOOK_SEED`` (0 when unset): every seed a chapter uses goes through this,
    so that one variable re-runs the book under other seeds (``BOOK_SEED=1 make book``)."""
    return seed + (_env_int("BOOK_SEED", 0, "an offset added to every seed of the book") or 0)


def threads(default: int) -> int:
    """The CPU threads a chapter gives torch (and TensorFlow): ``$BOOK_THREADS`` when set, else ``default``,
    the count the chapter chose (the summation order, and so the last bits of every result, depend on it)."""
    return _env_int("BOOK_THREADS", 1, "the number of CPU threads for torch and TensorFlow") or default


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy's global generator, torch (CPU and every GPU) and TensorFlow.

    torch and TensorFlow are seeded when they are installed; TensorFlow is seeded only if it is already
    imported, so that a PyTorch-only chapter does not pay TensorFlow's import time (import it first).
    ``PYTHONHASHSEED`` is set for child processes (it cannot change hashing in the running one).
    """
    random.seed(seed)
    np.random.seed(seed)
    os.environ["PYTHONHASHSEED"] = str(seed)
    try:
        import torch
    except ImportError:
        pass
    else:
        torch.manual_seed(seed)  # also seeds every CUDA device
    if "tensorflow" in sys.modules:
        sys.modules["tensorflow"].random.set_seed(seed)


@dataclass(frozen=True)
class Requirement:
    """A dependency: the module to import, its distribution name, the oldest version the book works with,
    and what to do when it is missing or too old."""

    module: str
    distribution: str
    minimum: str
    advice: str


@dataclass(frozen=True)
class CheckResult:
    requirement: Requirement
    ok: bool
    found: str  # the installed version, or "missing"

    def line(self) -> str:
        status = "OK  " if self.ok else "FAIL"
        text = f"{status} {self.requirement.distribution:<14} {self.found:<16} (needs >= {self.requirement.minimum})"
        return text if self.ok else f"{text}\n     -> {self.requirement.advice}"


_INSTALL = "run `make lab` from the repository (it installs requirements.txt), or on Colab re-run the first cell"

REQUIREMENTS: tuple[Requirement, ...] = (
    Requirement("numpy", "numpy", "1.24", _INSTALL),
    Requirement("pandas", "pandas", "2.0", _INSTALL),
    Requirement("matplotlib", "matplotlib", "3.7", _INSTALL),
    Requirement("tensorboardX", "tensorboardX", "2.6.2", f"`pip install tensorboardX`; or {_INSTALL}"),
    Requirement("tensorboard", "tensorboard", "2.15", f"`pip install tensorboard`; or {_INSTALL}"),
    Requirement("torch", "torch", "2.1", "install PyTorch from requirements.txt (pinned: an unpinned torch "
                "downloads a multi-GB CUDA build)"),
    Requirement("tensorflow", "tensorflow", "2.15", "install TensorFlow from requirements.txt "
                "(tensorflow-cpu on Linux x86_64)"),
    Requirement("keras", "keras", "3.0", "Keras 3 comes with TensorFlow >= 2.16; install requirements.txt"),
    Requirement("sklearn", "scikit-learn", "1.3", _INSTALL),
    Requirement("tqdm", "tqdm", "4.60", _INSTALL),
    Requirement("safetensors", "safetensors", "0.4", f"`pip install safetensors`; or {_INSTALL}"),
    Requirement("tokenizers", "tokenizers", "0.15", f"`pip install tokenizers`; or {_INSTALL}"),
)


def _release(version: str) -> tuple[int, ...]:
    """``"2.21.0rc1+cpu"`` -> ``(2, 21, 0)``: the release numbers as ``packaging`` parses them (a local
    label such as ``+cpu`` or a pre-release tag does not make a version older than its release)."""
    return Version(version).release


def _installed_version(req: Requirement) -> str | None:
    # tensorflow-cpu provides the module `tensorflow` under another distribution name
    for name in (req.distribution, f"{req.distribution}-cpu"):
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def check_requirement(req: Requirement) -> CheckResult:
    """Check one dependency: installed, at least the minimum version (newer is fine), and importable."""
    version = _installed_version(req)
    if version is None:
        return CheckResult(req, False, "missing")
    if _release(version) < _release(req.minimum):
        return CheckResult(req, False, version)
    try:
        importlib.import_module(req.module)
    except Exception as exc:  # an installed but broken package is a FAIL, not a crash of the check
        return CheckResult(req, False, f"{version} (import failed: {type(exc).__name__})")
    return CheckResult(req, True, version)


def check_environment(requirements: tuple[Requirement, ...] = REQUIREMENTS, verbose: bool = True) -> list[CheckResult]:
    """Check every dependency of the book and print one line each (OK/FAIL, version, advice on failure).

    Importing TensorFlow takes several seconds; the whole check takes about 10 s on a 2-core CPU.
    """
    results = [check_requirement(req) for req in requirements]
    if verbose:
        print(f"Python {platform.python_version()} on {platform.system()} {platform.machine()}")
        for result in results:
            print(result.line())
        failed = [r.requirement.distribution for r in results if not r.ok]
        print("All dependencies OK." if not failed else f"{len(failed)} problem(s): {', '.join(failed)}")
    return results


def resource_usage() -> dict[str, float]:
    """CPU seconds (user + system) and peak resident memory (MiB) of this process since it started; the
    figures a chapter reports as its cost. Linux and macOS (``resource`` is POSIX-only)."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    peak = usage.ru_maxrss / (1024 * 1024 if sys.platform == "darwin" else 1024)  # bytes on macOS, KiB on Linux
    return {"cpu_s": usage.ru_utime + usage.ru_stime, "peak_rss_mib": peak}


def run_info() -> str:
    """One line for a chapter's end: CPU time and peak RAM of this kernel, and the machine's core count."""
    usage = resource_usage()
    return (f"This kernel used {usage['cpu_s']:.0f} s of CPU time and at most {usage['peak_rss_mib']:.0f} MiB "
            f"of RAM, on {os.cpu_count()} CPU cores ({platform.machine()}).")
