"""Rules: a table (data, not code) that names known messages and pulls ids out of them.

The built-in tables are the `*.toml` files beside this file (`parsl.toml`, `academy.toml`);
users add their own TOML files with the same shape. Rules run as one SQL statement over the
staging table (DuckDB's RE2), so a rule costs a regex test per un-named record, not a Python call.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from taskscope._sql import literal
from taskscope._toml import did_you_mean, read_user_entries, shipped_tables, type_name, unknown_key
from taskscope.schema import EVENT_COLUMN_NAMES, EVENT_COLUMNS
from taskscope.templates import with_template_sql

_COLUMN_TYPES = dict(EVENT_COLUMNS)
# columns a rule may fill from a named group
RULE_COLUMNS = {
    "run_id", "task_id", "try_id", "app_name", "task_state", "executor_label", "executor_task_id",
    "block_id", "job_id", "manager_id", "worker_id", "host",
}


class RuleError(ValueError):
    """A rules file that cannot be used (bad TOML, bad regex, missing keys)."""


@dataclass(frozen=True)
class Rule:
    """One known message: its canonical event name and the regexes that read it. A rule
    without an event name only pulls ids out: its messages keep their template as name."""

    event: str | None
    pattern: str
    also: tuple[str, ...] = ()
    logger: str | None = None
    groups: dict[str, tuple[int, int]] = field(default_factory=dict)  # name -> (regex index, group)
    constants: dict[str, str] = field(default_factory=dict)  # column -> value, from `set`


def load_rules(extra_files: list[str | Path] | None = None) -> list[Rule]:
    """The rules of `extra_files` followed by the built-in ones (every `*.toml` of this package,
    `parsl.toml` first). The first match wins, so put more specific rules in your own files:
    they are tried first.

    A user's file is checked whole before it is used (`RuleError`, naming the file, the rule
    and the key): its keys and their types, and each regex as DuckDB's RE2 will run it.

    >>> rules = load_rules()
    >>> any(rule.event == "task.launched" for rule in rules)
    True
    """
    rules: list[Rule] = []
    if extra_files:
        with duckdb.connect() as re2:
            for path in extra_files:
                entries = read_user_entries(Path(path), "rules", RuleError)
                rules += [_make_rule(entry, f"{path}: rule {n}", re2) for n, entry in enumerate(entries, start=1)]
    for origin, table in shipped_tables("taskscope.rules"):
        rules += [_make_rule(entry, f"{origin}: rule {n}") for n, entry in enumerate(table["rule"], start=1)]
    return rules


def _make_rule(entry: object, where: str, re2: duckdb.DuckDBPyConnection | None = None) -> Rule:
    """The rule of one `[[rule]]` table; `where` names it in errors ("FILE: rule N"). With `re2`
    (a connection), each regex is also tried as DuckDB runs it: Python accepts some that RE2 does not."""
    if not isinstance(entry, dict):
        raise RuleError(f"{where} must be a table ([[rule]] with keys), not {type_name(entry)}")
    event = _optional_text(entry, "event", where, "an event name")
    where = f"{where} (event {event!r})" if event else where
    problem = unknown_key(entry, _RULE_KEYS)
    if problem:
        raise RuleError(f"{where}: {problem}")
    if "pattern" not in entry:
        raise RuleError(f"{where} lacks `pattern` (the regex that recognises its message)")
    pattern = _text(entry["pattern"], "pattern", where, "a regex")
    also = _also(entry, where)
    groups: dict[str, tuple[int, int]] = {}
    for index, (key, regex) in enumerate([("pattern", pattern), *((f"also[{n}]", r) for n, r in enumerate(also))]):
        for name, number in _compiled(regex, f"{where}: `{key}`", re2).groupindex.items():
            groups.setdefault(name, (index, number))
    logger = _optional_text(entry, "logger", where, "a logger name")
    return Rule(event, pattern, also, logger, groups, _constants(entry, where))


#: the keys of a `[[rule]]`
_RULE_KEYS = ("event", "pattern", "also", "logger", "set")


def _text(value: object, key: str, where: str, meaning: str) -> str:
    if not isinstance(value, str):
        raise RuleError(f"{where}: `{key}` must be {meaning} (a string), not {type_name(value)}")
    return value


def _also(entry: dict, where: str) -> tuple[str, ...]:
    """The `also` regexes: a list, or one regex written without its list."""
    also = entry.get("also", [])
    also = [also] if isinstance(also, str) else also
    if not isinstance(also, list):
        raise RuleError(f"{where}: `also` must be a list of regexes, not {type_name(also)}")
    return tuple(_text(regex, f"also[{n}]", where, "a regex") for n, regex in enumerate(also))


def _optional_text(entry: dict, key: str, where: str, meaning: str) -> str | None:
    value = entry.get(key)
    return None if value is None else _text(value, key, where, meaning)


def _compiled(regex: str, where: str, re2: duckdb.DuckDBPyConnection | None) -> re.Pattern:
    """`regex` compiled by Python (which reads its named groups); with `re2`, first tried as
    DuckDB's RE2 runs it (no lookbehind, no backreferences, ...)."""
    if re2 is not None:
        try:
            re2.execute("SELECT regexp_matches('', ?)", [regex]).fetchall()
        except duckdb.Error as exc:
            reason = str(exc).splitlines()[0].removeprefix("Invalid Input Error: ")
            raise RuleError(f"{where}: bad regex {regex!r}: RE2 (DuckDB's regex engine) rejects it: {reason}") from None
    try:
        return re.compile(regex)
    except re.error as exc:
        raise RuleError(f"{where}: bad regex {regex!r}: {exc}") from None


