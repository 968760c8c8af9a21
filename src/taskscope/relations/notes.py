"""Notes on a user's relations that changed nothing: after an ingest, why each did nothing.

A relation that finds nothing to do says nothing by itself: a misspelt field (`jobb`), an event
name that no event has (`task.dispached`) or an `on` event that never carries both ids leave
the ingest's summary as it would be without the relation. These notes say which and why. They
are for a user's relations only: Parsl's finding nothing in a Dask log is normal.
"""

from __future__ import annotations

import duckdb

from taskscope._sql import literal
from taskscope._toml import did_you_mean
from taskscope.relations import Binds, Encloses, Implies, Relation
from taskscope.relations.engine import RelateReport, column_types
from taskscope.relations.steps import Fields, step_names

#: what a relation of each kind does, said of one that did none of it
_DID_NOTHING = {Implies: "copied nothing", Binds: "tied nothing", Encloses: "enclosed nothing"}


def user_relation_notes(con: duckdb.DuckDBPyConnection, relations: list[Relation],
                        report: RelateReport | None) -> list[str]:
    """One line per relation of a user's file that changed no event in the relate that made
    `report`, when the store shows why: it names fields that no event has, or events that no
    event is named (each with the closest one as a suggestion), every group it found holds two
    values, or no event has what it reads (a `binds` whose `on` events never carry both keys).
    A relation that found its work already done (the same file given again) gets no note. An
    `encloses` whose `end` no event is named gets one even when it enclosed events: each of its
    intervals ran to the next start.

    Cheap on a big store: one aggregate query over `events`, and only when a name is missing,
    one or two more for the names there are, to suggest the closest.

    >>> print(*user_relation_notes(store.con, load_relations(["mine.toml"]), report.relate), sep="\\n")  # doctest: +SKIP
    relation 1 of mine.toml ("tie jobs", binds) tied nothing: no event is named 'task.dispached' (did you mean `task.dispatched`?)
    """
    changed = (report.changed or {}) if report else {}
    mine = [relation for relation in relations if relation.from_user]
    idle = [relation for relation in mine if not any(changed.get(name, 0) for name in step_names(relation))]
    # an `encloses` whose end no event is named still encloses, wrongly: up to the next start
    unended = [relation for relation in mine if isinstance(relation, Encloses) and relation not in idle]
    if not idle and not unended:
        return []
    fields = Fields(column_types(con, "events"))
    counts = _Counts(fields)
    for relation in idle:
        counts.add_relation(relation)
    for relation in unended:
        counts.count(("event", relation.end), [counts.named(relation.end)])
    found = counts.run(con)
    known = _KnownNames(con, fields)
    notes = []
    for relation in mine:
        if relation in idle:
            reason = _reason(relation, found, known, report)
        elif relation in unended and not found[("event", relation.end)]:
            reason = _unended(relation, known)
        else:
            reason = None
        if reason:
            notes.append(f"{relation.label} {reason}")
    return notes


class _Counts:
    """The counts the notes need, as the aggregates of one query over `events`: each test (a
    field present, an event's name) is computed once per event, then counted alone or with others."""

    def __init__(self, fields: Fields):
        self.fields = fields
        self.tests: dict[str, str] = {}  # SQL condition -> its column name in the query
        self.counts: dict[tuple, list[str]] = {}  # what is counted -> the tests that must all hold

    def test(self, condition: str) -> str:
        return self.tests.setdefault(condition, f"t_{len(self.tests)}")

    def present(self, name: str) -> str:
        """The test that the event has field `name`. An `attrs` field's name is looked for in the
        text of `attrs` first: a substring test is far cheaper than parsing the JSON."""
        if self.fields.is_column(name):
            return self.test(f"events.{name} IS NOT NULL")
        written = literal(f'"{name}"')  # as a key is written in JSON text
        return self.test(f"CASE WHEN contains(events.attrs::VARCHAR, {written}) "
                         f"THEN NOT ({self.fields.missing(name)}) ELSE FALSE END")

    def named(self, event: str) -> str:
        return self.test(f"events.event = {literal(event)}")

    def count(self, what: tuple, tests: list[str]) -> None:
        self.counts.setdefault(what, tests)

    def add_relation(self, relation: Relation) -> None:
        for name in _field_names(relation):
            self.count(("field", name), [self.present(name)])
        for event in _event_names(relation):
            self.count(("event", event), [self.named(event)])
        if isinstance(relation, Binds):
            on = [self.named(relation.on)] if relation.on is not None else []
            self.count(("binds", relation), [*on, *map(self.present, (*relation.from_, *relation.to))])
        elif isinstance(relation, Implies):
            for field in relation.fields:
                self.count(("implies", relation, field), list(map(self.present, (*relation.key, field))))
        else:
            self.count(("encloses", relation),
                       [self.named(relation.start), *map(self.present, (*relation.key, *relation.within))])

    def run(self, con: duckdb.DuckDBPyConnection) -> dict[tuple, int]:
        keys = list(self.counts)
        counted = ", ".join(f"count(*) FILTER (WHERE {' AND '.join(self.counts[key])})" for key in keys)
        tested = ", ".join(f"{condition} AS {name}" for condition, name in self.tests.items())
        row = con.execute(f"SELECT {counted} FROM (SELECT {tested} FROM events)").fetchall()[0]
        return dict(zip(keys, row))


