"""The built HTML book (`make book` runs first in `make test`): a page per _toc.yml entry, no error output or
traceback anywhere, launch buttons built from the one repository URL, solutions hidden behind a toggle."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from utils import notebooks

ROOT = Path(__file__).resolve().parents[1]
HTML = ROOT / "_build" / "html"


@pytest.fixture(scope="module")
def pages() -> dict[Path, str]:
    if not (HTML / "index.html").is_file():
        pytest.fail(f"no built book at {HTML}: run `make book` first (`make test` does)")
    return {path: (HTML / path.relative_to(ROOT)).with_suffix(".html").read_text(encoding="utf-8")
            for path in notebooks.toc_files(ROOT) if (HTML / path.relative_to(ROOT)).with_suffix(".html").is_file()}


def test_index_and_one_page_per_toc_entry(pages):
    assert (HTML / "index.html").is_file()
    expected = notebooks.toc_files(ROOT)
    missing = [str(p.relative_to(ROOT)) for p in expected if p not in pages]
    assert not missing, f"no HTML page for {missing}"


def test_no_error_output_or_traceback_anywhere(pages):
    scanned = sorted(HTML.rglob("*.html"))
    assert pages and len(scanned) >= len(pages), f"only {len(scanned)} HTML files under {HTML}: nothing to check"
    offenders = []
    for page in scanned:
        text = page.read_text(encoding="utf-8", errors="replace")
        # an error output (myst-nb renders it as a traceback block) or a printed traceback
        for marker in ("Traceback (most recent call last)", 'class="output traceback', "highlight-ipythontb",
                       "ansi-red-fg\">---------------------------------------------------------------------------"):
            if marker in text:
                offenders.append(f"{page.relative_to(HTML)}: {marker}")
    assert not offenders, "\n".join(offenders)


def test_notebook_pages_have_executed_outputs_and_launch_buttons(pages):
    config = notebooks.book_config(ROOT)
    url = config["repository"]["url"].removeprefix("https://github.com/")
    for path, html in pages.items():
        if path.suffix != ".ipynb":
            continue
        assert 'class="cell_output' in html, f"{path.name}: no executed output in the page"
        assert re.search(rf"colab\.research\.google\.com/github/{re.escape(url)}/blob/main/", html), \
            f"{path.name}: no Colab launch button for {url}"
        assert "mybinder.org" in html, f"{path.name}: no Binder launch button"
        assert config["launch_buttons"]["jupyterhub_url"] in html, f"{path.name}: no JupyterHub button"
        assert (HTML / "_sources" / path.relative_to(ROOT)).is_file(), f"{path.name}: no .ipynb to download"


def test_lab_pages_hold_exercises_and_no_solution(pages):
    for path, html in pages.items():
        if path.parent.name == "labs":
            assert "tag_exercise" in html and "NotImplementedError" in html, f"{path.name}: no exercise shown"
            assert "tag_solution" not in html, f"{path.name}: a solution cell reached the book"


def browser() -> str:
    found = os.environ.get("BOOK_BROWSER") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        pytest.fail("no headless browser: install Debian's chromium (`make test` does as root), or point "
                    "BOOK_BROWSER at a Chrome/Chromium binary")
    return found


def rendered_dom(page: Path, profile: Path, *flags: str) -> str:
    """The page's DOM after its scripts ran, from real headless Chromium (flags that work as root, offline)."""
    command = [browser(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               f"--user-data-dir={profile}", "--virtual-time-budget=15000", *flags, "--dump-dom", page.as_uri()]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=True).stdout


def test_math_renders_offline_in_a_real_browser(pages, tmp_path):
    """MathJax is served from the book itself (_ext/offline_mathjax.py): every formula of every page typesets
    in a browser that cannot reach the network."""
    assert (HTML / "_static" / "mathjax" / "MathJax.js").is_file()
    with_math = {path: html.count('class="math notranslate') for path, html in pages.items()}
    with_math = {path: count for path, count in with_math.items() if count}
    assert with_math, "no page has math: the check would prove nothing"
    for path, count in with_math.items():
        page = (HTML / path.relative_to(ROOT)).with_suffix(".html")
        dom = rendered_dom(page, tmp_path / path.stem)
        typeset = len(re.findall(r'id="MathJax-Element-\d+-Frame"', dom))
        assert typeset == count, f"{path.name}: {typeset} of {count} formulas typeset"
        assert 'class="MathJax_Error"' not in dom and 'class="merror"' not in dom, f"{path.name}: a TeX error"


def test_chapter_7_shows_every_screenshot_of_the_real_tensorboard(pages):
    """Each committed screenshot is an image of chapter 7's page, copied into the built book, byte for byte."""
    screenshots = sorted((ROOT / "book" / "images" / "tensorboard").glob("*.png"))
    assert screenshots, "no screenshots in book/images/tensorboard: run `make screenshots` after `make book`"
    html = pages[ROOT / "book" / "07_tensorboard.ipynb"]
    built = {Path(src).name: HTML / "book" / src for src in re.findall(r'<img[^>]+src="([^"]+\.png)"', html)}
    missing = [shot.name for shot in screenshots if shot.name not in built]
    assert not missing, f"screenshots not shown on the chapter 7 page: {missing}"
    for shot in screenshots:
        copy = built[shot.name].resolve()
        assert copy.is_file() and copy.read_bytes() == shot.read_bytes(), f"{shot.name}: not in the built book"


