"""Relations compiled to SQL over `events`: each relation becomes one or more `Step`s.

A step's SQL is a template: the text `{scope}` stands for a condition on the columns of `events` (unaliased) that
keeps it to the events being related (see `taskscope.relations.engine`). Each step first
materialises what it learned into a temporary table, then updates from it: as a subquery,
DuckDB mis-estimates such an aggregate's size and builds the hash join on `events` instead,
then updates the rows in hash order (10-30x slower on a 3000-task text run).

A name that is an `events` column is read from (and written to) that column; any other name is
an `attrs` field, read as JSON and written into `attrs` with its JSON type kept.
"""

from __future__ import annotations

from dataclasses import dataclass

from taskscope._sql import literal
from taskscope.relations import Binds, Encloses, Implies, Relation

#: columns of `event_task_links`, which a `binds` relation also fills when it names only these
LINK_COLUMNS = {"run_id", "executor_label", "executor_task_id", "task_id", "try_id"}


@dataclass(frozen=True)
class Step:
    """One relation (or one field of an `implies`) as SQL: `learn` materialises what the events
    say, each of `updates` applies it and returns how many rows it changed, `conflicts` counts
    the groups it left alone because they hold two values."""

    name: str
    learn: str
    updates: tuple[str, ...]
    conflicts: str | None = None
    reads: frozenset[str] = frozenset()  # columns (and "event_task_links") whose values it uses
    writes: frozenset[str] = frozenset()
    # a second run right after the first changes nothing (its own writes cannot feed it)
    idempotent: bool = True


class Fields:
    """SQL for reading and writing fields by name, given the types of the `events` columns.

    >>> fields = Fields({"task_id": "VARCHAR", "attrs": "JSON"})
    >>> fields.key("task_id")
    'events.task_id'
    >>> fields.key("agent")
    'json_extract_string(events.attrs, \\'$."agent"\\')'
    """

    def __init__(self, column_types: dict[str, str]):
        self.column_types = column_types

    def is_column(self, name: str) -> bool:
        return name in self.column_types and name not in ("attrs", "file_id")

    def key(self, name: str, alias: str = "events") -> str:
        """A key as stored: the column, or an `attrs` field's text."""
        if self.is_column(name):
            return f"{alias}.{name}"
        return f"json_extract_string({alias}.attrs, {_path(name)})"

    def value(self, name: str, alias: str = "events") -> str:
        """A field's value: the column, or an `attrs` field as JSON (JSON null counts as absent)."""
        if self.is_column(name):
            return f"{alias}.{name}"
        return _attrs_value(name, alias)

    def touched(self, names: tuple[str, ...]) -> frozenset[str]:
        """The columns reading or writing `names` touches (`attrs` for any attrs field)."""
        return frozenset(name if self.is_column(name) else "attrs" for name in names)

    def missing(self, name: str, alias: str = "events") -> str:
        """True where the event lacks the field."""
        if self.is_column(name):
            return f"{alias}.{name} IS NULL"
        return f"{_attrs_value(name, alias)} IS NULL"

    def assignments(self, values: dict[str, str]) -> str:
        """The SET list of an UPDATE of `events` writing `values` (name -> SQL value): columns
        directly, `attrs` fields merged into `attrs` in one patch."""
        sets = [f"{name} = {value}" for name, value in values.items() if self.is_column(name)]
        patch = [f"{literal(name)}, {value}" for name, value in values.items() if not self.is_column(name)]
        if patch:
            sets.append(f"attrs = json_merge_patch(coalesce(events.attrs, '{{}}'), json_object({', '.join(patch)}))")
        return ", ".join(sets)


def _path(name: str) -> str:
    return literal(f'$."{name}"')


def _attrs_value(name: str, alias: str) -> str:
    return f"nullif(json_extract({alias}.attrs, {_path(name)}), 'null')"


def _all(conditions: list[str]) -> str:
    return " AND ".join(conditions)