class _KnownNames:
    """The fields and event names the store holds, read only when a note suggests one."""

    def __init__(self, con: duckdb.DuckDBPyConnection, fields: Fields):
        self.con, self.fields = con, fields
        self._fields: list[str] | None = None
        self._events: list[str] | None = None

    def field_names(self) -> list[str]:
        """Columns some event fills, then the field names of `attrs`: those of one event per
        (source, template), as records of one message have the same fields (parsing every
        event's `attrs` costs seconds on a big store, for a suggestion)."""
        if self._fields is None:
            columns = [name for name in self.fields.column_types if self.fields.is_column(name)]
            filled = self.con.execute(f"SELECT {', '.join(f'count({name}) > 0' for name in columns)} FROM events"
                                      ).fetchall()[0]
            keys = self.con.execute(
                "SELECT DISTINCT unnest(json_keys(attrs)) FROM (SELECT any_value(attrs) AS attrs FROM events "
                "WHERE attrs IS NOT NULL GROUP BY source, template) WHERE json_type(attrs) = 'OBJECT'").fetchall()
            self._fields = [name for name, has in zip(columns, filled) if has] + sorted(key for (key,) in keys)
        return self._fields

    def event_names(self) -> list[str]:
        if self._events is None:
            self._events = [name for (name,) in self.con.execute(
                "SELECT DISTINCT event FROM events WHERE event IS NOT NULL").fetchall()]
        return self._events


def _field_names(relation: Relation) -> list[str]:
    if isinstance(relation, Implies):
        names = (*relation.key, *relation.fields)
    elif isinstance(relation, Binds):
        names = (*relation.from_, *relation.to)
    else:
        names = (*relation.key, *relation.within)
    return list(dict.fromkeys(names))


def _event_names(relation: Relation) -> list[str]:
    if isinstance(relation, Binds):
        return [relation.on] if relation.on is not None else []
    if isinstance(relation, Encloses):
        return list(dict.fromkeys([relation.start, relation.end]))
    return []


def _reason(relation: Relation, found: dict[tuple, int], known: _KnownNames, report: RelateReport | None) -> str | None:
    """Why `relation` changed nothing, as the store shows it; None when it shows no mistake."""
    absent = [name for name in _field_names(relation) if not found[("field", name)]]
    if absent:
        named = ", ".join(f"{name}{did_you_mean(name, known.field_names())}" for name in absent)
        return f"names fields that no event has: {named}"
    did = _DID_NOTHING[type(relation)]
    unnamed = [event for event in _event_names(relation) if not found[("event", event)]]
    if isinstance(relation, Encloses) and unnamed == [relation.end]:
        return _unended(relation, known)
    if unnamed:
        named = "; ".join(f"no event is named {event!r}{did_you_mean(event, known.event_names())}" for event in unnamed)
        return f"{did}: {named}"
    conflicts = sum((report.conflicts if report else {}).get(name, 0) for name in step_names(relation))
    if conflicts:
        return f"{did}: each group it found holds two values ({conflicts:,} left unchanged)"
    if isinstance(relation, Binds) and not found[("binds", relation)]:
        events = f"{relation.on!r} event" if relation.on is not None else "event"
        return f"{did}: no {events} has both ({', '.join(relation.from_)}) and ({', '.join(relation.to)})"
    if isinstance(relation, Implies):
        missing = [field for field in relation.fields if not found[("implies", relation, field)]]
        if missing:
            return f"{did}: no event with ({', '.join(relation.key)}) has {', '.join(missing)}"
    if isinstance(relation, Encloses) and not found[("encloses", relation)]:
        return (f"{did}: no {relation.start!r} event has both ({', '.join(relation.key)}) "
                f"and ({', '.join(relation.within)})")
    return None


def _unended(relation: Encloses, known: _KnownNames) -> str:
    return (f"closes no interval: no event is named {relation.end!r}{did_you_mean(relation.end, known.event_names())}, "
            "so each runs to the next start")
