"""The screenshot tool (``utils.tb.screenshots``, ``make screenshots``) photographs the real TensorBoard over
a log folder, and the committed pictures the TensorBoard chapter embeds are real, non-blank dashboards."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import numpy as np
import pytest
from PIL import Image

from utils import tb
from utils.tb import screenshots

ROOT = Path(__file__).resolve().parents[1]
CHAPTER = ROOT / "book" / "07_tensorboard.ipynb"
IMAGES = ROOT / "book" / "images" / "tensorboard"


def write_small_logdir(root: Path) -> None:
    """Two runs named as the chapter's: a sweep run with scalars and histograms, a CNN run with a
    custom-scalars layout."""
    with tb.open_run("ch07", "sweep-lr=0.1", root=root) as writer:
        for step in range(30):
            writer.add_scalar("train/loss", 2.0 * 0.9**step, step)
            writer.add_scalar("val/loss", 2.1 * 0.92**step, step)
        writer.add_histogram("activations/hidden", np.random.default_rng(0).exponential(size=500), 0)
    with tb.open_run("ch07", "cnn", root=root) as writer:
        writer.add_custom_scalars({"Losses": {"train vs validation": ["Multiline", ["train/loss", "val/loss"]]}})
        for step in range(30):
            writer.add_scalar("train/loss", 1.0 / (step + 1), step)
            writer.add_scalar("val/loss", 1.2 / (step + 1), step)


def chosen(*names: str) -> list[screenshots.Dashboard]:
    return [d for d in screenshots.DASHBOARDS if d.name in names]


@pytest.mark.server
@pytest.mark.slow
def test_tool_photographs_the_dashboards_of_the_runs_the_server_listed(tmp_path):
    try:
        screenshots.find_browser()
    except FileNotFoundError as missing:
        pytest.fail(str(missing))
    logdir = tmp_path / "runs"
    write_small_logdir(logdir)
    report = screenshots.take_screenshots(logdir, tmp_path / "png", chosen("custom_scalars", "histograms"))
    assert list(report) == ["custom_scalars", "histograms"]
    assert report["custom_scalars"]["runs"] == ["ch07/cnn"]  # what the server's /data/runs listed
    assert report["histograms"]["runs"] == ["ch07/sweep-lr=0.1"]
    for name, entry in report.items():
        assert entry["plugin_active"], f"{name}: TensorBoard reports its plugin inactive"
        assert screenshots.picture_problem(entry["png"]) is None
        assert Image.open(entry["png"]).size == screenshots.WINDOW


def test_a_blank_page_is_recognised(tmp_path):
    """The check the tool and the tests rely on fails on what a failed render looks like."""
    header_only = np.full((900, 1280, 3), 245, dtype=np.uint8)
    header_only[: screenshots.HEADER_PX] = (245, 124, 0)  # the orange bar and nothing below
    Image.fromarray(header_only).save(tmp_path / "blank.png")
    assert "looks blank" in screenshots.picture_problem(tmp_path / "blank.png")
    noise = np.random.default_rng(0).integers(0, 256, (300, 400, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "busy.png")
    assert screenshots.picture_problem(tmp_path / "busy.png") is None


@pytest.mark.parametrize("dashboard", screenshots.DASHBOARDS, ids=[d.name for d in screenshots.DASHBOARDS])
def test_committed_screenshot_is_a_real_picture_the_chapter_shows(dashboard):
    png = IMAGES / f"{dashboard.name}.png"
    assert png.is_file(), f"{png.relative_to(ROOT)} is missing: run `make screenshots` after `make book`"
    with Image.open(png) as image:
        image.verify()  # a valid PNG
    with Image.open(png) as image:
        assert image.format == "PNG" and image.size == screenshots.WINDOW
    assert screenshots.picture_problem(png) is None
    markdown = "\n".join(cell.source for cell in nbformat.read(CHAPTER, as_version=4).cells
                         if cell.cell_type == "markdown")
    assert re.search(rf"!\[[^\]]*\]\(images/tensorboard/{re.escape(dashboard.name)}\.png\)", markdown), \
        f"{CHAPTER.name} does not show images/tensorboard/{dashboard.name}.png"


def test_every_picture_the_chapter_shows_is_made_by_the_tool():
    markdown = "\n".join(cell.source for cell in nbformat.read(CHAPTER, as_version=4).cells
                         if cell.cell_type == "markdown")
    shown = set(re.findall(r"\]\(images/tensorboard/([\w-]+)\.png\)", markdown))
    assert shown == {d.name for d in screenshots.DASHBOARDS}
