"""Rules: a table (data, not code) that names known messages and pulls ids out of them.

The built-in tables are the `*.toml` files beside this file (`parsl.toml`, `academy.toml`);
users add their own TOML files with the same shape. Rules run as one SQL statement over the
staging table (DuckDB's RE2), so a rule costs a regex test per un-named record, not a Python call.
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
    """The rules of `extra_files` followed by the built-in ones (every `*.toml` of this package,
    `parsl.toml` first). The first match wins, so put more specific rules in your own files:
    they are tried first.

    >>> rules = load_rules()
    >>> any(rule.event == "task.launched" for rule in rules)
    True
    """
    tables = [_read_rules_file(Path(f)) for f in extra_files or []]
    package = resources.files("taskscope.rules")
    shipped = sorted((entry for entry in package.iterdir() if entry.name.endswith(".toml")),
                     key=lambda entry: (entry.name != "parsl.toml", entry.name))
    tables += [tomllib.loads(entry.read_text()) for entry in shipped]
    rules: list[Rule] = []
    for table in tables:
        for entry in table.get("rule", []):
            rules.append(_make_rule(entry))
    return rules


def _read_rules_file(path: Path) -> dict:
    try:
        return tomllib.loads(path.read_text())
    except OSError as exc:
        raise RuleError(f"rules file {path}: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise RuleError(f"rules file {path} is not valid TOML: {exc}") from None


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


def apply_rules_sql(rules: list[Rule], staged: str = "staged") -> str:
    """A SELECT over `staged` giving every event column, with rules and templates applied.

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
    names = " ".join(f"WHEN {n} THEN {literal(r.event)}" for n, r in enumerate(rules, start=1))
    derived = [
        f"CASE rule_no {names} END AS rule_event" if rules else "NULL AS rule_event",
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
    return f"""
        WITH s AS (SELECT *, split_part(coalesce(message, ''), chr(10), 1) AS first_line FROM {staged}),
        lines AS (SELECT DISTINCT first_line, logger FROM s),
        numbered AS ({numbered}),
        d AS (SELECT *, {', '.join(derived)} FROM numbered)
        SELECT {', '.join(selected)}
        FROM s LEFT JOIN d ON d.first_line = s.first_line AND d.logger IS NOT DISTINCT FROM s.logger
    """
