"""A plain script with opt-in usage telemetry: count the lines of files.

    LINECOUNT_TELEMETRY_ENABLED=1 LINECOUNT_TELEMETRY_ENDPOINT=stdout \
        python examples/plain_script.py examples/plain_script.py

What it shows:

* a ``ToolTelemetry`` for a script with no command-line framework;
* the first-run question, asked once at a terminal;
* ``track_command`` as a decorator: one event per call of ``main``, named
  ``linecount``; a file that cannot be read ends the script with
  ``sys.exit("message")``, recorded as a failure with exit code 1 and the
  error class ``SystemExit``: the message and the file names are never sent.

Without a framework, the consent commands are ``telemetry.main(argv)``:
``python examples/plain_script.py --telemetry status`` shows the decision.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from nat_telemetry import ToolTelemetry

telemetry = ToolTelemetry("linecount", version="1.4", display_name="linecount",
                          change_command="linecount --telemetry")


@telemetry.track_command("linecount")
def main(paths: Sequence[str]) -> None:
    total = 0
    for path in paths:
        try:
            with open(path, "rb") as data:
                lines = sum(1 for _ in data)
        except OSError as exc:
            sys.exit(f"linecount: cannot read {path}: {exc.strerror}")
        print(f"{lines:8} {path}")
        total += lines
    if len(paths) > 1:
        print(f"{total:8} total")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--telemetry"]:
        sys.exit(telemetry.main(sys.argv[2:]))
    telemetry.maybe_prompt_for_consent()
    main(sys.argv[1:])