def _constants(entry: dict, where: str) -> dict[str, str]:
    """The `set` table: column -> the text to write there."""
    constants = entry.get("set", {})
    if not isinstance(constants, dict):
        raise RuleError(f"{where}: `set` must be a table of column = value (set = {{ task_state = \"failed\" }}), "
                        f"not {type_name(constants)}")
    for column, value in constants.items():
        if column not in RULE_COLUMNS:
            raise RuleError(f"{where}: `set` names a column a rule cannot fill: {column!r}"
                            f"{did_you_mean(column, RULE_COLUMNS)}; it may fill {', '.join(sorted(RULE_COLUMNS))}")
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise RuleError(f"{where}: `set.{column}` must be a string or an integer, not {type_name(value)}")
    return {column: str(value) for column, value in constants.items()}


def _group_value(rule: Rule, name: str) -> str:
    index, number = rule.groups[name]
    regex = ([rule.pattern, *rule.also])[index]
    return f"nullif(regexp_extract(first_line, {literal(regex)}, {number}), '')"


def _typed(name: str, value: str) -> str:
    if _COLUMN_TYPES.get(name) == "BIGINT":
        return f"try_cast({value} AS BIGINT)"
    return value


def _int_list(value: str) -> str:
    return (
        f"to_json(list_filter(list_transform(string_split(regexp_replace({value}, '\\s', '', 'g'), ','), "
        "lambda v: try_cast(v AS BIGINT)), lambda v: v IS NOT NULL))"
    )


