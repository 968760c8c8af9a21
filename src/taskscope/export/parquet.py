"""Parquet export: the store's events partitioned by run, for DuckDB, Polars, Spark, Dask or pandas.

Layout of the export folder (Hive style, so any engine reads the run as a column)::

    FOLDER/
      events/run_id=<run id>/data_0.parquet           every `events` column, in contract order
      events/run_id=__HIVE_DEFAULT_PARTITION__/...    events with no run (Hive's name for NULL)
      event_task_links/run_id=<run id>/...            one row per (event, task) for events naming several tasks
      run_dirs.parquet                                which run folder holds which run id

A table with no rows to write (an empty store or run, no event naming several tasks) is one
schema-only file, `events/empty.parquet` (`event_task_links/empty.parquet`): the read below
still finds the folder, every column with its type, and no rows.

`run_id` is also written inside the files (not only in the folder name), so its type and value
survive exactly even when a reader does not use Hive partitioning, and a run id that looks like a
number stays a string. Read it back with::

    SELECT * FROM read_parquet('FOLDER/events/**/*.parquet', hive_partitioning = true)

Re-export: a folder that already holds anything is refused (never silently mixed or duplicated);
with `overwrite=True` a previous taskscope export there (and only that: a folder holding other
files is still refused) is replaced whole.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from taskscope._sql import connection_of, literal, scalar
from taskscope.analyses.runs import resolve_run
from taskscope.export.summary import ExportError, ExportSummary, ProgressCallback, report
from taskscope.schema import EVENT_COLUMN_NAMES

#: what an export folder holds; anything else in it means it is not (only) ours
EXPORT_ENTRIES = {"events", "event_task_links", "run_dirs.parquet"}


def export_parquet(
    store, folder: str | Path, run: str | None = None, overwrite: bool = False,
    on_progress: ProgressCallback | None = None,
) -> ExportSummary:
    """Write the events of `run` (id, prefix or folder name; None: every run, and the events with
    no run) to `folder` as Parquet partitioned by run, with the side tables that make it usable alone.

    Use it to hand a store to another engine, or to keep runs as files: DuckDB reads the export
    back with `read_parquet('FOLDER/events/**/*.parquet', hive_partitioning = true)`.

    >>> export_parquet(store, "export/", run="000").line()  # doctest: +SKIP
    'wrote parquet to export: 3,611 events of 1 run (files: 3, task links: 40)'
    """
    con = connection_of(store)
    run_id = resolve_run(con, run)
    folder = Path(folder)
    _prepare_folder(folder, overwrite)
    where, params = ("WHERE run_id = ?", [run_id]) if run_id is not None else ("", [])
    report(on_progress, "writing events")
    columns = ", ".join(f'"{name}"' for name in EVENT_COLUMN_NAMES)
    events = _copy_partitioned(
        con, f"SELECT {columns} FROM events {where} ORDER BY run_id, ts, file, line", params, folder / "events"
    )
    report(on_progress, "writing side tables")
    links = _copy_partitioned(
        con, f"SELECT * FROM event_task_links {where} ORDER BY run_id, natural_key(task_id), file_id, line", params,
        folder / "event_task_links",
    )
    con.execute(
        f"COPY (SELECT * FROM run_dirs {where} ORDER BY run_dir) TO {literal(str(folder / 'run_dirs.parquet'))} "
        "(FORMAT parquet)",
        params,
    )
    runs = scalar(con, f"SELECT count(DISTINCT run_id) FROM events {where}", params)
    files = sum(1 for _ in folder.rglob("*.parquet"))
    return ExportSummary("parquet", folder, events, runs, {"files": files, "task_links": links})


def _copy_partitioned(con, select_sql: str, params: list, target: Path) -> int:
    """COPY the rows of `select_sql` to `target`, one Hive partition per run; the row count.
    No rows: a schema-only `target/empty.parquet`, so that reading `target/**/*.parquet` gives
    an empty table with every column rather than "no files found"."""
    if not scalar(con, f"SELECT count(*) FROM ({select_sql})", params):
        target.mkdir(parents=True, exist_ok=True)
        con.execute(f"COPY ({select_sql} LIMIT 0) TO {literal(str(target / 'empty.parquet'))} (FORMAT parquet)", params)
        return 0
    return scalar(
        con,
        f"COPY ({select_sql}) TO {literal(str(target))} "
        "(FORMAT parquet, COMPRESSION zstd, PARTITION_BY (run_id), WRITE_PARTITION_COLUMNS true)",
        params,
    )


def _prepare_folder(folder: Path, overwrite: bool) -> None:
    """Make `folder` ready for a fresh export: create it, or refuse/replace what is there."""
    if folder.exists() and not folder.is_dir():
        raise ExportError(f"{folder} is a file: give a folder for a Parquet export")
    entries = {entry.name for entry in folder.iterdir()} if folder.is_dir() else set()
    if entries:
        foreign = entries - EXPORT_ENTRIES
        if foreign:
            raise ExportError(
                f"{folder} is not empty and holds files that are not a taskscope export "
                f"({', '.join(sorted(foreign)[:3])}): choose another folder"
            )
        if not overwrite:
            raise ExportError(f"{folder} already holds an export: pass --overwrite to replace it, or choose another folder")
        for name in entries:
            path = folder / name
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".taskscope-write-test"
        probe.touch()
        probe.unlink()
    except OSError as exc:
        raise ExportError(f"cannot write to {folder}: {exc.strerror or exc}") from None
