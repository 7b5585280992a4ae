"""Which subcommand was invoked, told from the command line without leaking it.

A command line's tokens mix command names with the user's own input: file
names, prompts, URLs.  Usage telemetry may only report the former.  The safe
rule is an allow-list: :func:`resolve_subcommand` returns a token only when it
is one of the subcommand names the program itself registered under the
top-level command, so whatever else the user typed can never come out of it.

It deliberately does not understand options.  ``tool run --config c.yml
serve`` looks at ``c.yml`` (the first token after ``run`` that is not a flag),
which is not a registered name, so the answer is ``None``: an unknown
subcommand is a small loss in usage statistics, a leaked argument is not.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

__all__ = ["resolve_subcommand"]


def resolve_subcommand(
    registered: Mapping[str, Collection[str]],
    top_level: str,
    argv: Sequence[str],
) -> str | None:
    """The subcommand invoked under ``top_level``, or ``None``.

    ``registered`` maps each top-level command to its subcommand names;
    ``argv`` is the command line without the program (``sys.argv[1:]``).
    Finds the first ``top_level`` token in ``argv``, takes the first token
    after it that does not start with ``-``, and returns it only when it is a
    registered subcommand of ``top_level``.  Returns ``None`` when
    ``top_level`` is missing from ``argv`` or from ``registered``, when
    nothing follows it, and when the token found is anything else (a
    positional argument, an option's value, a typo): later tokens are never
    considered.
    """
    names = registered.get(top_level)
    if not names:
        return None
    if isinstance(names, str):
        # A bare string is one name, not a collection of characters: "in"
        # would otherwise accept any substring of it.
        names = (names,)
    tokens: list[object] = list(argv)  # checked one by one: never trust a caller's argv
    try:
        start = tokens.index(top_level) + 1
    except ValueError:
        return None
    for token in tokens[start:]:
        if not isinstance(token, str):
            return None
        if token.startswith("-"):
            continue
        return token if token in names else None
    return None
