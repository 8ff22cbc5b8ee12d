"""``utils.diagnose`` judged on the runs of every combination of the robustness matrix, as
``tests/test_diagnose_book_runs.py`` judges the build's runs (``tests/book_runs.py``):

    python -m benchmarks.robustness --all --keep-runs /tmp/matrix-runs
    python -m tests.diagnose_matrix /tmp/matrix-runs       # one folder per combination below it

Prints every contradiction per combination; exit status 1 if there is any.
"""

from __future__ import annotations

import sys
from pathlib import Path

from tests.book_runs import verdicts
from utils import diagnose


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or not Path(args[0]).is_dir():
        print(__doc__)
        return 2
    wrong = 0
    for combination in sorted(p for p in Path(args[0]).iterdir() if p.is_dir()):
        found = verdicts({r.run: r for r in diagnose.diagnose(combination)})
        wrong += len(found)
        print(f"{combination.name}: " + ("every run gets what it is" if not found else "\n  " + "\n  ".join(found)))
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
