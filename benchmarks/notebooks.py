"""What each notebook costs: wall time, CPU time and peak memory of executing it in a fresh kernel.

Each notebook runs as the book build runs it (``nbclient``, a new ``python3`` kernel, its own folder as the
working directory, headless), with ``runs/`` and ``checkpoints/`` redirected to a temporary folder. CPU
time: user + system of every process the execution started and reaped (the kernel and what it launched,
e.g. torchrun's ranks), from ``getrusage(RUSAGE_CHILDREN)``. Peak memory: the largest sum of resident memory
over the kernel's process tree, sampled every 0.2 s (a peak shorter than that can be missed).

    python -m benchmarks.notebooks                                  # every notebook of book/ and labs/
    python -m benchmarks.notebooks --only book/09_scaling.ipynb labs/lab09_scaling.ipynb
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import nbclient
import nbformat
import psutil

from benchmarks import record
from utils import costs, validate

NAME = "notebooks"
ROOT = Path(__file__).resolve().parents[1]


class TreeMemory:
    """Samples the resident memory of this process's descendants (not of itself) in a thread."""

    def __init__(self, interval: float = 0.2) -> None:
        self.interval, self.peak, self._stop = interval, 0, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            total = 0
            for child in me.children(recursive=True):
                try:
                    total += child.memory_info().rss
                except psutil.Error:  # ended between the listing and the reading
                    continue
            self.peak = max(self.peak, total)
            self._stop.wait(self.interval)

    def __enter__(self) -> TreeMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(path: Path, timeout: int) -> dict[str, Any]:
    """Execute one notebook in a fresh kernel; its wall time, CPU time, peak memory, and any error."""
    digest = costs.code_digest(path)
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, kernel_name="python3", timeout=timeout,
                                     resources={"metadata": {"path": str(path.parent)}})
    error, cpu_before, start = None, _children_cpu(), time.perf_counter()
    with TreeMemory() as memory:
        try:
            client.execute()
        except Exception as exc:  # a failing notebook is reported in its row, the others still run
            first_line = str(exc).splitlines()[0] if str(exc) else ""
            # a failing cell's exception (CellExecutionError carries its name and value)
            error = f"{getattr(exc, 'ename', type(exc).__name__)}: {getattr(exc, 'evalue', first_line)[:200]}"
    name = str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)
    return {"notebook": name, "date": record.now(), "wall_s": time.perf_counter() - start,
            "cpu_s": _children_cpu() - cpu_before, "peak_rss_mib": memory.peak / 2**20,
            "ok": error is None, "error": error, "code_sha256": digest}


def unknown_notebooks(only: Sequence[str]) -> str | None:
    """Why ``--only`` names are not notebooks of the repository, or ``None`` when they all are."""
    missing = [name for name in only if not (ROOT / name).is_file() or not name.endswith(".ipynb")]
    if not missing:
        return None
    return (f"argument --only: no such notebook {missing}: give paths relative to the repository, e.g. "
            "book/09_scaling.ipynb")


def notebooks(only: Sequence[str]) -> list[Path]:
    """Every notebook of book/ and labs/, or those named (paths relative to the repository)."""
    found = sorted(ROOT.glob("book/*.ipynb")) + sorted(ROOT.glob("labs/*.ipynb"))
    if not only:
        return found
    named = [ROOT / name for name in only]
    missing = [str(p.relative_to(ROOT)) for p in named if not p.is_file()]
    if missing:
        raise SystemExit(f"no such notebook: {missing}; give paths relative to the repository, "
                         "e.g. book/09_scaling.ipynb")
    return named


def run(paths: Sequence[Path], timeout: int) -> list[dict[str, Any]]:
    scratch = Path(tempfile.mkdtemp(prefix="bench-notebooks-"))
    saved = {key: os.environ.get(key) for key in ("BOOK_RUNS_DIR", "BOOK_CHECKPOINTS_DIR", "BOOK_HEADLESS",
                                                  "MPLBACKEND")}
    os.environ.update({"BOOK_RUNS_DIR": str(scratch / "runs"), "BOOK_CHECKPOINTS_DIR": str(scratch / "ckpt"),
                       "BOOK_HEADLESS": "1", "MPLBACKEND": "Agg"})  # the kernel inherits these
    try:
        rows = []
        for path in paths:
            rows.append(measure(path, timeout))
            print(f"{rows[-1]['notebook']}: {rows[-1]['wall_s']:.0f} s, {rows[-1]['cpu_s']:.0f} s CPU, "
                  f"{rows[-1]['peak_rss_mib']:.0f} MiB" + ("" if rows[-1]["ok"] else f", {rows[-1]['error']}"),
                  flush=True)
        return rows
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        shutil.rmtree(scratch, ignore_errors=True)


def merged(rows: list[dict[str, Any]], out_dir: str | None) -> list[dict[str, Any]]:
    """With ``--only``, the earlier result's rows of the other notebooks are kept (each row has its date)."""
    earlier = costs.load_results(out_dir if out_dir is not None else record.RESULTS_DIR).get(NAME, {})
    measured = {row["notebook"] for row in rows}
    kept = [row for row in earlier.get("results", []) if row["notebook"] not in measured]
    return sorted(kept + rows, key=lambda row: (not row["notebook"].startswith("book/"), row["notebook"]))


def table(rows: list[dict[str, Any]]) -> dict[str, Any]:
    cells = [[f"`{row['notebook']}`", f"{row['wall_s']:.0f}", f"{row['cpu_s']:.0f}", f"{row['peak_rss_mib']:,.0f}",
              "ok" if row["ok"] else f"failed: {row['error']}"] for row in rows]
    notes = ["A fresh kernel per notebook (nbclient), from the notebook's folder, runs and checkpoints in a "
             "temporary folder; with --only, the other rows come from earlier runs (dates in the JSON). "
             "CPU: user + system time of the kernel and every process it started; memory: "
             "the largest sum of resident memory over the kernel's process tree, sampled every 0.2 s.",
             f"In all: {sum(r['wall_s'] for r in rows):.0f} s wall, {sum(r['cpu_s'] for r in rows):.0f} s CPU."]
    return record.table("Executing each notebook in a fresh kernel",
                        ["notebook", "wall s", "CPU s", "peak memory MiB", "status"], cells, notes)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.notebooks", description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", default=[], help="notebooks to measure, relative to the repository")
    parser.add_argument("--timeout", type=validate.whole_number(1), default=900, help="seconds per cell")
    parser.add_argument("--out-dir", type=validate.folder_path, default=None, help="default: benchmarks/results")
    args = parser.parse_args(argv)
    if unknown_notebooks(args.only):
        parser.error(unknown_notebooks(args.only))
    load_start, machine, started = record.load_average(), record.machine(), time.perf_counter()
    rows = merged(run(notebooks(args.only), args.timeout), args.out_dir) if args.only else \
        run(notebooks(()), args.timeout)
    result = {**record.provenance(NAME, argv, machine, load_start, started), "results": rows,
              "tables": [table(rows)]}
    record.finish(NAME, result, args.out_dir)
    return result


if __name__ == "__main__":
    main()
