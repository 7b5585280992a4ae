"""The package's logger, created on first use.

Importing :mod:`logging` costs a command line more than everything else this
package does on its way in, and most runs never log anything.  So the logger
is looked up the first time a message is written, under the package's own
name (a vendored copy logs under the name it was given).
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing at run time
if TYPE_CHECKING:
    import logging

PACKAGE = __name__.rpartition(".")[0]


def logger() -> logging.Logger:
    # Often first needed on a worker thread: imported under the fork guard.
    from ._fork_guard import import_guarded

    found: logging.Logger = import_guarded("logging").getLogger(PACKAGE)
    return found


def debug(message: str, *args: object, exc_info: bool = False) -> None:
    logger().debug(message, *args, exc_info=exc_info)


def warning(message: str, *args: object) -> None:
    logger().warning(message, *args)
