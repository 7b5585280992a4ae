"""A Griffe extension for the API reference: Sphinx roles as Markdown code.

The package's docstrings name other objects the way Sphinx does
(``:class:`~.handler.NATTelemetryHandler```, ``:func:`track_command```).
MkDocs renders Markdown, so each role is written as a code span of the name
a reader would type: the last part of the path when the target starts with
``~``, the path without its leading dots otherwise.
"""

from __future__ import annotations

import re
from typing import Any

from griffe import Extension, Object

_ROLE = re.compile(r":(?:py:)?(?:class|func|meth|mod|data|attr|exc|obj|const):`(~?)\.*([^`]+)`")


def _plain(match: re.Match[str]) -> str:
    tilde, target = match.group(1), match.group(2)
    return f"`{target.rsplit('.', 1)[-1] if tilde else target}`"


class SphinxRoles(Extension):
    """Rewrite Sphinx roles in every docstring before it is parsed."""

    def on_object(self, *, obj: Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = _ROLE.sub(_plain, obj.docstring.value)
