r"""Event selectors: the short text a user types to name a kind of event (`task.launched`,
`state:pending`, `template:Sent tasks%`), turned into a SQL condition over `events` with bound
parameters.

Syntax (an optional `@SOURCE` suffix restricts any kind to one `events.source`):

| selector | selects |
|---|---|
| `task.launched` | events whose canonical `event` is exactly this (for messages without a canonical name, `event` is the template, so a template works too) |
| `event:NAME` | the same, spelled out (use it when NAME itself starts with `word:`) |
| `state:NAME` | `task.state` events entering the DFK (or monitoring) state NAME, e.g. `state:launched` |
| `template:PATTERN` | events whose `template` is SQL `LIKE` PATTERN (`%` any text, `_` one character) |
| `message:PATTERN` | events whose `message` is `LIKE` PATTERN |
| `...@SOURCE` | only events of that source: `state:running@monitoring`, `task.state@parsl` |
| `A \| B` | events either selector picks: `task.launched \| state:dep_fail` (spaces around the bar) |

Analyses (between, latency, series) use selectors so that the CLI and Python read alike:

>>> select = parse_selector("state:launched@parsl")
>>> select.sql
'(event = $sel_event AND task_state = $sel_value) AND source = $sel_source'
>>> select.params
{'sel_event': 'task.state', 'sel_value': 'launched', 'sel_source': 'parsl'}
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field

import duckdb

from taskscope._sql import of_run, scalar

#: task states a selector may name: Parsl's `States` plus `unsched` (releases before 2023)
TASK_STATES = (
    "unsched", "pending", "launched", "running", "running_ended", "exec_done", "failed", "dep_fail",
    "fail_retryable", "memo_done", "joining",
)

_KINDS = ("event", "state", "template", "message")
_KIND_PREFIX = re.compile(r"^(?P<kind>[a-z_]+):(?P<value>.*)$", re.DOTALL)
_SOURCE_SUFFIX = re.compile(r"^(?P<body>.+)@(?P<source>[a-z_]+)$", re.DOTALL)


class SelectorError(ValueError):
    """A selector that cannot be understood, or that matches no event."""


@dataclass(frozen=True)
class Selector:
    """A parsed selector: `sql` is a condition over the columns of `events` (no table alias),
    `params` its named parameters (prefixed with the name given to `parse_selector`)."""

    text: str
    kind: str
    value: str
    source: str | None
    sql: str
    params: dict = field(default_factory=dict)

    def count(self, con: duckdb.DuckDBPyConnection, run_id: str | None = None) -> int:
        """How many events of `run_id` (or of every run) the selector matches."""
        return scalar(
            con,
            f"SELECT count(*) FROM events WHERE ({self.sql}) AND ($sel_run IS NULL OR run_id = $sel_run)",
            {**self.params, "sel_run": run_id},
        )

    def require_matches(self, con: duckdb.DuckDBPyConnection, run_id: str | None = None) -> None:
        """Raise `SelectorError` (with close event names as hints) if nothing matches.

        A selector that matches nothing is almost always a typo, so analyses check first
        rather than answer with an empty table.
        """
        if self.count(con, run_id):
            return
        where = f" in run {run_id}" if run_id else ""
        hint = _hint(con, self)
        raise SelectorError(f"no events match selector {self.text!r}{where}{hint}")


def parse_selector(text: str, name: str = "sel") -> Selector:
    """Parse `text` into a `Selector` whose parameters are named `${name}_...`.

    Give each selector in one query its own `name` so that their parameters do not collide.

    >>> parse_selector("template:Sent tasks%", name="a").params
    {'a_value': 'Sent tasks%'}
    """
    if not re.fullmatch(r"[a-z_][a-z0-9_]*", name):
        raise ValueError(f"selector parameter name {name!r} must be a lowercase identifier")
    if _ALTERNATIVES in (text or ""):
        return _any_of(text, name)
    stripped = (text or "").strip()
    if not stripped:
        raise SelectorError("empty event selector: give an event name (task.launched), state:NAME or template:PATTERN")
    body, source = stripped, None
    suffix = _SOURCE_SUFFIX.match(stripped)
    if suffix:
        body, source = suffix["body"].strip(), suffix["source"]
    kind, value = "event", body
    prefix = _KIND_PREFIX.match(body)
    # `word:text` is a kind; `words: text` (a space after the colon) may be a message template
    if prefix and (prefix["kind"] in _KINDS or prefix["value"][:1].strip()):
        kind, value = prefix["kind"], prefix["value"].strip()
        if kind not in _KINDS:
            raise SelectorError(
                f"unknown selector kind {kind!r} in {text!r}: use an event name, "
                + ", ".join(f"{k}:..." for k in _KINDS) + " (optionally with @SOURCE)"
            )
    if not value:
        raise SelectorError(f"selector {text!r} names nothing after {kind!r}")
    sql, params = _condition(kind, value, name, text)
    if source is not None:
        sql = f"({sql}) AND source = ${name}_source"
        params[f"{name}_source"] = source
    return Selector(text=stripped, kind=kind, value=value, source=source, sql=sql, params=params)


#: what separates alternatives in a selector (spaced, so that a `|` inside a pattern stays literal)
_ALTERNATIVES = " | "


def _any_of(text: str, name: str) -> Selector:
    """A selector picking the events any of the alternatives in `text` picks."""
    parts = [parse_selector(part, f"{name}_{number}") for number, part in enumerate(text.split(_ALTERNATIVES))]
    params = {key: value for part in parts for key, value in part.params.items()}
    sql = " OR ".join(f"({part.sql})" for part in parts)
    return Selector(text=text.strip(), kind="any", value=text.strip(), source=None, sql=sql, params=params)


def _condition(kind: str, value: str, name: str, text: str) -> tuple[str, dict]:
    if kind == "event":
        return f"event = ${name}_value", {f"{name}_value": value}
    if kind == "state":
        if value not in TASK_STATES:
            close = difflib.get_close_matches(value, TASK_STATES, n=1)
            hint = f" (did you mean state:{close[0]}?)" if close else f"; known states: {', '.join(TASK_STATES)}"
            raise SelectorError(f"unknown task state {value!r} in selector {text!r}{hint}")
        return f"event = ${name}_event AND task_state = ${name}_value", {
            f"{name}_event": "task.state", f"{name}_value": value,
        }
    column = "template" if kind == "template" else "message"
    return f"{column} LIKE ${name}_value", {f"{name}_value": value}


def _hint(con: duckdb.DuckDBPyConnection, selector: Selector) -> str:
    if selector.source is not None:
        sources = [row[0] for row in con.execute(
            f"SELECT DISTINCT source FROM events WHERE {selector.sql.rsplit(' AND source = ', 1)[0]} ORDER BY 1",
            {k: v for k, v in selector.params.items() if not k.endswith("_source")},
        ).fetchall()]
        if sources:
            return f" (it comes from source {', '.join(sources)})"
    if selector.kind == "event":
        names = [row[0] for row in con.execute("SELECT DISTINCT event FROM events WHERE event IS NOT NULL").fetchall()]
        close = difflib.get_close_matches(selector.value, names, n=3, cutoff=0.6)
        if close:
            return " (did you mean " + " or ".join(close) + "?)"
        return " (see: taskscope sql \"SELECT event, count(*) FROM events GROUP BY 1 ORDER BY 2 DESC\")"
    return ""


def task_events_sql(selectors: dict[str, Selector], per: str = "task") -> tuple[str, dict]:
    """SQL (and parameters) for the events each selector picks, one row per task they name.

    Columns: `tag` (the key in `selectors`), `run_id`, `task_id`, `try_id`, `ts`, `file_id`,
    `line`. Events naming several tasks (the interchange's `Sent tasks: [4, 5] ...`) count once
    for each, through `event_task_links`. The query has a `$run` parameter (None: every run)
    that the caller must bind. With `per="try"`, events without a try id are left out.

    >>> sql, params = task_events_sql({"a": parse_selector("task.launched", "a")})
    """
    if per not in ("task", "try"):
        raise ValueError(f"per must be 'task' or 'try', not {per!r}")
    parts, params = [], {}
    for tag, selector in selectors.items():
        params.update(selector.params)
        tag_sql = "'" + tag.replace("'", "''") + "'"
        parts.append(
            f"""SELECT {tag_sql} AS tag, run_id, task_id, try_id, ts, file_id, line FROM events
                WHERE ({selector.sql}) AND task_id IS NOT NULL AND run_id IS NOT NULL
                      AND {of_run()}
                UNION ALL
                SELECT {tag_sql}, l.run_id, l.task_id, l.try_id, e.ts, e.file_id, e.line
                FROM events e JOIN event_task_links l ON e.file_id = l.file_id AND e.line = l.line
                WHERE ({_aliased(selector.sql)}) AND e.task_id IS NULL AND l.task_id IS NOT NULL
                      AND l.run_id IS NOT NULL AND {of_run("l.run_id")}"""
        )
    sql = "\nUNION ALL\n".join(parts)
    if per == "try":
        sql = f"SELECT * FROM ({sql}) WHERE try_id IS NOT NULL"
    return sql, params


def _aliased(condition: str) -> str:
    """`condition` with its column names qualified by `e.` (for use beside a join)."""
    return re.sub(r"(?<![$\w.])(event|task_state|template|message|source)\b", r"e.\1", condition)