def step_names(relation: Relation) -> list[str]:
    """The names of the steps of `relation`, as the relate report counts what each changed: an
    `implies` of several fields is one step per field.

    >>> step_names(Implies("app", ("task_id",), ("app_name", "host")))
    ['app: app_name', 'app: host']
    """
    if isinstance(relation, Implies) and len(relation.fields) > 1:
        return [f"{relation.name}: {field}" for field in relation.fields]
    return [relation.name]


def compile_relation(relation: Relation, number: int, fields: Fields) -> list[Step]:
    """The steps of one relation; `number` keeps its temporary tables apart from the others'."""
    if isinstance(relation, Implies):
        return [
            _implies_step(relation, field, name, f"rel_{number}_{index}", fields)
            for index, (field, name) in enumerate(zip(relation.fields, step_names(relation)))
        ]
    if isinstance(relation, Binds):
        return [_binds_step(relation, f"rel_{number}", fields)]
    return [_encloses_step(relation, f"rel_{number}", fields)]


def _implies_step(relation: Implies, field: str, name: str, table: str, fields: Fields) -> Step:
    keys = [f"{fields.key(name)} AS k_{i}" for i, name in enumerate(relation.key)]
    present = [f"{fields.key(name)} IS NOT NULL" for name in relation.key]
    matches = [f"{fields.key(name)} = r.k_{i}" for i, name in enumerate(relation.key)]
    learn = f"""
        CREATE OR REPLACE TEMP TABLE {table} AS
            SELECT {', '.join(f'k_{i}' for i in range(len(keys)))}, min(v) AS v, min(v) <> max(v) AS conflict
            FROM (SELECT {', '.join(keys)}, {fields.value(field)} AS v FROM events
                  WHERE {_all(present)} AND {{scope}}) WHERE v IS NOT NULL
            GROUP BY ALL"""
    update = f"""
        UPDATE events SET {fields.assignments({field: 'r.v'})} FROM {table} r
        WHERE NOT r.conflict AND {fields.missing(field)} AND {_all(matches)} AND {{scope}}"""
    return Step(name, learn, (update,), f"SELECT count(*) FROM {table} WHERE conflict",
                fields.touched((*relation.key, field)), fields.touched((field,)))


def _binds_step(relation: Binds, table: str, fields: Fields) -> Step:
    from_keys = [f"{fields.key(name)} AS f_{i}" for i, name in enumerate(relation.from_)]
    to_values = [f"{fields.value(name)} AS t_{i}" for i, name in enumerate(relation.to)]
    t_names = [f"t_{i}" for i in range(len(relation.to))]
    on = f"events.event = {literal(relation.on)} AND " if relation.on is not None else ""
    present = [f"{fields.key(name)} IS NOT NULL" for name in relation.from_]
    learn = f"""
        CREATE OR REPLACE TEMP TABLE {table} AS
            SELECT {', '.join(f'f_{i}' for i in range(len(relation.from_)))},
                   {', '.join(f'min({t}) AS {t}' for t in t_names)},
                   {' OR '.join(f'min({t}) <> max({t})' for t in t_names)} AS conflict
            FROM (SELECT {', '.join(from_keys)}, {', '.join(to_values)} FROM events
                  WHERE {on}{_all(present)} AND {{scope}})
            WHERE {_all([f'{t} IS NOT NULL' for t in t_names])}
            GROUP BY ALL"""
    updates = [_bind_update("events", relation, table, fields, "{scope}")]
    touched = fields.touched((*relation.from_, *relation.to, "event"))
    writes = fields.touched(relation.to)
    if set(relation.from_) | set(relation.to) <= LINK_COLUMNS and all(
        fields.is_column(name) for name in (*relation.from_, *relation.to)
    ):
        # an event naming several executor tasks is tied to them by its event_task_links rows
        link_fields = Fields(dict.fromkeys(LINK_COLUMNS, "VARCHAR"))
        updates.append(_bind_update("event_task_links", relation, table, link_fields, "TRUE"))
        touched |= {"event_task_links"}
        writes |= {"event_task_links"}
    return Step(relation.name, learn, tuple(updates), f"SELECT count(*) FROM {table} WHERE conflict",
                touched, writes)


