"""``python -m theirtool``: the command line."""

import sys

from theirtool.cli import main

sys.exit(main())
