"""Small helpers for SQL text that taskscope builds itself (never for user values: those are
always bound as query parameters)."""

from __future__ import annotations


def literal(text: str) -> str:
    """`text` as a SQL string literal.

    >>> literal("it's")
    "'it''s'"
    """
    return "'" + text.replace("'", "''") + "'"
