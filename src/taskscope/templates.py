"""Message templates: a message's first line with its variable parts masked.

"Standard out for task 0 will not be redirected." and the same line for task 7 share the
template "Standard out for task <num> will not be redirected.". Masks are regexes applied in
order in DuckDB (`with_template_sql`), or in Python (`template_of`) for the odd single message;
both give the same result.

Masking is chosen over a learned miner (Drain) because Parsl's variable parts are few and
regular, and a mask is deterministic: the same message gets the same template in every run,
which `compare` and the common path rely on.
"""

from __future__ import annotations

import re

from taskscope._sql import literal

# (regex, placeholder, guard), applied in this order; RE2 and Python `re` read them alike.
# The guard is a substring every match contains: a line without it skips that regex in SQL,
# which halves the cost of templates (a `contains` is much cheaper than an RE2 scan).
MASKS: list[tuple[str, str, str | None]] = [
    (r"\{.*\}", "{…}", "{"),  # dict reprs: registration info, ManagerRecords, monitoring messages
    (r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}", "<uuid>", "-"),
    # bytes reprs only as a whole token: the b of 'inc-c9b', 'x' starts no bytes
    (r"\bb'[^']*'", "<bytes>", "b'"),
    (r"0x[0-9a-fA-F]+", "<hex>", "0x"),
    (r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(?:[.,]\d+)?", "<time>", ":"),
    (r"\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}(?::\d+)?", "<ip>", "."),
    (r"(?:/[\w.@+=-]+){2,}/?", "<path>", "/"),
    (r"\b[0-9a-f]{12,}\b", "<id>", None),
    (r"\[[-\d., ]*\]", "[<nums>]", "["),
    # a minus sign only where no word comes before it: 'inc-902' keeps its hyphen
    (r"(?:\B-)?\b\d+(?:\.\d+)?(?:e[+-]?\d+)?\b", "<num>", None),
]

_COMPILED = [(re.compile(regex), placeholder) for regex, placeholder, _ in MASKS]


def with_template_sql(relation_sql: str, column: str, alias: str) -> str:
    """A SELECT of every column of `relation_sql` plus `alias`: the template of `column`
    (a message's first line).

    Each mask is one nested SELECT, so that its guard and its regex both read the column
    the mask before produced without the SQL text doubling at every step.

    >>> import duckdb
    >>> duckdb.sql(with_template_sql("SELECT 'task 7 done' AS m", "m", "t")).fetchall()
    [('task 7 done', 'task <num> done')]
    """
    sql = f"SELECT *, {column} AS {alias} FROM ({relation_sql})"
    for regex, placeholder, guard in MASKS:
        masked = f"regexp_replace({alias}, {literal(regex)}, {literal(placeholder)}, 'g')"
        if guard is not None:
            masked = f"CASE WHEN contains({alias}, {literal(guard)}) THEN {masked} ELSE {alias} END"
        sql = f"SELECT * REPLACE ({masked} AS {alias}) FROM ({sql})"
    return sql


def template_of(message: str) -> str:
    """The template of one message (Python twin of `with_template_sql`).

    >>> template_of("Standard out for task 7 will not be redirected.")
    'Standard out for task <num> will not be redirected.'
    >>> template_of("tags 'inc-c9b', 'inc-902' at -3")
    "tags 'inc-c9b', 'inc-<num>' at <num>"
    """
    text = message.split("\n", 1)[0]
    for regex, placeholder in _COMPILED:
        text = regex.sub(placeholder, text)
    return text
