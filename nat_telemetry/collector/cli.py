"""Command-line entry points of the local collector: ``collect``, ``report``, ``demo``.

The client's command line (:mod:`..cli`) registers them when this folder is
present; the collector's modules (``http.server``, ``sqlite3``) are imported
only when one of these commands actually runs.

Every command returns an exit code and reports a failure as one readable line
on stderr, never a traceback: 0 success, 1 the command failed (missing
database, port in use...), 2 bad options (argparse's own convention).
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import signal
import sys
import threading
from typing import Any, Callable, NoReturn

from .._process import reader_went_away

__all__ = ["DEFAULT_DB", "DEFAULT_PORT", "TOKEN_ENV_VAR", "register"]

DEFAULT_DB = "nat-telemetry.db"
DEFAULT_PORT = 8765
TOKEN_ENV_VAR = "NAT_TELEMETRY_COLLECTOR_TOKEN"
# core's defaults, without importing it (http.server, sqlite3) to build a parser.
_DEFAULT_MAX_BODY = 1_048_576
_DEFAULT_MAX_CONNECTIONS = 64
_DEFAULT_REQUEST_TIMEOUT = 10.0

# The package's own logger, also in a copy vendored under another name.
logger = logging.getLogger(__name__.rsplit(".", 2)[0])

Command = Callable[[argparse.Namespace], int]


def register(commands: argparse._SubParsersAction[Any]) -> None:
    """Add the collector's subcommands to the ``nat-telemetry`` parser."""
    _add_collect(commands)
    _add_report(commands)
    _add_demo(commands)


# ------------------------------------------------------------------ parsers


def _add_collect(commands: argparse._SubParsersAction[Any]) -> None:
    parser = commands.add_parser(
        "collect",
        help="run a local collector that stores received events in SQLite",
        description="Receive telemetry POSTs (any path; the reference ingest's is "
                    "/v1.1/events/json), validate them and store one row per event in "
                    "SQLite. Runs until Ctrl-C or SIGTERM.",
    )
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default: %(default)s, loopback only; any "
                             "other needs --token or --insecure)")
    parser.add_argument("--port", type=_port, default=DEFAULT_PORT,
                        help="port to listen on, 0 for a free one (default: %(default)s)")
    parser.add_argument("--db", default=DEFAULT_DB, metavar="PATH",
                        help="SQLite file to store events in (default: ./%(default)s)")
    parser.add_argument("--max-body", type=_positive_int, default=_DEFAULT_MAX_BODY,
                        metavar="BYTES",
                        help="larger bodies are answered 413 unread (default: %(default)s)")
    limits = parser.add_argument_group(
        "limits and access", "What hostile or broken clients may cost, and who may write.")
    limits.add_argument("--max-connections", type=_positive_int,
                        default=_DEFAULT_MAX_CONNECTIONS, metavar="N",
                        help="connections open at once; at the cap a new one replaces the one "
                             "waiting longest for its request (default: %(default)s)")
    limits.add_argument("--request-timeout", type=_positive_seconds,
                        default=_DEFAULT_REQUEST_TIMEOUT, metavar="S",
                        help="a request must arrive whole within S seconds, or is answered 408 "
                             "(a silent connection is closed) (default: %(default)g)")
    limits.add_argument("--max-inflight", type=_positive_int, metavar="BYTES",
                        help="request bodies held at once, all connections together "
                             "(default: 8 MiB, or --max-body if larger)")
    limits.add_argument("--token", metavar="TOKEN",
                        help="require 'Authorization: Bearer TOKEN' (401 otherwise); default: "
                             f"${TOKEN_ENV_VAR}, which keeps it out of the process list")
    limits.add_argument("--insecure", action="store_true",
                        help="allow --host beyond loopback without a token")
    faults = parser.add_argument_group(
        "fault injection", "One fault plan, drawn once per request in arrival order from "
                           "one seeded random generator: --drop-rate takes the first share "
                           "of requests, --fail-rate the next.")
    faults.add_argument("--fail-rate", type=_probability, default=0.0, metavar="P",
                        help="share of requests answered --fail-status (0 to 1)")
    faults.add_argument("--fail-status", type=_fail_status, default=503, metavar="CODE",
                        help="status of an injected failure, 400-599 (default: %(default)s)")
    faults.add_argument("--retry-after", type=_non_negative_int, metavar="S",
                        help="add 'Retry-After: S' to injected failures (use with 429 or 503)")
    faults.add_argument("--delay-ms", type=_non_negative_int, default=0, metavar="MS",
                        help="wait this long before every answer (and every drop)")
    faults.add_argument("--drop-rate", type=_probability, default=0.0, metavar="P",
                        help="share of requests whose connection is closed without an "
                             "answer, after the body was read")
    faults.add_argument("--drop-after-store", action="store_true",
                        help="store a dropped request's events before dropping it (the "
                             "client will resend them: duplicates)")
    faults.add_argument("--seed", type=int, help="seed the fault decisions to replay a run")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="log every request on stderr")
    parser.set_defaults(func=_one_line_errors("collect", _collect))


