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

from taskscope._toml import Declared, read_user_entries, shipped_tables, type_name, unknown_key

__all__ = ["Binds", "Encloses", "Implies", "Relation", "RelationError", "load_relations"]

#: a field name as it may appear in a relation (an `events` column or an `attrs` key)
_FIELD_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:-]*$")
#: columns that say what an event is and where it came from: a relation reads them, never writes them
_READ_ONLY = {"ts", "source", "file", "line", "event", "template", "message", "attrs", "file_id"}


class RelationError(ValueError):
    """A relations file that cannot be used (bad TOML, unknown kind, missing or odd keys)."""


class _Declared(Declared):
    """What every kind of relation has besides its fields: where it was declared."""

    name: str

    @property
    def label(self) -> str:
        """How a note names it.

        >>> Binds("tie jobs", ("job",), ("task_id",), origin="mine.toml", number=1).label
        'relation 1 of mine.toml ("tie jobs", binds)'
        """
        return f'relation {self.number} of {self.origin} ("{self.name}", {type(self).__name__.lower()})'


@dataclass(frozen=True)
class Implies(_Declared):
    """Within events sharing `key`, the value of each of `fields` one of them has is copied to
    the others (the prototype's `widen_by_implication`). Two values in one group: a conflict,
    that group is left as it is."""

    name: str
    key: tuple[str, ...]
    fields: tuple[str, ...]


@dataclass(frozen=True)
class Binds(_Declared):
    """Events (named `on`, if given) carrying both `from_` and `to` bind them; every event that
    has `from_` but lacks `to` gets it. A `from_` bound to two different `to`s: a conflict."""

    name: str
    from_: tuple[str, ...]
    to: tuple[str, ...]
    on: str | None = None


@dataclass(frozen=True)
class Encloses(_Declared):
    """Events of one `within` group after a `start` event, up to the first `end` event that
    agrees with the start's key (or the next start), belong to the start's `key`. An end agrees
    when it carries some of the key's fields and each is the start's: an end naming only the
    task of a (task, try) key closes that task's interval; one naming none closes nothing."""

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
    those of `extra_files`. A user's file is checked whole (`RelationError`, naming the file,
    the relation and the key).

    >>> [relation.name for relation in load_relations()][:2]
    ['worker intervals', 'executor task to task and try']
    """
    tables = [(origin, table["relation"], True) for origin, table in shipped_tables("taskscope.relations")]
    tables += [(str(path), read_user_entries(Path(path), "relations", RelationError), False)
               for path in extra_files or []]
    return [_make_relation(entry, Declared(origin=origin, number=n, shipped=shipped))
            for origin, entries, shipped in tables for n, entry in enumerate(entries, start=1)]


def _make_relation(entry: object, declared: Declared) -> Relation:
    """The relation of one `[[relation]]` table, declared where `declared` says (errors name it
    "FILE: relation N")."""
    where = f"{declared.origin}: relation {declared.number}"
    if not isinstance(entry, dict):
        raise RelationError(f"{where} must be a table ([[relation]] with keys), not {type_name(entry)}")
    name = entry.get("name")
    if name is not None and not isinstance(name, str):
        raise RelationError(f"{where}: `name` must be a string, not {type_name(name)}")
    given = f"{where} ({name!r})" if name else where
    kind = _kind(entry, given)
    required, _ = _KEYS[kind]
    names = {key: _names(entry, key, given) for key in required - {"start", "end"}}
    name = name or _default_name(kind, entry, names)
    where = f"{where} ({name!r})"
    written = {"implies": "fields", "binds": "to", "encloses": "key"}[kind]
    fixed = sorted(_READ_ONLY & set(names[written]))
    if fixed:
        raise RelationError(f"{where}: `{written}` names columns a relation cannot change: {fixed}")
    first, second = {"implies": ("key", "fields"), "binds": ("from", "to"), "encloses": ("key", "within")}[kind]
    shared = sorted(set(names[first]) & set(names[second]))
    if shared:
        raise RelationError(f"{where}: `{first}` and `{second}` share {shared}")
    at = {"origin": declared.origin, "number": declared.number, "shipped": declared.shipped}
    if kind == "implies":
        return Implies(name, names["key"], names["fields"], **at)
    if kind == "binds":
        return Binds(name, names["from"], names["to"], entry.get("on"), **at)
    return Encloses(name, entry["start"], entry["end"], names["key"], names["within"], **at)


def _kind(entry: dict, where: str) -> str:
    """The relation's kind, once its keys are those of its kind and its event names are strings."""
    kind = entry.get("kind")
    if not isinstance(kind, str) or kind not in _KEYS:
        raise RelationError(f"{where}: `kind` must be one of implies, binds, encloses")
    required, optional = _KEYS[kind]
    # an unknown key first: a misspelt one (`keys`) is why a required one seems missing
    problem = unknown_key(entry, ["kind", "name", *sorted(required), *sorted(optional)])
    if problem:
        raise RelationError(f"{where}: {kind} relation has {problem}")
    missing = required - set(entry)
    if missing:
        raise RelationError(f"{where}: {kind} relation lacks {sorted(missing)}")
    for key in ("on", "start", "end"):
        if key in entry and not isinstance(entry[key], str):
            raise RelationError(f"{where}: `{key}` must be an event name (a string), not {type_name(entry[key])}")
    return kind


def _names(entry: dict, key: str, where: str) -> tuple[str, ...]:
    """The list of field names under `key` (a single string is taken as a list of one)."""
    value = entry[key]
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise RelationError(f"{where}: `{key}` must be a non-empty list of field names (strings), not {value!r}")
    odd = [n for n in names if not _FIELD_NAME.match(n)]
    if odd:
        raise RelationError(f"{where}: `{key}` has names that are not field names: {odd}")
    return tuple(names)


def _default_name(kind: str, entry: dict, names: dict[str, tuple[str, ...]]) -> str:
    def joined(key: str) -> str:
        return ",".join(names[key])

    if kind == "implies":
        return f"({joined('key')}) implies {joined('fields')}"
    if kind == "binds":
        return f"({joined('from')}) binds ({joined('to')})"
    return f"{entry['start']} .. {entry['end']} encloses {joined('key')}"
