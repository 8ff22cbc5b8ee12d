"""The Python code of a notebook, as the tests that read notebooks statically parse it.

Shared by ``tests/test_layout.py`` (which modules a notebook imports) and ``tests/test_printed_source.py``
(what a notebook prints with ``inspect.getsource``).
"""

from __future__ import annotations

import json
from pathlib import Path


def python_source(notebook: Path) -> str:
    """The notebook's code cells joined in order, without IPython's magic (``%``) and shell (``!``) lines,
    which are not Python."""
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    code = "\n".join(c["source"] if isinstance(c["source"], str) else "".join(c["source"])
                     for c in cells if c["cell_type"] == "code")
    return "\n".join(line for line in code.splitlines() if not line.lstrip().startswith(("%", "!")))
