"""Bounded views of user data for error messages.

A recipe entry, a config value or a YAML problem can be megabytes long (or, through YAML aliases,
billions of values). An error message must still be one readable line, so user data goes into
messages through these helpers, never through a bare `repr()` or `!r`.
"""

from __future__ import annotations

import reprlib

# Long enough to recognise a value, short enough to keep an error on one line.
DEFAULT_LIMIT = 100
_ELLIPSIS = "..."


def bounded_text(text: str, limit: int = DEFAULT_LIMIT) -> str:
    """`text`, or its start and end joined by `...` if it is longer than `limit` characters."""
    if len(text) <= limit:
        return text
    tail = max((limit - len(_ELLIPSIS)) // 3, 0)
    head = max(limit - len(_ELLIPSIS) - tail, 0)
    return text[:head] + _ELLIPSIS + (text[-tail:] if tail else "")


def bounded_repr(value: object, limit: int = DEFAULT_LIMIT) -> str:
    """`repr(value)` in at most `limit` characters, without ever building the full repr of a
    container (reprlib stops after a few items and levels). A string within `limit` shows whole."""
    shower = reprlib.Repr()
    shower.maxlevel = 3
    shower.maxdict = shower.maxlist = shower.maxtuple = shower.maxset = shower.maxfrozenset = 4
    shower.maxstring = shower.maxother = shower.maxlong = limit
    try:
        text = shower.repr(value)
    except Exception:  # e.g. an int too long for str(); the type still says what it was
        text = f"<{type(value).__name__}>"
    return bounded_text(text, limit)
