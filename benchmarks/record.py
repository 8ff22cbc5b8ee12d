"""What every benchmark records beside its numbers: the machine, its load, the command, the date; and the
one way results are written (``benchmarks/results/<name>.json``) and shown (Markdown tables).

A result file holds ``tables``: a list of ``{"title", "columns", "rows", "notes"}`` with every cell already
formatted as text, so that ``benchmarks/report.py`` can show any benchmark's results without knowing it.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

from utils import costs

T = TypeVar("T")

#: Where ``make benchmarks`` writes its JSON files (each benchmark takes ``--out-dir`` to write elsewhere).
RESULTS_DIR = Path(__file__).resolve().parent / "results"


def cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo (Linux), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def load_average() -> list[float]:
    """The 1-, 5- and 15-minute load averages (runnable processes); empty where the OS has none."""
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except (AttributeError, OSError):
        return []


def machine() -> dict[str, Any]:
    """The machine a result was measured on (torch imported here: every benchmark uses it)."""
    import torch

    affinity = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    return {"cpu": cpu_model(), "logical_cpus": os.cpu_count(),
            "cpus_usable": len(affinity) if affinity is not None else os.cpu_count(),
            "torch": torch.__version__, "torch_default_threads": torch.get_num_threads(),
            "python": platform.python_version(), "platform": platform.platform()}


def command(module: str, argv: Sequence[str] | None) -> str:
    """The command line that reproduces a run: ``python -m <module> <arguments>``."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    return shlex.join(["python", "-m", module, *arguments])


def now() -> str:
    """The current time in UTC, ISO 8601 to the second."""
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def median(values: Sequence[float]) -> float:
    if not values:
        raise ValueError("no timed values: run at least one timed step")
    return statistics.median(values)


def quartiles(values: Sequence[float]) -> tuple[float, float, float]:
    """(first quartile, median, third quartile) by ``statistics.quantiles`` (exclusive method); a single
    value is all three."""
    if not values:
        raise ValueError("no timed values: run at least one timed step")
    if len(values) == 1:
        return (values[0],) * 3
    q1, middle, q3 = statistics.quantiles(values, n=4)
    return q1, middle, q3


def round_order(items: Sequence[T], round_index: int) -> list[T]:
    """The order of a round of interleaved measurements: as given in even rounds, reversed in odd ones, so
    that a drift in the machine's load falls on every item alike."""
    return list(items) if round_index % 2 == 0 else list(items)[::-1]


def provenance(name: str, argv: Sequence[str] | None, machine_info: dict[str, Any], load_start: list[float],
               started: float) -> dict[str, Any]:
    """The fields every result file starts with: the benchmark, the date, the exact command, the machine with
    its load average at the start (``load_start``) and now, and the wall time since ``started``
    (``time.perf_counter()``)."""
    return {"benchmark": name, "date": now(), "command": command(f"benchmarks.{name}", argv),
            "machine": {**machine_info, "load_average_start": load_start, "load_average_end": load_average()},
            "wall_s": time.perf_counter() - started}


def finish(name: str, result: dict[str, Any], out_dir: str | Path | None = None) -> Path:
    """Write the result file (``write_result``), print its tables and where it went."""
    path = write_result(name, result, out_dir)
    print(markdown(result["tables"]))
    print(f"wrote {path} ({result['wall_s']:.0f} s)")
    return path


def write_result(name: str, result: dict[str, Any], out_dir: str | Path | None = None) -> Path:
    """Write ``result`` as ``<out_dir>/<name>.json`` (default ``benchmarks/results``), atomically."""
    folder = Path(out_dir) if out_dir is not None else RESULTS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    tmp.replace(path)
    return path


def table(title: str, columns: Sequence[str], rows: Sequence[Sequence[str]],
          notes: Sequence[str] = ()) -> dict[str, Any]:
    """One table of a result file; every row must have one cell per column."""
    for row in rows:
        if len(row) != len(columns):
            raise ValueError(f"row {list(row)} has {len(row)} cells for {len(columns)} columns {list(columns)}")
    return {"title": title, "columns": list(columns), "rows": [[str(cell) for cell in row] for row in rows],
            "notes": list(notes)}


def markdown(tables: Sequence[dict[str, Any]]) -> str:
    """The tables as Markdown (``utils.costs.tables_markdown``, which the book's appendix uses too)."""
    return costs.tables_markdown(tables)