def _add_report(commands: argparse._SubParsersAction[Any]) -> None:
    parser = commands.add_parser(
        "report",
        help="summarise the events a collector stored",
        description="Events per command and subcommand, outcomes, duration p50/p95 "
                    "(nearest rank), top error classes, sessions and Python versions.",
    )
    parser.add_argument("--db", default=DEFAULT_DB, metavar="PATH",
                        help="SQLite file written by 'collect' (default: ./%(default)s)")
    parser.add_argument("--format", choices=("table", "json"), default="table",
                        help="output format (default: %(default)s)")
    parser.set_defaults(func=_one_line_errors("report", _report))


def _add_demo(commands: argparse._SubParsersAction[Any]) -> None:
    parser = commands.add_parser(
        "demo",
        help="run the whole pipeline locally: workload -> handler -> collector -> report",
        description="Start an in-process collector on a free loopback port (SQLite file in "
                    "a temporary folder removed afterwards, unless --db names one), send a "
                    "small multi-threaded workload through a real handler, then print the "
                    "report. Telemetry is enabled "
                    "for this process only; your consent file is neither read nor written.",
    )
    parser.add_argument("--threads", type=_positive_int, default=4,
                        help="sending threads (default: %(default)s)")
    parser.add_argument("--events-per-thread", type=_positive_int, default=25, metavar="N",
                        help="commands each thread runs (default: %(default)s)")
    parser.add_argument("--db", metavar="PATH",
                        help="keep the SQLite database at PATH (default: a temporary file, "
                             "removed afterwards)")
    parser.set_defaults(func=_one_line_errors("demo", _demo))


# ----------------------------------------------------------------- commands


def _collect(args: argparse.Namespace) -> int:
    import sqlite3

    from .core import Collector, is_loopback

    if args.verbose:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
    token = args.token if args.token is not None else os.environ.get(TOKEN_ENV_VAR) or None
    if token is None and not args.insecure and not is_loopback(args.host):
        _error("collect", f"listening on {args.host} lets any machine that reaches it write: "
                          f"give --token (or {TOKEN_ENV_VAR}), or --insecure")
        return 2
    if not is_loopback(args.host):
        _warn("collect", f"listening on {args.host}: other machines can reach this collector")
    try:
        collector = Collector(
            args.db, host=args.host, port=args.port, max_body=args.max_body,
            fail_rate=args.fail_rate, fail_status=args.fail_status,
            retry_after=args.retry_after, delay_ms=args.delay_ms, drop_rate=args.drop_rate,
            drop_after_store=args.drop_after_store, seed=args.seed,
            max_connections=args.max_connections, request_timeout=args.request_timeout,
            max_inflight=args.max_inflight, token=token, insecure=args.insecure,
        )
    except ValueError as exc:  # e.g. a token no HTTP header can carry (never shown)
        _error("collect", str(exc))
        return 2
    try:
        collector.start()
    except OSError as exc:
        _error("collect", f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}")
        return 1
    except (sqlite3.Error, ValueError) as exc:
        _error("collect", f"cannot use database {args.db}: {exc}")
        return 1
    faults = _describe_faults(args)
    access = "; token required" if token is not None else ""
    print(f"nat-telemetry collector listening on {collector.url} "
          f"(database: {os.path.abspath(args.db)}{access}{faults})", flush=True)
    previous = signal.getsignal(signal.SIGTERM)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_interrupt)
    forever = threading.Event()
    try:
        while not forever.wait(1.0):
            pass  # a bounded wait: Ctrl-C is delivered between two of them at the latest
    except KeyboardInterrupt:
        pass
    finally:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, previous)
        collector.stop()
    counts = collector.counts()
    requests, stored = counts["requests"], counts["stored_events"]
    print(f"stopped: {requests} request{_s(requests)}, {stored} event{_s(stored)} stored",
          flush=True)
    return 0