def test_each_chapter_page_states_its_measured_cost(pages):
    """Each chapter's header points to its cost line under the set-up cell: the built page must show the line
    the committed benchmark result gives (``make book`` executes the cell against the same file)."""
    from html import unescape

    from utils import costs

    results = costs.load_results()
    chapters = [path for path in pages if re.fullmatch(r"\d\d_\w+\.ipynb", path.name)]
    assert len(chapters) >= 10, f"only {len(chapters)} chapter pages"
    for path in chapters:
        line = costs.notebook_cost(f"book/{path.stem}", results).removeprefix("**Cost:** ")
        text = unescape(re.sub(r"<[^>]+>", "", pages[path]))
        assert f"Cost: {line.split('`')[0]}" in text, f"{path.name}: the page does not show {line!r}"


def test_the_appendix_shows_every_benchmark_table_as_a_table(pages):
    """Each table of every committed benchmark result is an HTML ``<table>`` in the built appendix, with its
    column headings, not a paragraph of pipes."""
    from utils import costs

    html = pages[ROOT / "book" / "appendix_benchmarks.ipynb"]
    results = costs.load_results()
    titles = [table["title"] for result in results.values() for table in result["tables"]]
    assert titles, "no benchmark result is committed: nothing for the appendix to show"
    assert html.count("<table") >= len(titles), f"{html.count('<table')} tables for {len(titles)} results"
    assert "|---|" not in html and "| --- |" not in html
    for result in results.values():
        for table in result["tables"]:
            first = table["columns"][0]
            assert f"<th>{first}</th>" in html or f"<th>{costs._inline(first)}</th>" in html, table["title"]


# Run in the page once it has loaded and its fonts are ready: open every hidden cell (a reader may), then
# measure each code block, input and output: its scroll width against its width, and how many characters of
# its font fit in it. The result is written into the DOM, where --dump-dom brings it back.
WIDTH_PROBE = """<script>
window.addEventListener("load", () => document.fonts.ready.then(() => {
  document.querySelectorAll("details").forEach((d) => { d.open = true; });
  const probe = document.createElement("span");
  probe.textContent = "0".repeat(100);
  const blocks = [...document.querySelectorAll("div.highlight pre, div.cell_output pre")].map((pre) => {
    const block = {output: pre.closest(".cell_output") !== null, scroll: pre.scrollWidth,
                   client: pre.clientWidth, line: pre.textContent.split("\\n").reduce(
                     (a, b) => (b.length > a.length ? b : a), "")};
    pre.appendChild(probe);
    const style = getComputedStyle(pre);
    const inner = pre.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
    block.columns = inner / (probe.getBoundingClientRect().width / 100);
    pre.removeChild(probe);
    return block;
  });
  const report = document.createElement("pre");
  report.id = "width-report";
  report.textContent = JSON.stringify({width: window.innerWidth, blocks: blocks});
  document.body.appendChild(report);
}));
</script>"""


def code_widths(page: Path, workdir: Path) -> dict:
    """Every code block of ``page`` measured in headless Chromium in a 1,280 x 800 window (a copy of the page
    with the probe above, its links resolved against the built book by a ``<base>``)."""
    from html import unescape

    html = page.read_text(encoding="utf-8")
    html = html.replace("<head>", f'<head><base href="{page.parent.as_uri()}/">', 1)
    workdir.mkdir(parents=True)
    copy = workdir / page.name
    copy.write_text(html.replace("</body>", WIDTH_PROBE + "</body>", 1), encoding="utf-8")
    dom = rendered_dom(copy, workdir / "profile", "--window-size=1280,800")
    found = re.search(r'<pre id="width-report"[^>]*>(.*?)</pre>', dom, re.S)
    assert found, f"{page.name}: the width probe wrote no report (did the page load?)"
    return json.loads(unescape(found.group(1)))


def test_code_fits_the_page_at_1280_pixels(pages, tmp_path):
    """In a 1,280-pixel window no code block of any notebook page scrolls sideways, inputs or outputs, with
    every hidden cell opened; and each input holds the house's 88 columns (tests/test_notebooks.py), so a
    line within the rule never hides behind a scroll bar (_static/book.css makes the room)."""
    notebook_pages = [path for path in pages if path.suffix == ".ipynb"]
    assert notebook_pages, "no notebook page to measure"
    for path in notebook_pages:
        page = (HTML / path.relative_to(ROOT)).with_suffix(".html")
        report = code_widths(page, tmp_path / path.stem)
        assert report["width"] == 1280, f"{path.name}: measured in a {report['width']} px window"
        shown = [block for block in report["blocks"] if block["client"] > 0]
        assert shown, f"{path.name}: no code block measured"
        wide = [f"{'output' if b['output'] else 'input'} {b['scroll']} > {b['client']} px: {b['line'][:60]!r}"
                for b in shown if b["scroll"] > b["client"]]
        assert not wide, f"{path.name}: {len(wide)} code block(s) scroll sideways at 1,280 px: {wide[:5]}"
        narrow = min(b["columns"] for b in shown if not b["output"])
        assert narrow >= 88, f"{path.name}: an input cell holds only {narrow:.1f} characters, under 88"
