"""The store: one DuckDB file holding the events of every run ingested into it."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import duckdb
import pandas as pd

from taskscope.analyses import runs as run_analyses
from taskscope.analyses import states as state_analyses
from taskscope.analyses import tasks as task_analyses
from taskscope.analyses.between import between
from taskscope.analyses.bottlenecks import bottlenecks
from taskscope.analyses.common_path import common_path
from taskscope.analyses.compare import compare
from taskscope.analyses.latency import latency
from taskscope.analyses.series import series
from taskscope.analyses.summary import summary
from taskscope.constants import DEFAULT_STORE
from taskscope.digests import refresh_digests
from taskscope.export.otlp import export_otlp
from taskscope.export.parquet import export_parquet
from taskscope.export.perfetto import export_perfetto
from taskscope.ingest import IngestReport, ProgressCallback, ingest
from taskscope.relations import load_relations
from taskscope.remembered import forget, remembered_files
from taskscope.rules import load_rules
from taskscope.schema import create_schema
from taskscope.store_format import NotAStoreError, check_store_file, needs_migration

__all__ = ["DEFAULT_STORE", "Store", "StoreError", "StoreLocked"]


class StoreError(RuntimeError):
    """The store file cannot be opened or is not a taskscope store."""


class StoreLocked(StoreError):
    """Another process has the store open for writing (DuckDB allows one writing process per file)."""

    def __init__(self, path: str, detail: str):
        holder = re.search(r"PID (\d+)", detail)
        self.pid = int(holder.group(1)) if holder else None
        self.holder_command = _command_of(self.pid)
        by = f" (PID {self.pid}{': ' + self.holder_command if self.holder_command else ''})" if self.pid else ""
        super().__init__(f"{path} is open in another process{by}: DuckDB lets no other process open a store "
                         "a process writes to, and none write to a store another process has open")


def _command_of(pid: int | None) -> str | None:
    """The command line of process `pid` (`taskscope ui runinfo/`), shortened, or None."""
    try:
        words = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, TypeError):
        return None
    words = [w.decode(errors="replace") for w in words if w]
    if len(words) > 2 and words[1] == "-m":  # python -m taskscope.cli ...
        words = [words[2].split(".")[0], *words[3:]]
    elif words and Path(words[0]).name.startswith("python") and len(words) > 1:
        words = words[1:]
    text = " ".join([Path(words[0]).name, *words[1:]]) if words else ""
    return (text[:77] + "...") if len(text) > 80 else text or None


class Store:
    """A taskscope store. Open it with `taskscope.open`.

    >>> store = taskscope.open("run.duckdb")          # doctest: +SKIP
    >>> store.ingest("runinfo/")                      # doctest: +SKIP
    >>> store.timeline(task_id=358)                   # doctest: +SKIP

    `store.con` is the DuckDB connection, for any SQL over `events`.
    """

    def __init__(self, path: str | Path = DEFAULT_STORE, read_only: bool = False):
        self.path = str(path)
        if read_only and self.path != ":memory:" and not Path(self.path).exists():
            raise StoreError(f"no store at {self.path} (run `taskscope ingest PATH --store {self.path}` first)")
        try:
            check_store_file(self.path)  # before DuckDB: it would take a SQLite file for one to attach
        except NotAStoreError as exc:
            raise StoreError(str(exc)) from None
        self.con = self._connect(read_only)
        """The store's DuckDB connection, for any SQL of your own over its tables (`events` and the
        others: see the events contract). Closed by `close`.

        >>> import taskscope
        >>> with taskscope.open(":memory:") as store:
        ...     store.con.execute("SELECT count(*) FROM events").fetchone()
        (0,)
        """
        if read_only:
            missing = {"events", "ingested_files"} - {
                row[0] for row in self.con.execute("SELECT table_name FROM information_schema.tables").fetchall()
            }
            if missing:
                raise StoreError(f"{self.path} is not a taskscope store (no {', '.join(sorted(missing))} table)")
            if needs_migration(self.con):  # an older release's store: migrated in place once, then read
                self.con.close()
                self.con = self._connect(False)
                create_schema(self.con)
                self.con.close()
                self.con = self._connect(True)
        else:
            create_schema(self.con)

    def _connect(self, read_only: bool) -> duckdb.DuckDBPyConnection:
        try:
            con = duckdb.connect(self.path, read_only=read_only)
        except duckdb.Error as exc:
            if "Could not set lock" in str(exc):
                raise StoreLocked(self.path, str(exc)) from None
            raise StoreError(f"cannot open store {self.path}: {exc}") from None
        con.execute("SET TimeZone = 'UTC'")
        # DuckDB prints a progress bar to stdout for a query over two seconds: into the output of
        # `taskscope ... --json > file` on a big store. The CLI shows its own progress.
        con.execute("SET enable_progress_bar = false")
        return con

    def ingest(
        self,
        *paths: str | Path,
        rules_files: list[str | Path] | None = None,
        on_progress: ProgressCallback | None = None,
        utc_offset_seconds: float | None = None,
        relations_files: list[str | Path] | None = None,
        on_commit: Callable[[], None] | None = None,
    ) -> IngestReport:
        """Read everything new under `paths` (folders or files) into the store.

        Re-ingesting adds nothing; a grown file adds only its new complete lines. Runs that
        ended and changed get their dashboard digest recomputed (see `taskscope.digests`).
        `rules_files` and `relations_files` add to the shipped rules and relations; given to a
        store that holds events, they are applied again to every stored event. The store keeps
        them (their text): every later ingest reads with them too, until `forget_rules`. `on_commit` is
        called after each commit of new or changed events that other connections see (batches,
        relate, digests).
        """
        load_rules(rules_files)  # a bad file is refused before the store keeps it
        load_relations(relations_files)
        with remembered_files(self.con, {"rules": rules_files, "relations": relations_files}) as files:
            report = ingest(
                self.con, [str(p) for p in paths], load_rules(files.rules), on_progress, utc_offset_seconds,
                relations=load_relations(files.relations), reapply=bool(rules_files or relations_files),
                on_commit=on_commit,
            )
        report.remembered_files = files.remembered_names
        report.config_notes = [files.as_given(note) for note in report.config_notes]
        if report.reapplied:  # events may have changed without their counts: every digest is redone
            self.con.execute("DROP TABLE IF EXISTS run_digests")
        if report.events or report.reapplied:
            # the run page's analyses take seconds at 100k tasks: done once here, not per request
            refresh_digests(self.con)
            if on_commit is not None:
                on_commit()
        return report

    def forget_rules(self) -> list[str]:
        """Forget the rules and relations files this store kept from earlier ingests (events they
        named keep their names); returns the files' names.

        >>> store.forget_rules()  # doctest: +SKIP
        ['mine.toml']
        """
        return forget(self.con)

    def runs(self) -> pd.DataFrame:
        """One row per run (see `taskscope.analyses.runs.runs`)."""
        return run_analyses.runs(self.con)

    def tasks(self, run: str | None = None) -> pd.DataFrame:
        """One row per task of `run` (id, prefix or folder name), or of every run."""
        return task_analyses.tasks(self.con, run_analyses.resolve_run(self.con, run))

    def timeline(self, task_id: str | int, run_id: str | None = None) -> pd.DataFrame:
        """Every event of one task across all logs, in order (see `taskscope.analyses.tasks.timeline`)."""
        return task_analyses.timeline(self.con, task_id, run_analyses.resolve_run(self.con, run_id))

    def resolve_run(self, text: str | None) -> str | None:
        """A full run id from an id, a unique prefix or a run folder name."""
        return run_analyses.resolve_run(self.con, text)

    # ---- analyses (see taskscope.analyses; each also takes a Store directly) ----------------

    def states(self, run: str | None = None, source: str = "logs") -> pd.DataFrame:
        """Tasks per DFK state over time (see `taskscope.analyses.states`); source "logs" or "monitoring"."""
        return (state_analyses.states if source == "logs" else state_analyses.states_from_monitoring)(self.con, run)

    def between(self, event_a: str, event_b: str, run: str | None = None, per: str = "task") -> pd.DataFrame:
        """Tasks (or tries) past event A but not yet B, over time (see `taskscope.analyses.between`)."""
        return between(self.con, event_a, event_b, run, per)

    def series(self, field: str, run: str | None = None, group_by: str | None = None,
               where: str | None = None) -> pd.DataFrame:
        """Any numeric field over time (see `taskscope.analyses.series`)."""
        return series(self.con, field, run, group_by, where)

    def latency(self, event_a: str, event_b: str, run: str | None = None, per: str = "task") -> pd.DataFrame:
        """Per-task time from A to the following B (see `taskscope.analyses.latency`)."""
        return latency(self.con, event_a, event_b, run, per)

    def summary(self, run: str | None = None):
        """Per-app outcomes, tries, failures, badput, makespan, throughput (see `taskscope.analyses.summary`)."""
        return summary(self.con, run)

    def common_path(self, run: str | None = None):
        """Variants of the task path and per-step timing (see `taskscope.analyses.common_path`)."""
        return common_path(self, run)

    def bottlenecks(self, run: str | None = None):
        """Steps ranked by waiting time, slowest stage, idle workers (see `taskscope.analyses.bottlenecks`)."""
        return bottlenecks(self, run)

    def compare(self, run_a: str, run_b: str, min_change_s: float = 0.001) -> pd.DataFrame:
        """Latency per step and throughput of run B against run A (see `taskscope.analyses.compare`)."""
        return compare(self, run_a, run_b, min_change_s)

    # ---- exports (see taskscope.export) -----------------------------------------------------

    def export_parquet(self, folder: str | Path, run: str | None = None, overwrite: bool = False):
        """Events (and side tables) as Parquet partitioned by run; see `taskscope.export.parquet`."""
        return export_parquet(self, folder, run, overwrite=overwrite)

    def export_perfetto(self, path: str | Path, run: str | None = None):
        """A Chrome/Perfetto trace JSON for ui.perfetto.dev; see `taskscope.export.perfetto`."""
        return export_perfetto(self, path, run)

    def export_otlp(self, path: str | Path, run: str | None = None, batch: int = 1000):
        """OTLP/JSON logs (JSON Lines of LogsData); see `taskscope.export.otlp`."""
        return export_otlp(self, path, run, batch=batch)

    def sql(self, query: str, params: list | dict | None = None) -> pd.DataFrame:
        """Run any SQL over the store and return a DataFrame (empty for a statement that
        returns no rows, such as an empty query)."""
        result = self.con.execute(query, params or [])
        return result.df() if result is not None and result.description is not None else pd.DataFrame()

    def close(self) -> None:
        """Close the store: its DuckDB connection, and so the file, which another process may then
        open for writing (DuckDB lets one process write a file, and none other open it meanwhile).
        Closing twice does nothing; after closing, the store answers no more queries. Leaving a
        `with taskscope.open(...) as store:` block closes it.

        >>> import taskscope
        >>> store = taskscope.open(":memory:")
        >>> store.sql("SELECT 42 AS answer")["answer"].tolist()
        [42]
        >>> store.close()
        >>> with taskscope.open(":memory:") as store:  # closed on leaving the block
        ...     int(store.sql("SELECT count(*) AS n FROM events")["n"][0])
        0
        """
        self.con.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
