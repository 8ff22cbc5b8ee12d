"""``python -m utils.diagnose <logdir> [--json] [--rules]``."""

import sys

from utils.diagnose.cli import main

sys.exit(main())
