"""The one check every constructor applies to its numeric arguments."""

from __future__ import annotations


def require(ok: bool, name: str, value: object) -> None:
    """``ValueError`` naming ``name`` and ``value`` unless ``ok``."""
    if not ok:
        raise ValueError(f"{name} out of range: {value!r}")
