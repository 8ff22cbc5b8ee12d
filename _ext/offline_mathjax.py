"""Sphinx extension: serve MathJax from the built book itself, so that math renders without a network.

The MathJax 2.7 files come from the PyPI package ``jupyter-server-mathjax`` (pinned in requirements.txt) and
are copied to ``_static/mathjax/`` of the HTML output; ``mathjax_path`` points there (set in _config.yml).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from sphinx.application import Sphinx

TARGET = Path("_static") / "mathjax"


def _copy_mathjax(app: Sphinx, exception: Exception | None) -> None:
    if exception is not None or app.builder.format != "html":
        return
    import jupyter_server_mathjax

    source = Path(jupyter_server_mathjax.__file__).parent / "static"
    destination = Path(app.outdir) / TARGET
    if not (destination / "MathJax.js").is_file():
        shutil.copytree(source, destination, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("*.py", "__pycache__", "test*"))


def setup(app: Sphinx) -> dict[str, bool]:
    app.connect("build-finished", _copy_mathjax)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
