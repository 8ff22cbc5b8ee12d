"""What the book's code measured about itself: the latest results of ``benchmarks/`` (the JSON files each
benchmark writes into ``benchmarks/results/``), shown as Markdown, and each notebook's own cost line.

The appendix renders every result with ``result_html`` (a notebook's Markdown output is not parsed for
tables by the book's renderer: pipes would stay pipes); ``benchmarks/report.py`` writes the same content as
Markdown (``result_markdown``) into ``benchmarks/README.md``; a chapter's header states its cost with ``notebook_cost("book/09_scaling")``.
A result that is missing is said to be missing, never an error: a fresh clone has not measured anything.
"""

from __future__ import annotations

import hashlib
import html
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from utils.paths import repo_root

REQUIRED_KEYS = ("benchmark", "date", "command", "machine", "tables")


def results_dir() -> Path | None:
    """``<repository>/benchmarks/results``, or ``None`` outside the repository (e.g. on Colab)."""
    root = repo_root()
    return root / "benchmarks" / "results" if root is not None else None


def load_results(folder: str | Path | None = None) -> dict[str, dict[str, Any]]:
    """``{benchmark name: result}`` for every ``*.json`` in ``folder`` (default ``results_dir()``), sorted
    by name; empty when there is none. A JSON file that is not a benchmark's result raises ``ValueError``."""
    folder = Path(folder) if folder is not None else results_dir()
    results = {}
    for path in sorted(folder.glob("*.json")) if folder is not None and folder.is_dir() else []:
        try:
            result = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path} is not JSON ({exc}): it was not written by a benchmark, or was cut short "
                             "(delete it or rerun its benchmark)") from None
        missing = [key for key in REQUIRED_KEYS if not isinstance(result, dict) or key not in result]
        if missing:
            raise ValueError(f"{path} lacks {missing}: it was not written by a benchmark (delete it or rerun it)")
        results[result["benchmark"]] = result
    return results


def tables_markdown(tables: Sequence[dict[str, Any]]) -> str:
    """Result tables (``{"title", "columns", "rows", "notes"}``) as Markdown: a bold title, a pipe table,
    its notes as a list."""
    parts = []
    for item in tables:
        lines = [f"**{item['title']}**", "", "| " + " | ".join(item["columns"]) + " |",
                 "|" + "|".join("---" for _ in item["columns"]) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in item["rows"]]
        if item.get("notes"):
            lines += [""] + [f"- {note}" for note in item["notes"]]
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def result_markdown(result: dict[str, Any], heading: str = "###") -> str:
    """One benchmark's result: where, when and how it was measured, then its tables."""
    return f"{heading} {result['benchmark']}\n\n{_where(result)}\n\n" + tables_markdown(result["tables"])


def _where(result: dict[str, Any]) -> str:
    """Where, when and how a result was measured: one sentence (Markdown code span for the command)."""
    machine = result["machine"]
    return (f"Measured {result['date']} on {machine['cpu']} ({machine['cpus_usable']} usable CPUs), "
            f"torch {machine['torch']}, load average {machine.get('load_average_start')} at start "
            f"and {machine.get('load_average_end')} at end, with `{result['command']}`.")


def _inline(text: str) -> str:
    """Escaped HTML of one line of the tables' text, with ``code`` spans and **bold** kept."""
    escaped = html.escape(text)
    escaped = re.sub(r"`([^`]+)`", r"<code>\1</code>", escaped)
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", escaped)


def tables_html(tables: Sequence[dict[str, Any]]) -> str:
    """The same tables as ``tables_markdown``, as HTML: a bold title, a ``<table>``, its notes as a list."""
    parts = []
    for item in tables:
        head = "".join(f"<th>{_inline(column)}</th>" for column in item["columns"])
        body = "".join("<tr>" + "".join(f"<td>{_inline(cell)}</td>" for cell in row) + "</tr>"
                       for row in item["rows"])
        notes = "".join(f"<li>{_inline(note)}</li>" for note in item.get("notes", []))
        parts.append(f"<p><strong>{_inline(item['title'])}</strong></p>\n<table>\n<thead><tr>{head}</tr>"
                     f"</thead>\n<tbody>{body}</tbody>\n</table>\n" + (f"<ul>{notes}</ul>\n" if notes else ""))
    return "\n".join(parts)


def result_html(result: dict[str, Any], heading: str = "h2") -> str:
    """``result_markdown`` as HTML, for a notebook's output: the heading, where and how it was measured,
    then its tables."""
    return (f"<{heading}>{_inline(result['benchmark'])}</{heading}>\n<p>{_inline(_where(result))}</p>\n"
            + tables_html(result["tables"]))


def code_digest(notebook: str | Path) -> str:
    """A short SHA-256 of a notebook's code cells (their source only, not outputs or markdown): what a cost
    measured on it depends on."""
    cells = json.loads(Path(notebook).read_text())["cells"]
    code = "\n\0".join("".join(cell["source"]) for cell in cells if cell["cell_type"] == "code")
    return hashlib.sha256(code.encode()).hexdigest()[:16]


def notebook_cost(notebook: str, results: dict[str, dict[str, Any]] | None = None,
                  root: str | Path | None = None) -> str:
    """A chapter's cost line from ``benchmarks/results/notebooks.json``: wall time, CPU time and peak
    memory of executing ``notebook`` (``"book/09_scaling"``, with or without ``.ipynb``, relative to the
    repository ``root``) in a fresh kernel, with the date and machine; or a line saying it was not measured
    yet, or that it failed. When the notebook's code has changed since it was measured, the line says so."""
    results = load_results() if results is None else results
    key = notebook if notebook.endswith(".ipynb") else f"{notebook}.ipynb"
    rows = {row["notebook"]: row for row in results.get("notebooks", {}).get("results", [])}
    if key not in rows:
        return f"**Cost:** not measured yet (`python -m benchmarks.notebooks --only {key}` measures it)."
    row, result = rows[key], results["notebooks"]
    if not row["ok"]:
        return f"**Cost:** its last measurement ({row['date'][:10]}) failed: {row['error']}."
    line = (f"**Cost:** {row['wall_s']:.0f} s wall, {row['cpu_s']:.0f} s of CPU time and "
            f"{row['peak_rss_mib']:,.0f} MiB peak memory in a fresh kernel, measured {row['date'][:10]} on "
            f"{result['machine']['cpus_usable']} CPUs ({result['machine']['cpu']}).")
    root = Path(root) if root is not None else repo_root()
    path = root / key if root is not None else None
    if path is not None and path.is_file() and row.get("code_sha256") not in (None, code_digest(path)):
        line += (" Its code has changed since; `python -m benchmarks.notebooks --only "
                 f"{key}` measures it again.")
    return line