def _bind_update(target: str, relation: Binds, table: str, fields: Fields, scope: str) -> str:
    """An UPDATE of `target` giving the bound `to` fields to rows with `from` that lack some of
    them and contradict none."""
    matches = [f"{fields.key(name, target)} = r.f_{i}" for i, name in enumerate(relation.from_)]
    lacks = " OR ".join(fields.missing(name, target) for name in relation.to)
    agrees = [f"({fields.missing(name, target)} OR {fields.value(name, target)} = r.t_{i})"
              for i, name in enumerate(relation.to)]
    values = {name: f"r.t_{i}" for i, name in enumerate(relation.to)}
    assignments = fields.assignments(values).replace("events.attrs", f"{target}.attrs")
    return f"""
        UPDATE {target} SET {assignments} FROM {table} r
        WHERE NOT r.conflict AND {_all(matches)} AND ({lacks}) AND {_all(agrees)} AND {scope}"""


def _encloses_step(relation: Encloses, table: str, fields: Fields) -> Step:
    within = [fields.key(name) for name in relation.within]
    keys = [f"{fields.value(name)} AS k_{i}" for i, name in enumerate(relation.key)]
    key_struct = "{" + ", ".join(f"'k_{i}': k_{i}" for i in range(len(relation.key))) + "}"
    lacks = _all([fields.missing(name) for name in relation.key])
    groups = ", ".join(f"w_{i}" for i in range(len(within)))
    order = "ORDER BY ts, file_id, line"
    # events in order within their group (time, then file and line); the starts number the
    # intervals; an event is enclosed when no end that agrees with its interval's key came
    # before it in its interval: an end agrees when it has some of the key's fields and each
    # it has equals the start's (an end that says another key, or no key at all, closes nothing)
    carried = " OR ".join(f"k_{i} IS NOT NULL" for i in range(len(relation.key)))
    agrees = _all([f"(k_{i} IS NULL OR k_{i} = open_key.k_{i})" for i in range(len(relation.key))])
    learn = f"""
        CREATE OR REPLACE TEMP TABLE {table} AS
        WITH members AS (
            SELECT events.file_id, events.line, events.ts, events.event = {literal(relation.start)} AS is_start,
                   events.event = {literal(relation.end)} AS is_end, {lacks} AS lacks_key,
                   {', '.join(keys)}, {', '.join(f'{w} AS w_{i}' for i, w in enumerate(within))}
            FROM events WHERE {_all([f'{w} IS NOT NULL' for w in within])} AND {{scope}}
              -- an event that has the key and is no bound changes nothing: left out, fewer to sort
              AND (events.event IN ({literal(relation.start)}, {literal(relation.end)}) OR {lacks})),
        opened AS (
            SELECT *, count(*) FILTER (WHERE is_start) OVER running AS interval,
                   last_value(CASE WHEN is_start THEN {key_struct} END IGNORE NULLS) OVER running AS open_key
            FROM members WINDOW running AS (PARTITION BY {groups} {order} ROWS UNBOUNDED PRECEDING)),
        closed AS (
            SELECT *, bool_or(is_end AND ({carried}) AND {agrees}) OVER (
                          PARTITION BY {groups}, interval {order}
                          ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS closed_before
            FROM opened)
        SELECT file_id, line, {', '.join(f'open_key.k_{i} AS k_{i}' for i in range(len(relation.key)))}
        FROM closed
        WHERE lacks_key AND NOT is_start AND interval > 0 AND NOT coalesce(closed_before, FALSE)
          AND {_all([f'open_key.k_{i} IS NOT NULL' for i in range(len(relation.key))])}"""
    values = {name: f"r.k_{i}" for i, name in enumerate(relation.key)}
    update = f"""
        UPDATE events SET {fields.assignments(values)} FROM {table} r
        WHERE events.file_id = r.file_id AND events.line = r.line AND {lacks} AND {{scope}}"""
    # an end event that lacked the key and got it may close an interval earlier on a next run
    return Step(relation.name, learn, (update,), None,
                fields.touched((*relation.key, *relation.within, "event", "ts")), fields.touched(relation.key),
                idempotent=False)
