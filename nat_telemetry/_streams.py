"""What both command lines do when the reader of their output goes away."""

from __future__ import annotations

import os
import sys

__all__ = ["EXIT_BROKEN_PIPE", "reader_went_away"]

EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, as a shell tool killed by it reports


def reader_went_away() -> int:
    """Exit quietly when stdout's reader closed early (``nat-telemetry demo | head``).

    What a shell tool killed by SIGPIPE reports (128 + 13), and nothing on
    stderr: the output that was wanted has been read.  Standard output is
    pointed at the null device so the interpreter's own final flush does not
    complain either.
    """
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, sys.stdout.fileno())
        os.close(null)
    except (OSError, ValueError, AttributeError):
        pass
    return EXIT_BROKEN_PIPE
