"""Academy JSON logs (`*.jsonlog`, written by academy-py's `JSONPoolLogging`).

Academy writes one file per process under `<ACADEMY_HOME>/logs/<pool uuid>/<uuid>.jsonlog`:
every attribute of the LogRecord as a string (`"created": "1796581237.79"`), the formatted
line as `formatted`, `msg` as the %-template, and its own `academy.*` fields. The records are
read as JSON lines (see `jsonlines`), then:

- `task_id` is the action's tag (`academy.action_tag`, a UUID per invocation: the requester's
  and the handling agent's records of one action share it), `app_name` the action's name
  (`academy.action`);
- `run_id` is the pool's uuid: the folder Academy writes every process of one log
  configuration into, as its first record of each file says (`Configured JSONPoolLogging
  (pool uuid=..., path=...)`);
- `template` is the record's `msg` when it is a %-template (`Invoking action %s with tag id
  %s`): the author's own template, better than a mined one;
- `source` is `academy`.

Naming events, message tags bound to actions, and the rest are data: `rules/academy.toml`
and `relations/academy.toml`.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import PurePath

import duckdb

from taskscope.ingest.staging import STAGED
from taskscope.sources import Sample, Source, StageContext, StageResult, jsonlines

#: what `events.source` says for Academy's records
COMPONENT = "academy"

_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_POOL_LINE = re.compile(r'"Configured JSONPoolLogging \(pool uuid=([0-9a-f-]{36})')

# Academy's JSONHandler writes `formatted` first, then the LogRecord's attributes in order
_FIRST_KEY = '{"formatted": '


def recognise(sample: Sample) -> bool:
    """True for a file Academy's `JSONHandler` wrote: its records start with `formatted`, and
    one of the first comes from an `academy` logger or carries `academy.*` fields.

    >>> recognise(Sample("x.jsonlog", b'{"formatted": "Configured", "name": "academy.manager"}\\n'))
    True
    >>> recognise(Sample("parsl.jsonlog", b'{"created": 1796581237.79, "name": "parsl.dataflow.dflow"}\\n'))
    False
    """
    lines = sample.lines
    return bool(lines) and lines[0].startswith(_FIRST_KEY) and any(
        '"name": "academy.' in line or '"academy.' in line for line in lines)


def stage_lines(con: duckdb.DuckDBPyConnection, table_name: str, context: StageContext) -> StageResult:
    """Stage the new lines of an Academy JSON log: JSON lines, then Academy's fields to columns."""
    result = jsonlines.stage_lines(con, table_name, replace(context, component=COMPONENT))
    pool = _pool_id(con, table_name, context)
    con.execute(
        f"""UPDATE {STAGED} SET
                task_id = coalesce(task_id, attrs->>'academy.action_tag'),
                app_name = coalesce(app_name, attrs->>'academy.action'),
                run_id = coalesce(run_id, ?::VARCHAR),
                template = coalesce(template, CASE WHEN strpos(attrs->>'msg', '%') > 0 THEN attrs->>'msg' END)
            WHERE file_id = ? AND line > ?""",
        [pool, context.file_id, context.lines_before],
    )
    return result


def _pool_id(con: duckdb.DuckDBPyConnection, table_name: str, context: StageContext) -> str | None:
    """The pool's uuid: from the file's first record when this chunk has it, else what the
    file's earlier records were given (a file that grows is read in parts), else the name of
    the folder Academy put the file in."""
    first = con.execute(f"SELECT txt FROM {table_name} WHERE line = 1").fetchall()
    if first:
        match = _POOL_LINE.search(first[0][0])
        if match:
            return match[1]
    for table in (STAGED, "events"):
        earlier = con.execute(f"SELECT any_value(run_id) FROM {table} WHERE file_id = ? AND line <= ?",
                              [context.file_id, context.lines_before]).fetchall()
        if earlier[0][0] is not None:
            return earlier[0][0]
    folder = PurePath(context.file).parent.name
    return folder if _UUID.match(folder) else None


SOURCE = Source("academy_jsonlog", recognise, order=0, stage_lines=stage_lines, component=COMPONENT)
