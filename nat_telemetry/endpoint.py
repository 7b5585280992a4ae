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

__all__ = ["endpoint_problem", "host_of", "redact"]

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
    """Why ``endpoint`` can never be sent to, or None when it can (or is empty/stdout)."""
    if endpoint in ("", "stdout"):
        return None
    from urllib.parse import urlsplit  # only for endpoints that are URLs

    shown = redact(endpoint)
    scheme = endpoint.partition("://")[0].lower() if "://" in endpoint else ""
    if scheme not in _SCHEMES:
        return (f"endpoint {shown!r} is not a URL this client can send to "
                f"(it needs one of {', '.join(s + '://' for s in _SCHEMES)})")
    try:
        parts = urlsplit(endpoint)
        host = parts.hostname
        parts.port  # noqa: B018  (raises ValueError for a bad port)
    except ValueError as exc:
        return f"endpoint {shown!r} is not a valid URL: {_redacted_reason(exc, endpoint)}"
    if not host:
        return f"endpoint {shown!r} has no host"
    if any(c.isspace() for c in endpoint):
        return f"endpoint {shown!r} contains white space"
    return None


def host_of(endpoint: str) -> str | None:
    """The host a URL endpoint sends to (for the consent prompt), or None."""
    if endpoint_problem(endpoint) is not None or "://" not in endpoint:
        return None
    from urllib.parse import urlsplit

    return urlsplit(endpoint).hostname


def _redacted_reason(exc: Exception, endpoint: str) -> str:
    reason = str(exc)
    userinfo = endpoint.partition("://")[2].partition("/")[0].rpartition("@")[0]
    return reason.replace(userinfo, "***") if userinfo else reason
