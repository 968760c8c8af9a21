"""Rules: a table (data, not code) that names known messages and pulls ids out of them.

The built-in table is `parsl.toml` beside this file; users add their own TOML files with the
same shape. Rules run as one SQL statement over the staging table (DuckDB's RE2), so a rule
costs a regex test per un-named record, not a Python call.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from taskscope._sql import literal
from taskscope.schema import EVENT_COLUMNS
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
    """One known message: its canonical event name and the regexes that read it."""

    event: str
    pattern: str
    also: tuple[str, ...] = ()
    logger: str | None = None
    groups: dict[str, tuple[int, int]] = field(default_factory=dict)  # name -> (regex index, group)
    constants: dict[str, str] = field(default_factory=dict)  # column -> value, from `set`


def load_rules(extra_files: list[str | Path] | None = None) -> list[Rule]:
    """The built-in Parsl rules followed by those of `extra_files` (first match wins,
    so put more specific rules in your own files: they are tried first).

    >>> rules = load_rules()
    >>> any(rule.event == "task.launched" for rule in rules)
    True
    """
    tables = [tomllib.loads(Path(f).read_text()) for f in extra_files or []]
    tables.append(tomllib.loads(resources.files("taskscope.rules").joinpath("parsl.toml").read_text()))
    rules: list[Rule] = []
    for table in tables:
        for entry in table.get("rule", []):
            rules.append(_make_rule(entry))
    return rules


def _make_rule(entry: dict) -> Rule:
    try:
        event, pattern = entry["event"], entry["pattern"]
    except KeyError as missing:
        raise RuleError(f"rule {entry!r} lacks {missing}") from None
    regexes = [pattern, *entry.get("also", [])]
    groups: dict[str, tuple[int, int]] = {}
    for index, regex in enumerate(regexes):
        try:
            compiled = re.compile(regex)
        except re.error as exc:
            raise RuleError(f"rule {event!r}: bad regex {regex!r}: {exc}") from None
        for name, number in compiled.groupindex.items():
            groups.setdefault(name, (index, number))
    constants = {str(k): str(v) for k, v in entry.get("set", {}).items()}
    unknown = set(constants) - RULE_COLUMNS
    if unknown:
        raise RuleError(f"rule {event!r}: `set` names columns a rule cannot fill: {sorted(unknown)}")
    return Rule(event, pattern, tuple(entry.get("also", [])), entry.get("logger"), groups, constants)


def _matches_sql(rule: Rule) -> tuple[str, dict[str, str]]:
    """Select-list entries extracting every group of `rule` with one regex run per regex,
    and SQL for each named group's value over them.

    `regexp_extract` with a list of names maps them to the groups by position, so groups
    that are not named (or named in an earlier regex) get placeholder names.
    """
    regexes = [rule.pattern, *rule.also]
    entries, values = [], {}
    for index in sorted({index for index, _ in rule.groups.values()}):
        by_number = {number: name for name, (i, number) in rule.groups.items() if i == index}
        names = [by_number.get(number, f"_unnamed_{number}") for number in range(1, max(by_number) + 1)]
        entries.append(
            f"regexp_extract(first_line, {literal(regexes[index])}, [{', '.join(map(literal, names))}]) AS m{index}"
        )
        for name in by_number.values():
            values[name] = f"nullif(m{index}.\"{name}\", '')"
    return ", ".join(entries), values


def _typed(name: str, value: str) -> str:
    if _COLUMN_TYPES.get(name) == "BIGINT":
        return f"try_cast({value} AS BIGINT)"
    return value


def _int_list(value: str) -> str:
    return (
        f"to_json(list_filter(list_transform(string_split(regexp_replace({value}, '\\s', '', 'g'), ','), "
        "lambda v: try_cast(v AS BIGINT)), lambda v: v IS NOT NULL))"
    )


def _rule_branch_sql(number: int, rule: Rule | None) -> str:
    """The rule-derived columns of the distinct lines that rule `number` named (0: none did)."""
    matches, values = _matches_sql(rule) if rule else ("", {})
    columns = {"rule_event": literal(rule.event) if rule else "NULL::VARCHAR"}
    extras = []
    for name, value in values.items():
        if name in RULE_COLUMNS:
            columns[f"rule_{name}"] = _typed(name, value)
        elif name.endswith("_ids"):
            extras.append(f"{literal(name)}, json({_int_list(value)})")
        else:
            extras.append(f"{literal(name)}, {value}")
    # a constant (`set`) wins over a group of the same name
    for name, value in (rule.constants if rule else {}).items():
        columns[f"rule_{name}"] = _typed(name, literal(value))
    columns["rule_attrs"] = f"json_object({', '.join(extras)})" if extras else "NULL::JSON"
    select = ", ".join(f"{value} AS {name}" for name, value in columns.items())
    source = f"SELECT *, {matches} FROM numbered" if matches else "SELECT * FROM numbered"
    return f"SELECT first_line, logger, rule_no, template_text, {select} FROM ({source} WHERE rule_no = {number})"


def apply_rules_sql(rules: list[Rule], staged: str = "staged") -> str:
    """A SELECT over `staged` giving every event column, with rules and templates applied.

    Each distinct line is numbered with the first rule it matches; then one branch per rule
    reads that rule's lines, running each of its regexes once for all its groups.

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

    branches = [_rule_branch_sql(number, rule) for number, rule in enumerate(rules, start=1)]
    branches.append(_rule_branch_sql(0, None))
    filled = sorted({name for rule in rules for name in [*rule.constants, *rule.groups] if name in RULE_COLUMNS})

    selected = []
    for name, _ in EVENT_COLUMNS:
        if name == "event":
            selected.append("coalesce(s.event, d.rule_event, d.template_text) AS event")
        elif name == "template":
            selected.append("coalesce(s.template, d.template_text) AS template")
        elif name == "attrs":
            selected.append(
                "CASE WHEN s.event IS NOT NULL OR d.rule_attrs IS NULL THEN s.attrs "
                "ELSE json_merge_patch(coalesce(s.attrs, '{}'), d.rule_attrs) END AS attrs"
            )
        elif name in filled:
            selected.append(f"coalesce(s.{name}, CASE WHEN s.event IS NULL THEN d.rule_{name}::{_COLUMN_TYPES[name]} END) AS {name}")
        else:
            selected.append(f"s.{name}")
    numbered = with_template_sql(f"SELECT first_line, logger, {rule_no} AS rule_no FROM lines", "first_line",
                                 "template_text")
    return f"""
        WITH s AS (SELECT *, split_part(coalesce(message, ''), chr(10), 1) AS first_line FROM {staged}),
        lines AS (SELECT DISTINCT first_line, logger FROM s),
        numbered AS MATERIALIZED ({numbered}),
        d AS ({' UNION ALL BY NAME '.join(branches)})
        SELECT {', '.join(selected)}
        FROM s LEFT JOIN d ON d.first_line = s.first_line AND d.logger IS NOT DISTINCT FROM s.logger
    """
