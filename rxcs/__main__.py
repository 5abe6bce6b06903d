"""``python -m rxcs``: the same as the ``rxcs`` command."""

import sys

from rxcs.cli import main

sys.exit(main())
