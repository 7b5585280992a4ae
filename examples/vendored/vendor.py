"""Copy nat_telemetry into theirtool/_vendor/, as a project that vendors it would.

    python examples/vendored/vendor.py [--source PATH] [--with-collector]

The copy is made from ``--source`` (default: the ``nat_telemetry`` folder of the
package this interpreter imports) into ``theirtool/_vendor/nat_telemetry``
beside this script, replacing any earlier copy.  The server side
(``collector/``: ``nat-telemetry collect``, ``report`` and ``demo``) is left
out unless ``--with-collector`` is given: the client never imports it.

A real project commits its copy.  This example makes it when it is run, so the
repository holds a single copy of the package.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
TARGET = HERE / "theirtool" / "_vendor" / "nat_telemetry"


def installed_package() -> Path:
    import nat_telemetry

    return Path(nat_telemetry.__file__).resolve().parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, help="the nat_telemetry folder to copy")
    parser.add_argument("--with-collector", action="store_true",
                        help="keep the server side (collector/) in the copy")
    args = parser.parse_args(argv)
    source = args.source or installed_package()
    if not (source / "__init__.py").is_file():
        parser.error(f"{source} is not the nat_telemetry package folder")
    ignored = ["__pycache__", "*.pyc"]
    if not args.with_collector:
        ignored.append("collector")
    if TARGET.exists():
        shutil.rmtree(TARGET)
    shutil.copytree(source, TARGET, ignore=shutil.ignore_patterns(*ignored))
    print(f"copied {source} to {TARGET}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
