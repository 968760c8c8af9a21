"""Relations: how ids learned from some events reach others (the report's "algebra of merging logs").

A relation is data, declared in TOML beside the rules: `parsl.toml` here for Parsl, and any file a
user passes (`taskscope ingest ... --relations mine.toml`). Three kinds:

```toml
[[relation]]            # within events that share `key`, a field one of them has is copied to all
kind = "implies"
key = ["run_id", "task_id"]
fields = ["app_name"]

[[relation]]            # an event carrying both `from` and `to` binds them; events with `from` get `to`
kind = "binds"
from = ["run_id", "executor_label", "executor_task_id"]
to = ["task_id", "try_id"]
on = "task.launched"    # optional: only events of this name bind

[[relation]]            # events of the same `within` between a start and an end event belong to its key
kind = "encloses"
start = "htex.worker.received"
end = "htex.worker.finished"
key = ["executor_task_id"]
within = ["run_id", "manager_id", "worker_id"]
```

`on`, `start` and `end` name events by their `event` column (a rule's canonical name, or the
template of a message no rule names). Keys and fields name `events` columns or `attrs` fields.
An optional `name` names a relation in the relate report. `taskscope.relations.engine` applies
them, with a few built-in steps, until nothing changes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from taskscope._toml import read_user_table, shipped_tables

__all__ = ["Binds", "Encloses", "Implies", "Relation", "RelationError", "load_relations"]

#: a field name as it may appear in a relation (an `events` column or an `attrs` key)
_FIELD_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:-]*$")
#: columns that say what an event is and where it came from: a relation reads them, never writes them
_READ_ONLY = {"ts", "source", "file", "line", "event", "template", "message", "attrs", "file_id"}


class RelationError(ValueError):
    """A relations file that cannot be used (bad TOML, unknown kind, missing or odd keys)."""


@dataclass(frozen=True)
class Implies:
    """Within events sharing `key`, the value of each of `fields` one of them has is copied to
    the others (the prototype's `widen_by_implication`). Two values in one group: a conflict,
    that group is left as it is."""

    name: str
    key: tuple[str, ...]
    fields: tuple[str, ...]


@dataclass(frozen=True)
class Binds:
    """Events (named `on`, if given) carrying both `from_` and `to` bind them; every event that
    has `from_` but lacks `to` gets it. A `from_` bound to two different `to`s: a conflict."""

    name: str
    from_: tuple[str, ...]
    to: tuple[str, ...]
    on: str | None = None


@dataclass(frozen=True)
class Encloses:
    """Events of one `within` group after a `start` event, up to the first `end` event with the
    same key (or the next start), belong to the start's `key`."""

    name: str
    start: str
    end: str
    key: tuple[str, ...]
    within: tuple[str, ...]


Relation = Implies | Binds | Encloses

_KEYS = {
    "implies": ({"key", "fields"}, set()),
    "binds": ({"from", "to"}, {"on"}),
    "encloses": ({"start", "end", "key", "within"}, set()),
}


def load_relations(extra_files: list[str | Path] | None = None) -> list[Relation]:
    """The shipped relations (every `*.toml` of this package, `parsl.toml` first) followed by
    those of `extra_files`.

    >>> [relation.name for relation in load_relations()][:2]
    ['worker intervals', 'executor task to task and try']
    """
    tables = shipped_tables("taskscope.relations")
    tables += [(str(path), read_user_table(Path(path), "relations", RelationError)) for path in extra_files or []]
    relations: list[Relation] = []
    for origin, table in tables:
        entries = table.get("relation", [])
        if not isinstance(entries, list):
            raise RelationError(f"relations file {origin}: `relation` must be an array of tables ([[relation]])")
        relations += [_make_relation(entry, origin) for entry in entries]
    return relations


def _make_relation(entry: dict, origin: str) -> Relation:
    kind = entry.get("kind")
    if kind not in _KEYS:
        raise RelationError(f"{origin}: relation {entry!r}: `kind` must be one of implies, binds, encloses")
    required, optional = _KEYS[kind]
    missing = required - set(entry)
    unknown = set(entry) - required - optional - {"kind", "name"}
    if missing or unknown:
        problem = f"lacks {sorted(missing)}" if missing else f"has unknown keys {sorted(unknown)}"
        raise RelationError(f"{origin}: {kind} relation {entry!r} {problem}")
    name = str(entry.get("name") or _default_name(kind, entry))
    where = f"{origin}: relation {name!r}"
    written = {"implies": "fields", "binds": "to", "encloses": "key"}[kind]
    fixed = sorted(_READ_ONLY & set(_names(entry, written, where)))
    if fixed:
        raise RelationError(f"{where}: `{written}` names columns a relation cannot change: {fixed}")
    if kind == "implies":
        key, fields = _names(entry, "key", where), _names(entry, "fields", where)
        if set(key) & set(fields):
            raise RelationError(f"{where}: `key` and `fields` share {sorted(set(key) & set(fields))}")
        return Implies(name, key, fields)
    if kind == "binds":
        on = entry.get("on")
        if on is not None and not isinstance(on, str):
            raise RelationError(f"{where}: `on` must be an event name (a string)")
        from_, to = _names(entry, "from", where), _names(entry, "to", where)
        if set(from_) & set(to):
            raise RelationError(f"{where}: `from` and `to` share {sorted(set(from_) & set(to))}")
        return Binds(name, from_, to, on)
    for bound in ("start", "end"):
        if not isinstance(entry[bound], str):
            raise RelationError(f"{where}: `{bound}` must be an event name (a string)")
    key, within = _names(entry, "key", where), _names(entry, "within", where)
    if set(key) & set(within):
        raise RelationError(f"{where}: `key` and `within` share {sorted(set(key) & set(within))}")
    return Encloses(name, entry["start"], entry["end"], key, within)


def _names(entry: dict, key: str, where: str) -> tuple[str, ...]:
    """The list of field names under `key` (a single string is taken as a list of one)."""
    value = entry[key]
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise RelationError(f"{where}: `{key}` must be a non-empty list of field names")
    odd = [n for n in names if not _FIELD_NAME.match(n)]
    if odd:
        raise RelationError(f"{where}: `{key}` has names that are not field names: {odd}")
    return tuple(names)


def _default_name(kind: str, entry: dict) -> str:
    def joined(value) -> str:
        return ",".join(value) if isinstance(value, list) else str(value)

    if kind == "implies":
        return f"({joined(entry.get('key'))}) implies {joined(entry.get('fields'))}"
    if kind == "binds":
        return f"({joined(entry.get('from'))}) binds ({joined(entry.get('to'))})"
    return f"{entry.get('start')} .. {entry.get('end')} encloses {joined(entry.get('key'))}"
