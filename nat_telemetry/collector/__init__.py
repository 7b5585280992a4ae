"""The server side: a loopback ingest that stores what clients send, and its tools.

Nothing in the client imports this folder: a project vendoring the package
may delete it and keep everything it uses.  The parts:

* :mod:`.validation` — is a body an envelope we may store (strict, whole or nothing);
* :mod:`.storage` — the SQLite file, one row per event, and proof a row is in it;
* :mod:`.faults` — which requests to fail, drop or answer late;
* :mod:`.limits` — deadlines and the budget of bytes in flight;
* :mod:`.server` — the listening socket, a capped number of connections;
* :mod:`.exchange` — a connection's requests read and answered over HTTP;
* :mod:`.ingest` — what a request means: token, POST, fault, store, answer;
* :mod:`.counts` — the books every request lands in;
* :mod:`.core` — :class:`Collector`, which puts them together;
* :mod:`.report`, :mod:`.demo`, :mod:`.cli` — ``report``, ``demo`` and
  ``collect`` for the ``nat-telemetry`` command line.

Public names load on first use, so registering the commands costs nothing
until one of them runs.
"""

from __future__ import annotations

import importlib

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing at run time
if TYPE_CHECKING:
    from typing import Any

    from ..payload import ENVELOPE_KEYS, EVENT_KEYS, GDPR_FIELDS, IDENTITY_FIELDS, TEXT_FIELDS
    from .core import DEFAULT_MAX_BODY, INGEST_PATH, Collector
    from .counts import ERROR_KINDS
    from .faults import FAULT_KINDS, MIX_KINDS, Fault
    from .storage import EVENT_COLUMNS, init_database
    from .validation import REJECT_REASONS, EnvelopeRejected, known_event_types, parse_envelope

# public name -> the module that defines it (".." is the client's payload module)
_EXPORTS = {
    "Collector": ".core",
    "DEFAULT_MAX_BODY": ".core",
    "INGEST_PATH": ".core",
    "ERROR_KINDS": ".counts",
    "FAULT_KINDS": ".faults",
    "MIX_KINDS": ".faults",
    "Fault": ".faults",
    "EVENT_COLUMNS": ".storage",
    "init_database": ".storage",
    "REJECT_REASONS": ".validation",
    "EnvelopeRejected": ".validation",
    "known_event_types": ".validation",
    "parse_envelope": ".validation",
    "ENVELOPE_KEYS": "..payload",
    "EVENT_KEYS": "..payload",
    "GDPR_FIELDS": "..payload",
    "IDENTITY_FIELDS": "..payload",
    "TEXT_FIELDS": "..payload",
}

__all__ = [
    "DEFAULT_MAX_BODY",
    "ENVELOPE_KEYS",
    "ERROR_KINDS",
    "EVENT_COLUMNS",
    "EVENT_KEYS",
    "FAULT_KINDS",
    "GDPR_FIELDS",
    "IDENTITY_FIELDS",
    "INGEST_PATH",
    "MIX_KINDS",
    "REJECT_REASONS",
    "TEXT_FIELDS",
    "Collector",
    "EnvelopeRejected",
    "Fault",
    "init_database",
    "known_event_types",
    "parse_envelope",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
