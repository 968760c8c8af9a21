"""Message templates: a message's first line with its variable parts masked.

"Standard out for task 0 will not be redirected." and the same line for task 7 share the
template "Standard out for task <num> will not be redirected.". Masks are regexes applied in
order in DuckDB (`template_sql`), or in Python (`template_of`) for the odd single message;
both give the same result.

Masking is chosen over a learned miner (Drain) because Parsl's variable parts are few and
regular, and a mask is deterministic: the same message gets the same template in every run,
which `compare` and the common path rely on.
"""

from __future__ import annotations

import re

from taskscope._sql import literal


# (regex, placeholder), applied in this order; RE2 and Python `re` read them alike
MASKS: list[tuple[str, str]] = [
    (r"\{.*\}", "{…}"),  # dict reprs: registration info, ManagerRecords, monitoring messages
    (r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}", "<uuid>"),
    (r"b'[^']*'", "<bytes>"),
    (r"0x[0-9a-fA-F]+", "<hex>"),
    (r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(?:[.,]\d+)?", "<time>"),
    (r"\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}(?::\d+)?", "<ip>"),
    (r"(?:/[\w.@+=-]+){2,}/?", "<path>"),
    (r"\b[0-9a-f]{12,}\b", "<id>"),
    (r"\[[-\d., ]*\]", "[<nums>]"),
    (r"-?\b\d+(?:\.\d+)?(?:e[+-]?\d+)?\b", "<num>"),
]

_COMPILED = [(re.compile(regex), placeholder) for regex, placeholder in MASKS]


def template_sql(column: str) -> str:
    """SQL expression masking `column` (a message's first line) into its template."""
    expr = column
    for regex, placeholder in MASKS:
        expr = f"regexp_replace({expr}, {literal(regex)}, {literal(placeholder)}, 'g')"
    return expr


def template_of(message: str) -> str:
    """The template of one message (Python twin of `template_sql`).

    >>> template_of("Standard out for task 7 will not be redirected.")
    'Standard out for task <num> will not be redirected.'
    """
    text = message.split("\n", 1)[0]
    for regex, placeholder in _COMPILED:
        text = regex.sub(placeholder, text)
    return text
