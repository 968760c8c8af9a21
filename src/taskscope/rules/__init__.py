"""Rules: a table (data, not code) that names known messages and pulls ids out of them.

The built-in tables are the `*.toml` files beside this file (`parsl.toml`, `academy.toml`);
users add their own TOML files with the same shape. Rules run as one SQL statement over the
staging table (DuckDB's RE2), so a rule costs a regex test per un-named record, not a Python call.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from taskscope._sql import literal
from taskscope._toml import Declared, did_you_mean, read_user_entries, shipped_tables, type_name, unknown_key
from taskscope.schema import EVENT_COLUMN_NAMES, EVENT_COLUMNS
from taskscope.templates import with_template_sql

_COLUMN_TYPES = dict(EVENT_COLUMNS)
# columns a rule may fill from a named group
RULE_COLUMNS = {
    "run_id", "task_id", "try_id", "app_name", "task_state", "executor_label", "executor_task_id",
    "block_id", "job_id", "manager_id", "worker_id", "host",
}
#: the columns of integers among them: a value read for one that is no integer is kept in `attrs`
INTEGER_COLUMNS = sorted(name for name in RULE_COLUMNS if _COLUMN_TYPES[name] == "BIGINT")


class RuleError(ValueError):
    """A rules file that cannot be used (bad TOML, bad regex, missing keys)."""


@dataclass(frozen=True)
class Rule(Declared):
    """One known message: its canonical event name and the regexes that read it. A rule
    without an event name only pulls ids out: its messages keep their template as name.
    `origin` and `number` say where it was declared (see `Declared`)."""

    event: str | None
    pattern: str
    also: tuple[str, ...] = ()
    logger: str | None = None
    groups: dict[str, tuple[int, int]] = field(default_factory=dict)  # name -> (regex index, group)
    constants: dict[str, str] = field(default_factory=dict)  # column -> value, from `set`

    @property
    def label(self) -> str:
        """How a note names it.

        >>> Rule("job.dispatched", "^dispatch", origin="mine.toml", number=2).label
        'rule 2 of mine.toml ("job.dispatched")'
        """
        return f'rule {self.number} of {self.origin}' + (f' ("{self.event}")' if self.event else "")


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
        with duckdb.connect() as duck:
            for path in extra_files:
                entries = read_user_entries(Path(path), "rules", RuleError)
                rules += [_make_rule(entry, Declared(origin=str(path), number=n), duck)
                          for n, entry in enumerate(entries, start=1)]
    for origin, table in shipped_tables("taskscope.rules"):
        rules += [_make_rule(entry, Declared(origin=origin, number=n, shipped=True))
                  for n, entry in enumerate(table["rule"], start=1)]
    return rules


def _make_rule(entry: object, declared: Declared, duck: duckdb.DuckDBPyConnection | None = None) -> Rule:
    """The rule of one `[[rule]]` table, declared where `declared` says (errors name it "FILE:
    rule N"). With `duck` (a DuckDB connection), each regex is also tried as DuckDB runs it
    (Python accepts some that RE2 does not), and each `set` value against its column's type."""
    where = f"{declared.origin}: rule {declared.number}"
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
        for name, number in _compiled(regex, f"{where}: `{key}`", duck).groupindex.items():
            groups.setdefault(name, (index, number))
    logger = _optional_text(entry, "logger", where, "a logger name")
    return Rule(event, pattern, also, logger, groups, _constants(entry, where, duck),
                origin=declared.origin, number=declared.number, shipped=declared.shipped)


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


def _compiled(regex: str, where: str, duck: duckdb.DuckDBPyConnection | None) -> re.Pattern:
    """`regex` compiled by Python (which reads its named groups); with `duck`, first tried as
    DuckDB's RE2 runs it (no lookbehind, no backreferences, ...)."""
    if duck is not None:
        try:
            duck.execute("SELECT regexp_matches('', ?)", [regex]).fetchall()
        except duckdb.Error as exc:
            reason = str(exc).splitlines()[0].removeprefix("Invalid Input Error: ")
            raise RuleError(f"{where}: bad regex {regex!r}: RE2 (DuckDB's regex engine) rejects it: {reason}") from None
    try:
        return re.compile(regex)
    except re.error as exc:
        raise RuleError(f"{where}: bad regex {regex!r}: {exc}") from None


def _constants(entry: dict, where: str, duck: duckdb.DuckDBPyConnection | None = None) -> dict[str, str]:
    """The `set` table: column -> the text to write there. With `duck`, a value for a column of
    integers must be one as DuckDB reads it: the column would get NULL, and the value be lost."""
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
        if duck is not None and column in INTEGER_COLUMNS and not _is_integer(duck, str(value)):
            raise RuleError(f"{where}: `set.{column}` must be an integer ({column} is a column of integers), "
                            f"not {value!r}")
    return {column: str(value) for column, value in constants.items()}


def _is_integer(duck: duckdb.DuckDBPyConnection, text: str) -> bool:
    return bool(duck.execute("SELECT try_cast(? AS BIGINT) IS NOT NULL", [text]).fetchall()[0][0])


def _group_value(rule: Rule, name: str, text: str = "first_line") -> str:
    """The SQL of what group `name` of `rule` reads from the SQL string `text`."""
    index, number = rule.groups[name]
    regex = ([rule.pattern, *rule.also])[index]
    return f"nullif(regexp_extract({text}, {literal(regex)}, {number}), '')"


def _unfit(value: str) -> str:
    """`value` (text read for a column of integers) where it is no integer, else NULL."""
    return f"CASE WHEN try_cast({value} AS BIGINT) IS NULL THEN {value} END"


def _typed(name: str, value: str) -> str:
    if _COLUMN_TYPES.get(name) == "BIGINT":
        return f"try_cast({value} AS BIGINT)"
    return value


def _int_list(value: str) -> str:
    return (
        f"to_json(list_filter(list_transform(string_split(regexp_replace({value}, '\\s', '', 'g'), ','), "
        "lambda v: try_cast(v AS BIGINT)), lambda v: v IS NOT NULL))"
    )


@dataclass
class _RuleValues:
    """What the rules read from their texts, as the arms of a CASE on the number of the rule
    that matched: per column, the value; the extra `attrs`; per column of integers, the text
    read for it where it is no integer (kept in `attrs`, not lost)."""

    columns: dict[str, list[str]] = field(default_factory=lambda: {name: [] for name in RULE_COLUMNS})
    attrs: list[str] = field(default_factory=list)
    unfit: dict[str, list[str]] = field(default_factory=lambda: {name: [] for name in INTEGER_COLUMNS})


def _rule_values(numbered: list[tuple[int, Rule]], text: Callable[[int], str]) -> _RuleValues:
    """The arms for `numbered` rules, regex `i` of a rule (0: its pattern) reading the SQL string `text(i)`."""
    values = _RuleValues()
    for number, rule in numbered:
        extras = []
        for name, value in rule.constants.items():
            values.columns[name].append(f"WHEN {number} THEN {_typed(name, literal(value))}")
        for name, (index, _) in rule.groups.items():
            value = _group_value(rule, name, text(index))
            if name in RULE_COLUMNS:
                values.columns[name].append(f"WHEN {number} THEN {_typed(name, value)}")
                if name in values.unfit and name not in rule.constants:
                    values.unfit[name].append(f"WHEN {number} THEN {_unfit(value)}")
            elif name.endswith("_ids"):
                extras.append(f"{literal(name)}, json({_int_list(value)})")
            else:
                extras.append(f"{literal(name)}, {value}")
        if extras:
            values.attrs.append(f"WHEN {number} THEN json_object({', '.join(extras)})")
    return values


def apply_rules_sql(rules: list[Rule], staged: str = "staged", extra: tuple[str, ...] = ()) -> str:
    """A SELECT over `staged` giving every event column, with rules and templates applied,
    then the `extra` expressions (over `s`, the staged row, and `d`, its rule: `d.rule_no` is
    the number of the rule that matched, 0 for none).

    Columns a record already has are kept; rules fill only what is NULL (and not at all for
    records a source already named, such as monitoring.db rows). A value a group reads for a
    column of integers (`try_id`) that is no integer is kept in `attrs` under the group's name.
    Rules and masks run once per distinct (first line, logger), not once per record: a run
    repeats many lines verbatim. A rule's `pattern` reads the first line; its `also` regexes
    read the whole message, so those of a record of several lines run again on that record.
    """
    conditions = []
    for number, rule in enumerate(rules, start=1):
        test = f"regexp_matches(first_line, {literal(rule.pattern)})"
        if rule.logger:
            test = f"starts_with(logger, {literal(rule.logger)}) AND {test}"
        conditions.append(f"WHEN {test} THEN {number}")
    rule_no = f"CASE {' '.join(conditions)} ELSE 0 END" if rules else "0"

    numbered_rules = list(enumerate(rules, start=1))
    # per distinct line: every regex reads the first line (the whole message, when it has one line)
    on_line = _rule_values(numbered_rules, lambda index: "first_line")
    # per record of several lines whose rule has `also` groups: those read the whole message
    with_also = [(number, rule) for number, rule in numbered_rules if any(i > 0 for i, _ in rule.groups.values())]
    on_record = _rule_values(with_also, lambda index: "s.first_line" if index == 0 else "s.message")
    several_lines = (f"d.rule_no IN ({', '.join(str(number) for number, _ in with_also)}) "
                     "AND strlen(coalesce(s.message, '')) <> strlen(s.first_line)")

    def read(name: str, record_arms: list[str]) -> str:
        """What the record's rule read for `name` (`d.rule_<name>`, the line's)."""
        if not record_arms:
            return f"d.rule_{name}"
        return f"CASE WHEN {several_lines} THEN CASE d.rule_no {' '.join(record_arms)} END ELSE d.rule_{name} END"

    # per distinct line: the rule's event name, the columns it fills, its extra attrs
    names = " ".join(f"WHEN {n} THEN {literal(r.event)}" for n, r in numbered_rules if r.event)
    derived = [
        f"CASE rule_no {names} END AS rule_event" if names else "NULL AS rule_event",
        f"CASE rule_no {' '.join(on_line.attrs)} END AS rule_attrs" if on_line.attrs else "NULL AS rule_attrs",
    ]
    filled = [name for name in RULE_COLUMNS if on_line.columns[name]]
    derived += [f"CASE rule_no {' '.join(on_line.columns[name])} END AS rule_{name}" for name in filled]
    unfit = [name for name in INTEGER_COLUMNS if on_line.unfit[name]]
    derived += [f"CASE rule_no {' '.join(on_line.unfit[name])} END AS rule_unfit_{name}" for name in unfit]

    selected = []
    for name, _ in EVENT_COLUMNS:
        if name == "event":
            # an unnamed event's name is its template: the source's own (a %-template) or the mined one
            selected.append("coalesce(s.event, d.rule_event, s.template, d.template_text) AS event")
        elif name == "template":
            selected.append("coalesce(s.template, d.template_text) AS template")
        elif name == "attrs":
            selected.append(_attrs_sql(read("attrs", on_record.attrs),
                                       {column: read(f"unfit_{column}", on_record.unfit[column]) for column in unfit}))
        elif name in filled:
            value = read(name, on_record.columns[name])
            selected.append(f"coalesce(s.{name}, CASE WHEN s.event IS NULL THEN {value} END) AS {name}")
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


def _attrs_sql(rule_attrs: str, unfit: dict[str, str]) -> str:
    """The `attrs` of a record: its own, with the fields its rule read (`rule_attrs`) merged in,
    and each value read for a column of integers that is no integer (`unfit`: column -> SQL)
    where the record has no value of its own for that column, nor a field of that name."""
    merged = (f"CASE WHEN {rule_attrs} IS NULL THEN s.attrs "
              f"ELSE json_merge_patch(coalesce(s.attrs, '{{}}'), {rule_attrs}) END")
    if not unfit:
        return f"CASE WHEN s.event IS NOT NULL THEN s.attrs ELSE {merged} END AS attrs"
    lost = {column: f"{value} IS NOT NULL AND s.{column} IS NULL" for column, value in unfit.items()}
    kept = ", ".join(
        f"{literal(column)}, CASE WHEN {lost[column]} AND json_extract({merged}, {literal(f'$.{column}')}) IS NULL "
        f"THEN {value} END"
        for column, value in unfit.items())
    # merged onto '{}' first, so that a column with nothing to keep is left out, not a JSON null
    # (which would remove the record's own field of that name)
    return (f"CASE WHEN s.event IS NOT NULL THEN s.attrs "
            f"WHEN {' OR '.join(f'({condition})' for condition in lost.values())} "
            f"THEN json_merge_patch(coalesce({merged}, '{{}}'), json_merge_patch('{{}}', json_object({kept}))) "
            f"ELSE {merged} END AS attrs")


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


def user_rule_notes(con: duckdb.DuckDBPyConnection, rules: list[Rule]) -> list[str]:
    """One line per rule of a user's file that names nothing among the stored events, saying
    why (no message matched its pattern; its messages come from no logger it accepts; an
    earlier rule takes every message it matches), and per rule whose groups read values for a
    column of integers that are no integers (kept in `attrs`). Shipped rules are not checked:
    Parsl's finding nothing in a Dask log is normal. Call it after an ingest with its rules.

    One aggregate query over the distinct (first line, logger) of the stored events, whatever
    their number: the user's regexes run once per distinct line, as at ingest.

    >>> print(*user_rule_notes(store.con, load_rules(["mine.toml"])), sep="\\n")  # doctest: +SKIP
    rule 2 of mine.toml ("job.dispatched") named no event: no message matched '^dispatch ' (a pattern reads a message's first line)
    """
    numbered = list(enumerate(rules, start=1))
    checked = [(number, rule) for number, rule in numbered if rule.from_user]
    if not checked:
        return []
    earlier = numbered[:checked[-1][0]]  # the rules that may take a line before a checked one
    integer_groups = {number: [name for name in INTEGER_COLUMNS if name in rule.groups and name not in rule.constants]
                      for number, rule in checked}
    lacking = sorted({name for names in integer_groups.values() for name in names})
    first_line = "split_part(coalesce(message, ''), chr(10), 1)"
    lines = (f"SELECT {first_line} AS first_line, logger, count(*) AS events"
             f"{''.join(f', count(*) FILTER (WHERE {name} IS NULL) AS lacking_{name}' for name in lacking)} "
             "FROM events GROUP BY ALL")
    tests = []
    for number, rule in earlier:
        tests.append(f"regexp_matches(first_line, {literal(rule.pattern)}) AS m_{number}")
        accepts = f"coalesce(starts_with(logger, {literal(rule.logger)}), FALSE)" if rule.logger else "TRUE"
        tests.append(f"{accepts} AS l_{number}")
    rule_no = f"CASE {' '.join(f'WHEN m_{n} AND l_{n} THEN {n}' for n, _ in earlier)} ELSE 0 END"
    aggregates = []
    for number, rule in checked:
        aggregates += [
            f"coalesce(sum(events) FILTER (WHERE m_{number}), 0)",
            f"coalesce(sum(events) FILTER (WHERE m_{number} AND l_{number}), 0)",
            f"count(*) FILTER (WHERE rule_no = {number})",
            f"mode(rule_no) FILTER (WHERE m_{number} AND l_{number})",
            f"list(DISTINCT logger ORDER BY logger) FILTER (WHERE m_{number} AND logger IS NOT NULL)",
        ]
        for name in integer_groups[number]:
            unfit = _unfit(_group_value(rule, name))
            aggregates += [
                f"coalesce(sum(lacking_{name}) FILTER (WHERE rule_no = {number} AND {unfit} IS NOT NULL), 0)",
                f"min({unfit}) FILTER (WHERE rule_no = {number})",
            ]
    row = list(con.execute(
        f"SELECT {', '.join(aggregates)} FROM (SELECT *, {rule_no} AS rule_no FROM "
        f"(SELECT *, {', '.join(tests)} FROM ({lines})))"
    ).fetchall()[0])
    notes = []
    for number, rule in checked:
        matched, accepted, named, taken_by, loggers = row[:5]
        del row[:5]
        if not named:
            notes.append(_idle_rule_note(rule, matched, accepted, rules[taken_by - 1] if taken_by else None,
                                         loggers or []))
        for name in integer_groups[number]:
            kept, example = row[:2]
            del row[:2]
            if kept:
                events = f"{kept:,} event{'s' if kept != 1 else ''}"
                notes.append(f"{rule.label} read a {name} that is no integer on {events} (e.g. {example!r}): "
                             f"kept in attrs as {name}")
    return notes


def _idle_rule_note(rule: Rule, matched: int, accepted: int, taken_by: Rule | None, loggers: list[str]) -> str:
    """Why `rule` named nothing: it matched no message's first line (`matched`), none of them
    from a logger it accepts (`accepted`), or `taken_by` came first for each of them."""
    did = f"{rule.label} named no event" if rule.event else f"{rule.label} read nothing"
    if not matched:
        return f"{did}: no message matched {rule.pattern!r} (a pattern reads a message's first line)"
    if not accepted:
        shown = ", ".join(repr(logger) for logger in loggers[:3]) + (", ..." if len(loggers) > 3 else "")
        theirs = f"theirs: {shown}" if loggers else "they have no logger"
        return (f"{did}: its pattern matches {_messages(matched)}, none from a logger starting with "
                f"{rule.logger!r} ({theirs}){did_you_mean(rule.logger or '', loggers)}")
    earlier = taken_by.label if taken_by else "an earlier rule"
    return f"{did}: {earlier} comes first and takes every message it matches ({accepted:,})"


def _messages(count: int) -> str:
    return f"{count:,} message{'' if count == 1 else 's'}"
