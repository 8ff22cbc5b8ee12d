"""Links between notebooks say where they go: every markdown link to a notebook names it by its real title
(its first ``# `` heading, with or without the number prefix "Lab N: " or "N. "), every link resolves, and
every lab is linked from at least one chapter."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted([*ROOT.glob("book/*.ipynb"), *ROOT.glob("labs/*.ipynb")])
SOURCES = [*NOTEBOOKS, *sorted(ROOT.glob("book/*.md"))]
LINK = re.compile(r"\[([^\]]+)\]\(([^)\s]+\.ipynb)(#[^)\s]*)?\)")
NUMBER_PREFIX = re.compile(r"^(Lab \d+[a-z]?: |\d+\. )")


def markdown_of(path: Path) -> str:
    if path.suffix == ".md":
        return path.read_text(encoding="utf-8")
    nb = nbformat.read(path, as_version=4)
    return "\n".join(cell.source for cell in nb.cells if cell.cell_type == "markdown")


def title_of(path: Path) -> str:
    for line in markdown_of(path).splitlines():
        if line.startswith("# "):
            return line[2:].strip()
    raise AssertionError(f"{path.relative_to(ROOT)} has no '# ' title")


def names(text: str, title: str) -> bool:
    """Whether a link text is the title, or the title without its number prefix (first letter in
    either case)."""
    text = " ".join(text.split())
    short = NUMBER_PREFIX.sub("", title)
    return text == title or text[:1].lower() + text[1:] == short[:1].lower() + short[1:]


def links(path: Path) -> list[tuple[str, Path]]:
    """(link text, resolved target) of every markdown link to a notebook in ``path``."""
    return [(" ".join(m.group(1).split()), (path.parent / m.group(2)).resolve())
            for m in LINK.finditer(markdown_of(path))]


def test_titles_are_read():
    assert all(title_of(path) for path in NOTEBOOKS)
    assert names("Pretraining a small GPT", "5. Pretraining a small GPT")
    assert names("Your first TensorBoard run", "Lab 0: your first TensorBoard run")
    assert not names("Schedules and gradient accumulation", "Lab 4: measuring a run honestly")


@pytest.mark.parametrize("path", SOURCES, ids=[str(p.relative_to(ROOT)) for p in SOURCES])
def test_every_link_to_a_notebook_names_it_by_its_title(path):
    problems = []
    for text, target in links(path):
        if not target.is_file():
            problems.append(f"[{text}] points to {target}, which does not exist")
        elif not names(text, title_of(target)):
            problems.append(f"[{text}] links to {target.relative_to(ROOT)}, whose title is "
                            f"{title_of(target)!r}")
    assert not problems, "\n".join(problems)


def test_every_lab_is_linked_from_a_chapter():
    linked = {target for chapter in ROOT.glob("book/*.ipynb") for _, target in links(chapter)}
    orphans = [lab.name for lab in ROOT.glob("labs/*.ipynb") if lab.resolve() not in linked]
    assert not orphans, f"labs no chapter links to: {sorted(orphans)}"
