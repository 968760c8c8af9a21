"""Analyses benchmark: timeline, states, common path and latency on a store of >= 10M events.

Run it from the repository root (not part of `make test`):

    .venv/bin/python benchmarks/analyses_bench.py
    .venv/bin/python benchmarks/analyses_bench.py --events 10000000 --repeat 3

What it does:

1. Takes the cached 3000-task parsl-perf run with text logs of `benchmarks/ingest_bench.py`
   (`benchmarks/.work/runinfo-text`; made with parsl-perf if missing), ingests it once into a
   DuckDB file, then replicates it inside DuckDB (`INSERT ... SELECT` over `events` and
   `event_task_links`) under fresh run ids, each copy with its own file ids and shifted by
   1000 s per copy, until the store holds >= `--events` events and >= `--tasks` tasks. The
   store is cached in `benchmarks/.work/analyses-<copies>x.duckdb` and reused.
2. Times, in the same process, `--repeat` times each after one warm-up, and reports the median:
   - `timeline`: one task of one run (`Store.timeline`), target < 0.1 s;
   - `states`: `taskscope.analyses.states.states` over the whole store, target < 2 s;
   - `common path`: `taskscope.analyses.common_path.common_path` over the whole store, < 10 s;
   - `latency`: `taskscope.analyses.latency.latency(store, "task.launched",
     "htex.worker.received")` over the whole store, target < 2 s;
   - `python loop`: the prototype's findcommon method on the same events (group records per
     task in a dict, sort, build key sequences, group tasks by their sorted keys, mean /
     median / p95 per step), over records already fetched into Python (the fetch is timed
     and printed separately), for the ratio to `common path`.
3. Prints a table with targets and met/missed, and checks that the loop and the SQL agree on
   the number of variants and on the dominant variant's mean times.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import statistics
import sys
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Callable

import pandas as pd

import taskscope
from taskscope.analyses.common_path import NOISE_EVENTS, common_path

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))
from ingest_bench import DEFAULT_WORKDIR, VARIANTS, ensure_run  # noqa: E402

TARGETS = {"timeline": 0.1, "states": 2.0, "common path": 10.0, "latency": 2.0}
FILE_ID_STRIDE = 100_000  # copy i's file ids are the original's + i * stride
TIME_SHIFT_S = 1000.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark taskscope analyses on a replicated parsl-perf store.",
        epilog="Example: .venv/bin/python benchmarks/analyses_bench.py --repeat 3",
    )
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR, help="cache folder (default: benchmarks/.work/)")
    parser.add_argument("--events", type=int, default=10_000_000, help="minimum events in the store (default: 10M)")
    parser.add_argument("--tasks", type=int, default=200_000, help="minimum tasks in the store (default: 200k)")
    parser.add_argument("--repeat", type=int, default=3, help="timed repetitions (median reported; default: 3)")
    parser.add_argument("--skip-loop", action="store_true", help="leave out the Python loop (it needs a few GB)")
    return parser.parse_args(argv)


# ---------------------------------------------------------------------------------------------
# building the store


def build_store(workdir: Path, min_events: int, min_tasks: int) -> Path:
    """The replicated store file (cached): one ingest of the text run, then copies in SQL."""
    base_run = ensure_run(workdir, VARIANTS["text"], 3000, remake=False, timeout=900.0)
    probe = taskscope.open(":memory:")
    probe.ingest(base_run)
    (events, tasks), = probe.con.execute(
        "SELECT count(*), count(DISTINCT task_id) FROM events WHERE run_id IS NOT NULL").fetchall()
    probe.close()
    copies = max(math.ceil(min_events / events), math.ceil(min_tasks / tasks))
    path = workdir / f"analyses-{copies}x.duckdb"
    marker = workdir / f"analyses-{copies}x.json"
    if path.exists() and marker.exists() and json.loads(marker.read_text()).get("source") == str(base_run):
        print(f"reusing {path}")
        return path
    path.unlink(missing_ok=True)
    started = time.perf_counter()
    with taskscope.open(path) as store:
        store.ingest(base_run)
        replicate(store, copies)
    marker.write_text(json.dumps({"source": str(base_run), "copies": copies}))
    print(f"built {path} ({copies} copies of {events:,} events / {tasks:,} tasks) in {time.perf_counter() - started:.0f} s")
    return path


def replicate(store, copies: int) -> None:
    """Add copies 1..copies-1 of the one run in `store`, each under a fresh run id."""
    con = store.con
    (base_run,), = con.execute("SELECT DISTINCT run_id FROM events WHERE run_id IS NOT NULL").fetchall()
    new_ids = pd.DataFrame({"copy": range(1, copies), "new_run_id": [str(uuid.uuid4()) for _ in range(1, copies)]})
    con.register("copies", new_ids)
    params = {"base": base_run, "stride": FILE_ID_STRIDE, "shift": TIME_SHIFT_S}
    con.execute(
        """INSERT INTO events
           SELECT e.* REPLACE (c.new_run_id AS run_id, e.file_id + c.copy * $stride AS file_id,
                               e.ts + c.copy * $shift AS ts)
           FROM events e, copies c WHERE e.run_id = $base""", params)
    con.execute(
        """INSERT INTO event_task_links
           SELECT l.* REPLACE (c.new_run_id AS run_id, l.file_id + c.copy * $stride AS file_id)
           FROM event_task_links l, copies c WHERE l.run_id = $base""",
        {"base": base_run, "stride": FILE_ID_STRIDE})
    con.unregister("copies")
    con.execute("CHECKPOINT")


# ---------------------------------------------------------------------------------------------
# the prototype's method


def fetch_records(store) -> list[tuple]:
    """Every task event with its step fields, as Python tuples (the prototype's wide records)."""
    return store.con.execute(
        """SELECT run_id, task_id, ts, file_id, line, source, template, event FROM events
           WHERE task_id IS NOT NULL AND run_id IS NOT NULL
           UNION ALL
           SELECT l.run_id, l.task_id, e.ts, e.file_id, e.line, e.source, e.template, e.event
           FROM event_task_links l JOIN events e ON e.file_id = l.file_id AND e.line = l.line
           WHERE e.task_id IS NULL"""
    ).fetchall()


def python_common_path(records: list[tuple]) -> dict:
    """findcommon as a loop: per task, its sorted steps; tasks with the same steps are a variant."""
    noise = set(NOISE_EVENTS)
    per_task: dict[tuple, list] = defaultdict(list)
    for run_id, task_id, ts, file_id, line, source, template, event in records:
        if event in noise or source == "monitoring":
            continue
        per_task[(run_id, task_id)].append((ts, file_id, line, f"{source}: {template}"))
    variants: dict[tuple, list] = defaultdict(list)
    for events in per_task.values():
        events.sort()
        first = events[0][0]
        seen: dict[str, int] = defaultdict(int)
        keyed = []
        for ts, _, _, key in events:
            seen[key] += 1
            keyed.append(((key, seen[key]), ts - first))
        signature = tuple(sorted(step for step, _ in keyed))
        variants[signature].append(keyed)
    summary = {}
    for signature, tasks in variants.items():
        times: dict[tuple, list] = defaultdict(list)
        for keyed in tasks:
            for step, since_first in keyed:
                times[step].append(since_first)
        summary[signature] = {
            "tasks": len(tasks),
            "steps": {step: (statistics.fmean(v), statistics.median(v), quantile(v, 0.95)) for step, v in times.items()},
        }
    return summary


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


# ---------------------------------------------------------------------------------------------
# timing


def timed(action: Callable[[], object], repeat: int) -> tuple[float, list[float], object]:
    """Median seconds over `repeat` runs after one warm-up; also every time and the last result."""
    result = action()
    times = []
    for _ in range(repeat):
        gc.collect()
        started = time.perf_counter()
        result = action()
        times.append(time.perf_counter() - started)
    return statistics.median(times), times, result


def optional(module: str, name: str) -> Callable | None:
    try:
        return getattr(__import__(module, fromlist=[name]), name)
    except (ImportError, AttributeError):
        return None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workdir = args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    path = build_store(workdir, args.events, args.tasks)
    store = taskscope.open(path, read_only=True)
    (events, tasks, runs), = store.con.execute(
        "SELECT count(*), count(DISTINCT (run_id, task_id)) FILTER (WHERE task_id IS NOT NULL), count(DISTINCT run_id) FROM events"
    ).fetchall()
    threads = store.con.execute("SELECT current_setting('threads')").fetchall()[0][0]
    print(f"store {path}: {events:,} events, {tasks:,} tasks, {runs} runs; duckdb {threads} threads")
    some_run = store.con.execute("SELECT max(run_id) FROM events").fetchall()[0][0]

    states = optional("taskscope.analyses.states", "states")
    latency = optional("taskscope.analyses.latency", "latency")
    measurements: dict[str, Callable[[], object]] = {
        "timeline": lambda: store.timeline(1500, some_run),
        "common path": lambda: common_path(store),
    }
    if states is not None:
        measurements["states"] = lambda: states(store)
    if latency is not None:
        measurements["latency"] = lambda: latency(store, "task.launched", "htex.worker.received")

    results = {}
    for name, action in measurements.items():
        median, times, result = timed(action, args.repeat)
        results[name] = (median, times, result)
        print(f"  {name:12} median {median:8.3f} s  ({', '.join(f'{t:.3f}' for t in times)})", flush=True)

    loop_seconds = None
    if not args.skip_loop:
        started = time.perf_counter()
        records = fetch_records(store)
        fetch_seconds = time.perf_counter() - started
        print(f"  fetched {len(records):,} task records into Python in {fetch_seconds:.1f} s (not part of the loop time)")
        loop_seconds, times, summary = timed(lambda: python_common_path(records), max(1, args.repeat - 2))
        print(f"  python loop  median {loop_seconds:8.3f} s  ({', '.join(f'{t:.3f}' for t in times)})", flush=True)
        check_agreement(summary, results["common path"][2])
        del records

    print()
    print(f"{'measurement':14} {'median s':>9} {'target s':>9}  verdict")
    for name in ("timeline", "states", "common path", "latency"):
        if name not in results:
            print(f"{name:14} {'-':>9} {TARGETS[name]:>9.1f}  not measured (analysis not present)")
            continue
        median = results[name][0]
        print(f"{name:14} {median:9.3f} {TARGETS[name]:9.1f}  {'met' if median < TARGETS[name] else 'MISSED'}")
    if loop_seconds is not None:
        ratio = loop_seconds / results["common path"][0]
        print(f"{'python loop':14} {loop_seconds:9.3f} {'':>9}  the SQL common path is {ratio:.1f}x faster")
    store.close()
    return 0


def check_agreement(summary: dict, path) -> None:
    """The loop and the SQL must find the same variants and dominant mean times."""
    counts = sorted((v["tasks"] for v in summary.values()), reverse=True)
    sql_counts = list(path.variants["tasks"])
    dominant = max(summary.values(), key=lambda v: v["tasks"])
    worst = 0.0
    for step in path.dominant.itertuples(index=False):
        mean = dominant["steps"][(f"{step.source}: {step.template}", step.occurrence)][0]
        worst = max(worst, abs(mean - step.since_first_mean))
    agree = counts == sql_counts and worst < 1e-6
    print(f"  loop vs SQL: variants {len(counts)} vs {len(sql_counts)}, tasks per variant "
          f"{'equal' if counts == sql_counts else 'DIFFER'}, dominant means differ by at most {worst:.2e} s "
          f"-> {'agree' if agree else 'DISAGREE'}")


if __name__ == "__main__":
    sys.exit(main())
