"""What an endpoint string means, and how to show it without its secrets.

An endpoint is ``""`` (send nothing), ``"stdout"`` (one JSON line per payload
on stderr), an ``http(s)://`` URL, or an ``otlp+http(s)://`` URL (OpenTelemetry
logs).  Anything else cannot be sent to, ever: that is a configuration error to
report once, not a network failure to retry.

A URL may carry credentials (``https://user:secret@host/...``, for a
self-hosted collector behind basic auth).  They are sent as written and never
shown: :func:`redact` replaces them wherever an endpoint is printed or logged.
"""

from __future__ import annotations

__all__ = ["destination", "endpoint_problem", "host_of", "redact"]

_SCHEMES = ("http", "https", "otlp+http", "otlp+https")


def redact(endpoint: str) -> str:
    """``endpoint`` with any ``user:password@`` replaced by ``***@``."""
    scheme, sep, rest = endpoint.partition("://")
    if not sep:
        # No scheme: still hide anything that looks like userinfo.
        scheme, rest = "", endpoint
    authority, slash, path = rest.partition("/")
    if "@" in authority:
        authority = "***@" + authority.rpartition("@")[2]
    return f"{scheme}{sep}{authority}{slash}{path}"


def endpoint_problem(endpoint: str) -> str | None:
    """Why ``endpoint`` can never be sent to, or None when it can (or is empty/stdout).

    Read by hand rather than with :mod:`urllib.parse`, which a command line
    that never POSTs in-process would otherwise import at exit.
    """
    if endpoint in ("", "stdout"):
        return None
    shown = redact(endpoint)
    scheme, sep, rest = endpoint.partition("://")
    if not sep or scheme.lower() not in _SCHEMES:
        return (f"endpoint {shown!r} is not a URL this client can send to "
                f"(it needs one of {', '.join(s + '://' for s in _SCHEMES)})")
    if any(c.isspace() for c in endpoint):
        return f"endpoint {shown!r} contains white space"
    host, port = _host_and_port(rest)
    if host is None:
        return f"endpoint {shown!r} is not a valid URL: {port}"
    if not host:
        return f"endpoint {shown!r} has no host"
    if port and not (port.isascii() and port.isdigit() and int(port) <= 65535):
        return f"endpoint {shown!r} is not a valid URL: bad port"
    return None


def destination(endpoint: str, dry_run: bool) -> str:
    """What sending to ``endpoint`` means, as one word.

    ``"none"`` (no endpoint), ``"stdout"``, ``"unusable"`` (see
    :func:`endpoint_problem`), ``"dry-run"`` or ``"otlp-dry-run"`` (a URL,
    with ``dry_run``), ``"otlp"`` (an ``otlp+http(s)://`` URL) or ``"nemo"``
    (any other URL: a POST of the NeMo envelope).
    """
    if not endpoint:
        return "none"
    if endpoint == "stdout":
        return "stdout"
    if endpoint_problem(endpoint) is not None:
        return "unusable"
    otlp = endpoint.partition("://")[0].lower().startswith("otlp+")
    if dry_run:
        return "otlp-dry-run" if otlp else "dry-run"
    return "otlp" if otlp else "nemo"


def host_of(endpoint: str) -> str | None:
    """The host a URL endpoint sends to (for the consent prompt), or None."""
    if endpoint_problem(endpoint) is not None or "://" not in endpoint:
        return None
    host, _ = _host_and_port(endpoint.partition("://")[2])
    return host.lower() if host else None


def _host_and_port(rest: str) -> tuple[str | None, str]:
    """``(host, port)`` of what follows ``scheme://``; ``(None, reason)`` when unreadable."""
    authority = rest
    for end in "/?#":
        authority = authority.partition(end)[0]
    hostport = authority.rpartition("@")[2]
    if hostport.startswith("["):
        address, bracket, after = hostport[1:].partition("]")
        if not bracket or not address or not all(c in _IPV6 for c in address):
            return None, "invalid IPv6 address"
        if after and not after.startswith(":"):
            return None, "invalid IPv6 address"
        return address, after[1:]
    host, _, port = hostport.partition(":")
    if ":" in port:
        return None, "bad port"
    return host, port


_IPV6 = frozenset("0123456789abcdefABCDEF:.%")
