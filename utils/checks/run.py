"""Running a checker from a lab's check cell: say how it went, never stop the notebook.

A lab as shipped holds only stubs, and "Run All" (or the book build, or ``pytest --nbmake``) must get
through it without an error. So a check cell calls ``check("<lab>.<exercise>", answer)``, which runs the
checker registered under that name (see ``utils.checks``) and *prints* the outcome instead of raising:

- the checker's own "PASSED <lab>.<exercise>" line when the answer is right;
- ``Not yet: <hint>`` when the stub still raises ``NotImplementedError``;
- ``Not yet: <diagnosis>`` when the checker rejects the answer (``CheckFailed``), after the traceback of
  the reader's own exception when the answer crashed.

``check`` returns whether the answer passed and remembers it: a later cell that uses the reader's
functions runs its body only ``if ready("<lab>.<exercise>", ...)``, which prints what is still missing.
Any other exception (a bug in a checker, not in the answer) is raised as usual.
"""

from __future__ import annotations

import traceback
from typing import Any

from utils.checks import CheckFailed, all_checkers

NOT_YET = "Not yet:"

#: Whether the last check of each exercise passed, in this Python process (this notebook's kernel).
_OUTCOMES: dict[str, bool] = {}


def check(exercise_id: str, answer: Any) -> bool:
    """Run the checker of ``exercise_id`` on ``answer``; print the outcome; return whether it passed."""
    checkers = all_checkers()
    if exercise_id not in checkers:
        raise KeyError(f"no checker is registered as {exercise_id!r}; known: {sorted(checkers)}")
    try:
        checkers[exercise_id](answer)
    except NotImplementedError as stub:  # a stub the checker called without utils.checks.call
        print(f"{NOT_YET} {stub}")
        passed = False
    except CheckFailed as failure:
        if failure.__cause__ is not None:  # the answer crashed: show where, in the reader's code
            traceback.print_exception(failure.__cause__, limit=-3, chain=False)
        print(f"{NOT_YET} {failure}")
        passed = False
    else:
        passed = True
    _OUTCOMES[exercise_id] = passed
    return passed


def ready(*exercise_ids: str) -> bool:
    """Whether every named exercise has passed its check in this kernel; if not, say which has not."""
    missing = [name for name in exercise_ids if not _OUTCOMES.get(name, False)]
    if missing:
        print(f"Skipped until the check of {', '.join(missing)} says PASSED: finish that exercise, "
              "run its check cell, then run this cell again.")
    return not missing


def forget() -> None:
    """Drop every remembered outcome (for tests that run several labs in one process)."""
    _OUTCOMES.clear()
