"""Would parsing a run's JSON log files concurrently make a JSON ingest faster? A lever of the
ingest's speed, measured against the `json.loads` loop in the same process.

Run it from the repository root, on a runinfo with JSON logs (`ingest_bench.py` makes one):

    .venv/bin/python benchmarks/parse_concurrency_bench.py --json-run RUNINFO --repeat 3

It times, alternately, `--repeat` times each, the parse step of a JSON ingest (the lines read as
the ingest reads them, then the ingest's own extraction SQL: candidate keys, time, typed columns,
`attrs`), done three ways:

- **one after another**: every file on one connection into one table, DuckDB using all threads
  (what the ingest does);
- **two threads, kept apart**: the files in two groups of about equal size, each on its own thread
  and cursor (DuckDB at one thread per cursor) into its own table. A cursor is a connection of its
  own, so its rows are not part of the ingest's transaction: the upper bound of the idea, not
  something an ingest could use as is;
- **two threads, back through Arrow**: the same, each cursor's rows fetched as Arrow and inserted
  into one table on the main connection inside one transaction, as an ingest would have to.

It prints each median, its share of the loop's time, and the ingest's whole time for scale.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Callable

import duckdb

from taskscope.ingest.lines import read_new_lines
from taskscope.sources.json_fields import (
    extract_columns_sql,
    parse_time_sql,
    time_in_range_sql,
    ts_candidates_sql,
    unfit_values_sql,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ingest_bench import json_loads_loop, taskscope_ingest  # noqa: E402 - the bench's own anchor


def parse_sql() -> str:
    """The JSON source's extraction over a registered Arrow table `chunk` (columns line, txt)."""
    extraction, columns = extract_columns_sql("txt")
    selected = ", ".join(f"{sql} AS {name}" for name, sql in columns.items())
    return f"""SELECT ts, line, {', '.join(columns)}, txt::JSON AS attrs, values_in_attrs FROM (
        SELECT line, txt, {parse_time_sql(ts_candidates_sql())} AS ts, {unfit_values_sql()} AS values_in_attrs,
               {selected}
        FROM (SELECT line, txt, {extraction} AS v FROM chunk WHERE json_valid(txt) AND starts_with(txt, '{{')))
        WHERE {time_in_range_sql('ts')}"""


def chunks_of(path: Path):
    for chunk in read_new_lines(str(path), 0, 0):
        if chunk.text is None:
            raise SystemExit(f"{path}: has lines a clean chunk cannot hold; use a run without damaged lines")
        yield chunk.text


def two_groups(files: list[Path]) -> list[list[Path]]:
    """The files in two groups of about equal bytes, biggest first."""
    groups: list[list[Path]] = [[], []]
    sizes = [0, 0]
    for path in sorted(files, key=lambda p: -p.stat().st_size):
        smaller = sizes.index(min(sizes))
        groups[smaller].append(path)
        sizes[smaller] += path.stat().st_size
    return groups


def one_after_another(db: duckdb.DuckDBPyConnection, files: list[Path], sql: str) -> None:
    db.execute(f"SET threads = {os.cpu_count()}")
    con = db.cursor()
    con.execute("BEGIN")
    first = True
    for path in files:
        for chunk in chunks_of(path):
            con.register("chunk", chunk)
            con.execute(f"CREATE OR REPLACE TABLE parsed AS {sql}" if first else f"INSERT INTO parsed {sql}")
            con.unregister("chunk")
            first = False
    con.execute("COMMIT")


def in_two_threads(db: duckdb.DuckDBPyConnection, files: list[Path], sql: str, back_through_arrow: bool) -> None:
    db.execute("SET threads = 1")  # one per cursor: two cursors use both cores
    fetched: list = []
    lock = threading.Lock()

    def work(group: list[Path], index: int) -> None:
        con = db.cursor()
        for number, path in enumerate(group):
            for chunk in chunks_of(path):
                con.register("chunk", chunk)
                if back_through_arrow:
                    table = con.sql(sql).to_arrow_table()
                    with lock:
                        fetched.append(table)
                else:
                    con.execute(f"CREATE OR REPLACE TABLE parsed_{index}_{number} AS {sql}")
                con.unregister("chunk")

    threads = [threading.Thread(target=work, args=(group, i)) for i, group in enumerate(two_groups(files))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if back_through_arrow:
        db.execute(f"SET threads = {os.cpu_count()}")
        con = db.cursor()
        con.execute("BEGIN")
        for number, table in enumerate(fetched):
            con.register("piece", table)
            con.execute("CREATE OR REPLACE TABLE parsed AS SELECT * FROM piece" if number == 0
                        else "INSERT INTO parsed SELECT * FROM piece")
            con.unregister("piece")
        con.execute("COMMIT")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json-run", type=Path, required=True, help="a runinfo folder with *.jsonlog files")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    files = sorted(args.json_run.rglob("*.jsonlog"))
    if not files:
        parser.error(f"no *.jsonlog under {args.json_run}")
    sql = parse_sql()
    db = duckdb.connect()
    # each way returns its own time where part of what it does is not to be timed (the digests)
    ways: dict[str, Callable[[], float | None]] = {
        "json.loads loop (the anchor)": lambda: json_loads_loop(files).seconds,
        "whole ingest + relate (for scale)": lambda: taskscope_ingest(args.json_run, "events").seconds,
        "parse, one after another": lambda: one_after_another(db, files, sql),
        "parse, two threads, kept apart": lambda: in_two_threads(db, files, sql, back_through_arrow=False),
        "parse, two threads, back through Arrow": lambda: in_two_threads(db, files, sql, back_through_arrow=True),
    }
    seconds: dict[str, list[float]] = {name: [] for name in ways}
    for round_number in range(args.repeat + 1):  # round 0 warms up
        for name, action in ways.items():
            started = time.perf_counter()
            own = action()
            if round_number:
                seconds[name].append(own if own is not None else time.perf_counter() - started)
    loop = statistics.median(seconds["json.loads loop (the anchor)"])
    print(f"{len(files)} files of {args.json_run}, {os.cpu_count()} CPUs, duckdb {duckdb.__version__}; "
          f"medians of {args.repeat} alternating rounds")
    for name, times in seconds.items():
        median = statistics.median(times)
        print(f"  {name:42} {median:7.3f} s = {median / loop:5.2f} of the loop   ({', '.join(f'{t:.3f}' for t in times)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