def _report(args: argparse.Namespace) -> int:
    from .report import ReportError, build_report, render_table

    try:
        report = build_report(args.db)
    except ReportError as exc:
        _error("report", str(exc))
        return 1
    if args.format == "json":
        print(json.dumps(report, indent=2))
    else:
        print(render_table(report))
    return 0


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(threads=args.threads, events_per_thread=args.events_per_thread,
                    db_path=args.db)


def _raise_interrupt(signum: int, frame: Any) -> NoReturn:
    # SIGTERM ends `collect` exactly like Ctrl-C: stop, print the summary, exit 0.
    raise KeyboardInterrupt


def _one_line_errors(name: str, command: Command) -> Command:
    """Turn any failure of ``command`` into one line on stderr and exit code 1."""

    @functools.wraps(command)
    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except KeyboardInterrupt:
            _error(name, "interrupted")
            return 130
        except BrokenPipeError:
            return reader_went_away()
        except Exception as exc:  # the CLI's contract: one readable line, no traceback
            logger.debug("nat-telemetry %s failed", name, exc_info=True)
            _error(name, str(exc) or type(exc).__name__)
            return 1

    return run


def _error(name: str, message: str) -> None:
    print(f"nat-telemetry {name}: error: {message}", file=sys.stderr, flush=True)


def _warn(name: str, message: str) -> None:
    print(f"nat-telemetry {name}: warning: {message}", file=sys.stderr, flush=True)


def _s(count: int) -> str:
    return "" if count == 1 else "s"


def _describe_faults(args: argparse.Namespace) -> str:
    parts = []
    if args.fail_rate:
        retry = f", Retry-After {args.retry_after}" if args.retry_after is not None else ""
        parts.append(f"fail {args.fail_rate:g} -> {args.fail_status}{retry}")
    if args.drop_rate:
        after = " after store" if args.drop_after_store else ""
        parts.append(f"drop {args.drop_rate:g}{after}")
    if args.delay_ms:
        parts.append(f"delay {args.delay_ms} ms")
    if not parts:
        return ""
    seed = f", seed {args.seed}" if args.seed is not None else ""
    return "; faults: " + ", ".join(parts) + seed


# ---------------------------------------------------------- argument types


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None


def _port(text: str) -> int:
    value = _integer(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port number from 0 to 65535, got {value}")
    return value


def _positive_int(text: str) -> int:
    value = _integer(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    value = _integer(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {value}")
    return value


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < value < 1e6:  # also rejects nan and inf
        raise argparse.ArgumentTypeError(f"must be a number of seconds above 0, got {text}")
    return value


def _fail_status(text: str) -> int:
    value = _integer(text)
    if not 400 <= value <= 599:
        raise argparse.ArgumentTypeError(f"must be an HTTP error status (400-599), got {value}")
    return value


def _probability(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 <= value <= 1.0:  # also rejects nan
        raise argparse.ArgumentTypeError(f"must be a probability from 0 to 1, got {text}")
    return value