def apply_rules_sql(rules: list[Rule], staged: str = "staged", extra: tuple[str, ...] = ()) -> str:
    """A SELECT over `staged` giving every event column, with rules and templates applied,
    then the `extra` expressions (over `s`, the staged row, and `d`, its rule: `d.rule_no` is
    the number of the rule that matched, 0 for none).

    Columns a record already has are kept; rules fill only what is NULL (and not at all for
    records a source already named, such as monitoring.db rows). Rules and masks run once per
    distinct (first line, logger), not once per record: a run repeats many lines verbatim.
    """
    conditions = []
    for number, rule in enumerate(rules, start=1):
        test = f"regexp_matches(first_line, {literal(rule.pattern)})"
        if rule.logger:
            test = f"starts_with(logger, {literal(rule.logger)}) AND {test}"
        conditions.append(f"WHEN {test} THEN {number}")
    rule_no = f"CASE {' '.join(conditions)} ELSE 0 END" if rules else "0"

    column_values: dict[str, list[str]] = {name: [] for name in RULE_COLUMNS}
    attr_values: list[str] = []
    for number, rule in enumerate(rules, start=1):
        extras = []
        for name, value in rule.constants.items():
            column_values[name].append(f"WHEN {number} THEN {_typed(name, literal(value))}")
        for name in rule.groups:
            value = _group_value(rule, name)
            if name in RULE_COLUMNS:
                column_values[name].append(f"WHEN {number} THEN {_typed(name, value)}")
            elif name.endswith("_ids"):
                extras.append(f"{literal(name)}, json({_int_list(value)})")
            else:
                extras.append(f"{literal(name)}, {value}")
        if extras:
            attr_values.append(f"WHEN {number} THEN json_object({', '.join(extras)})")

    # per distinct line: the rule's event name, the columns it fills, its extra attrs
    names = " ".join(f"WHEN {n} THEN {literal(r.event)}" for n, r in enumerate(rules, start=1) if r.event)
    derived = [
        f"CASE rule_no {names} END AS rule_event" if names else "NULL AS rule_event",
        f"CASE rule_no {' '.join(attr_values)} END AS rule_attrs" if attr_values else "NULL AS rule_attrs",
    ]
    filled = [name for name in RULE_COLUMNS if column_values[name]]
    derived += [f"CASE rule_no {' '.join(column_values[name])} END AS rule_{name}" for name in filled]

    selected = []
    for name, _ in EVENT_COLUMNS:
        if name == "event":
            # an unnamed event's name is its template: the source's own (a %-template) or the mined one
            selected.append("coalesce(s.event, d.rule_event, s.template, d.template_text) AS event")
        elif name == "template":
            selected.append("coalesce(s.template, d.template_text) AS template")
        elif name == "attrs":
            selected.append(
                "CASE WHEN s.event IS NOT NULL OR d.rule_attrs IS NULL THEN s.attrs "
                "ELSE json_merge_patch(coalesce(s.attrs, '{}'), d.rule_attrs) END AS attrs"
            )
        elif name in filled:
            selected.append(f"coalesce(s.{name}, CASE WHEN s.event IS NULL THEN d.rule_{name} END) AS {name}")
        else:
            selected.append(f"s.{name}")
    # the derivation needs rule_no first, so it is computed in two steps
    numbered = with_template_sql(f"SELECT first_line, logger, {rule_no} AS rule_no FROM lines", "first_line",
                                 "template_text")
    # the staged rows are read twice rather than through a shared CTE, which DuckDB would
    # materialise with every column (attrs included): a copy that cost more than the rules
    first_line = "split_part(coalesce(message, ''), chr(10), 1)"
    return f"""
        WITH lines AS (SELECT DISTINCT {first_line} AS first_line, logger FROM {staged}),
        numbered AS ({numbered}),
        d AS (SELECT *, {', '.join(derived)} FROM numbered)
        SELECT {', '.join([*selected, *extra])}
        FROM (SELECT *, {first_line} AS first_line FROM {staged}) s
        LEFT JOIN d ON d.first_line = s.first_line AND d.logger IS NOT DISTINCT FROM s.logger
    """


def reapply_rules(con: duckdb.DuckDBPyConnection, rules: list[Rule]) -> int:
    """Apply `rules` to the stored events no rule or source has named yet (their name is still
    their template), as an ingest would have; return how many events a rule named or gave ids.

    Events already named keep their name: the rules fill what is missing, they never rename.

    >>> reapply_rules(store.con, load_rules(["mine.toml"]))  # doctest: +SKIP
    12
    """
    unnamed = "(SELECT * REPLACE (NULL::VARCHAR AS event), rowid AS event_rowid FROM events WHERE event = template)"
    named = apply_rules_sql(rules, unnamed, ("s.event_rowid", "d.rule_no"))
    con.execute(f"CREATE OR REPLACE TEMP TABLE reapplied_rules AS SELECT * FROM ({named}) WHERE rule_no > 0")
    columns = [name for name in EVENT_COLUMN_NAMES if name != "file_id"]
    changed = " OR ".join(f"events.{name} IS DISTINCT FROM r.{name}" for name in columns)
    count = con.execute(
        f"""UPDATE events SET {', '.join(f'{name} = r.{name}' for name in columns)}
            FROM reapplied_rules r WHERE events.rowid = r.event_rowid AND ({changed})"""
    ).fetchall()[0][0]
    con.execute("DROP TABLE reapplied_rules")
    return int(count)
