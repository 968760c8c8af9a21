"""Ingest benchmark: taskscope against a plain `json.loads` loop, on real Parsl runs.

Run it from the repository root:

    .venv/bin/python benchmarks/ingest_bench.py
    .venv/bin/python benchmarks/ingest_bench.py --repeat 5 --replicate 4 --profile

What it does:

1. Makes two real Parsl runs with `parsl-perf --iterate 9000` (9,000 trivial tasks each) on a
   local HighThroughputExecutor: one with `JSONLogging()` (*.jsonlog files), one with the
   default text logs. Config files, run folders and parsl-perf output live in the cache
   folder `--workdir` (default `benchmarks/.work/`, git-ignored) and are reused on later
   runs; `--remake` makes them again. Making each run takes a few minutes. `--json-run` and
   `--text-run` take runinfo folders made elsewhere instead.
2. Times, alternating and in the same process, `--repeat` times each (after one untimed
   warm-up round), and reports the median:
   a. `taskscope.ingest.ingest` of json_run into a fresh in-memory store (ingest + relate):
      events/s. `Store.ingest` (what the CLI runs) then computes the dashboard digests of
      ended runs (`taskscope.digests`): timed apart and printed after the table;
   b. the anchor, `for line in open(f): json.loads(line)` over the same *.jsonlog files
      (what the prototype's loader does): events/s;
   c. the same for text_run: lines/s (`IngestReport.lines`);
   d. the engine's floor: DuckDB's own `read_json` of the same *.jsonlog files (explicit
      columns) straight into a fresh store's `events` table, with no line numbers, bad-line
      accounting, attrs, rules, templates or relate: how far (a) is from what DuckDB alone
      does on this machine.
3. Measures the peak memory (the process's own VmHWM) of one ingest + relate of each run
   into a store file, in a fresh Python process, so that nothing measured before counts.
4. Prints a table and checks the targets: JSON ingest + relate >= 1.5x the anchor (b) and
   >= 0.5x the floor (d); text >= 150k lines/s; peak memory of each ingest <= 1 GB. With
   fewer than 9,000 tasks the figures are not the targets' (small runs are dominated by
   fixed costs). PASS/MISS is printed as measured.

`--replicate N` concatenates every log of the JSON run N times into a bigger copy (for a
steadier figure); (a) and (b) then read that copy. `--profile` adds one more ingest of
each run through a connection wrapper that times every SQL statement taskscope issues.
`--store-ingest RUNINFO` instead times only `Store.ingest` (what the CLI runs, digests included)
of RUNINFO into a store file in a fresh process: wall, CPU and peak memory.
`--breakdown` times, alternating with the `json.loads` loop, what DuckDB alone takes for each
piece a JSON ingest cannot skip (read the lines, parse the keys, rules and templates): any
piece slower than 1/1.5 of the loop puts the 1.5x target out of reach by itself.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import duckdb

import taskscope
from taskscope.ingest import IngestReport
from taskscope.ingest import ingest as ingest_paths
from taskscope.rules import load_rules
from taskscope.digests import refresh_digests

BENCH_DIR = Path(__file__).resolve().parent
DEFAULT_WORKDIR = BENCH_DIR / ".work"
LABEL = "htex_local"
LAUNCH_TEXT = "launched on executor"

TARGET_JSON_RATIO = 1.5  # ingest + relate over the json.loads loop
TARGET_FLOOR_SHARE = 0.5  # ingest + relate over DuckDB's bare read_json
TARGET_TEXT_RATE = 150_000.0
TARGET_PEAK_BYTES = 1 << 30
TARGET_TASKS = 9000

CONFIG_TEMPLATE = '''"""parsl-perf config written by benchmarks/ingest_bench.py ({variant} logs)."""
from parsl.config import Config
from parsl.executors import HighThroughputExecutor
from parsl.providers import LocalProvider
{extra_import}
config = Config(
    executors=[
        HighThroughputExecutor(
            label="{label}",
            worker_debug=True,
            cores_per_worker=1,
            max_workers_per_node=2,
            provider=LocalProvider(init_blocks=1, max_blocks=1),
        )
    ],
    strategy="none",
    run_dir={run_dir!r},{logging}
)
'''


@dataclass(frozen=True)
class Variant:
    """One kind of Parsl run: its log file extension and how its config sets up logging."""

    name: str
    ext: str
    extra_import: str
    logging: str


VARIANTS = {
    "json": Variant("json", "jsonlog", "from parsl.logconfigs.json import JSONLogging\n",
                    "\n    initialize_logging=JSONLogging(),"),
    "text": Variant("text", "log", "", ""),
}


@dataclass
class Sample:
    """One timed measurement: how many items (events or lines) in how many seconds."""

    items: int
    seconds: float
    report: IngestReport | None = None
    cpu_seconds: float = 0.0  # CPU time of this process (all threads): less sensitive to other load
    store_events: int = 0  # rows in `events` after a taskscope ingest
    digest_seconds: float = 0.0  # what `Store.ingest` adds after ingest + relate: the dashboard digests

    @property
    def rate(self) -> float:
        return self.items / self.seconds if self.seconds > 0 else float("inf")


@dataclass
class Series:
    """The repeated samples of one measurement."""

    label: str
    unit: str
    samples: list[Sample] = field(default_factory=list)

    @property
    def median_seconds(self) -> float:
        return statistics.median(s.seconds for s in self.samples)

    @property
    def items(self) -> int:
        return self.samples[-1].items

    @property
    def rate(self) -> float:
        return self.items / self.median_seconds

    @property
    def cpu_rate(self) -> float:
        """Items per CPU second (median CPU time of the samples)."""
        return self.items / statistics.median(s.cpu_seconds for s in self.samples)


# ---------------------------------------------------------------------------------------------
# command line


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark taskscope ingest (JSON and text Parsl logs) against a json.loads loop.",
        epilog="Example: .venv/bin/python benchmarks/ingest_bench.py --repeat 5",
    )
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR,
                        help="cache folder for configs and Parsl runs (default: benchmarks/.work/)")
    parser.add_argument("--tasks", type=int, default=TARGET_TASKS,
                        help=f"tasks per Parsl run, passed as parsl-perf --iterate N (default: {TARGET_TASKS})")
    parser.add_argument("--json-run", type=Path, help="a runinfo folder with JSON logs to use instead of making one")
    parser.add_argument("--text-run", type=Path, help="a runinfo folder with text logs to use instead of making one")
    parser.add_argument("--repeat", type=int, default=3, help="timed repetitions of each measurement (default: 3)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds before timing (default: 1)")
    parser.add_argument("--replicate", type=int, default=1,
                        help="concatenate the JSON run's logs N times into a bigger copy (default: 1)")
    parser.add_argument("--remake", action="store_true", help="make the Parsl runs again even if cached")
    parser.add_argument("--perf-timeout", type=float, default=900.0,
                        help="seconds to allow one parsl-perf run (default: 900)")
    parser.add_argument("--profile", action="store_true",
                        help="also time each SQL statement of one extra ingest of each run")
    parser.add_argument("--breakdown", action="store_true",
                        help="also time the engine's own pieces of a JSON ingest, each against the loop")
    parser.add_argument("--store-ingest", type=Path, metavar="RUNINFO",
                        help="only time Store.ingest of RUNINFO (digests included) into a store file, as the CLI "
                             "does, in a fresh process: wall, CPU and peak memory (e.g. web_bench's 100k-task run)")
    args = parser.parse_args(argv)
    if args.repeat < 1 or args.replicate < 1 or args.tasks < 1 or args.warmup < 0:
        parser.error("--repeat, --replicate and --tasks must be >= 1, --warmup >= 0")
    return args


# ---------------------------------------------------------------------------------------------
# making (or reusing) the Parsl runs


def write_config(workdir: Path, variant: Variant) -> Path:
    """Write the parsl-perf config of `variant`; its run_dir is inside `workdir`."""
    path = workdir / f"perf_config_{variant.name}.py"
    text = CONFIG_TEMPLATE.format(
        variant=variant.name, label=LABEL, extra_import=variant.extra_import,
        run_dir=str(runinfo_dir(workdir, variant)), logging=variant.logging,
    )
    path.write_text(text)
    return path


def runinfo_dir(workdir: Path, variant: Variant) -> Path:
    return workdir / f"runinfo-{variant.name}"


def marker_path(workdir: Path, variant: Variant) -> Path:
    return workdir / f"run-{variant.name}.json"


def perf_command(config: Path, tasks: int) -> list[str]:
    """parsl-perf from this interpreter's environment (console script, else the module)."""
    script = Path(sys.executable).parent / "parsl-perf"
    base = [str(script)] if script.exists() else [sys.executable, "-m", "parsl.benchmark.perf"]
    return [*base, "--config", str(config), "--iterate", str(tasks)]


def ensure_run(workdir: Path, variant: Variant, tasks: int, remake: bool, timeout: float) -> Path:
    """The run folder of `variant`: the cached one if it is complete, else a new run."""
    cached = cached_run(workdir, variant, tasks)
    if cached is not None and not remake:
        print(f"[{variant.name}] reusing {cached}")
        return cached
    return make_run(workdir, variant, tasks, timeout)


def cached_run(workdir: Path, variant: Variant, tasks: int) -> Path | None:
    marker = marker_path(workdir, variant)
    if not marker.exists():
        return None
    info = json.loads(marker.read_text())
    folder = Path(info["run_folder"])
    if info.get("tasks", 0) < tasks or not folder.is_dir() or check_run(folder, variant, tasks):
        return None
    return folder


def make_run(workdir: Path, variant: Variant, tasks: int, timeout: float) -> Path:
    """Run parsl-perf for `variant` from scratch and check what it wrote."""
    shutil.rmtree(runinfo_dir(workdir, variant), ignore_errors=True)
    marker_path(workdir, variant).unlink(missing_ok=True)
    command = perf_command(write_config(workdir, variant), tasks)
    print(f"[{variant.name}] making a Parsl run: {' '.join(command)}", flush=True)
    started = time.perf_counter()
    output = workdir / f"perf-{variant.name}.out"
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    with open(output, "w") as out:
        done = subprocess.run(command, cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=timeout)
    if done.returncode != 0:
        sys.exit(f"[{variant.name}] parsl-perf failed (exit {done.returncode}); see {output}:\n"
                 + "".join(output.read_text().splitlines(True)[-30:]))
    folder = newest_run_folder(runinfo_dir(workdir, variant))
    problems = check_run(folder, variant, tasks)
    if problems:
        sys.exit(f"[{variant.name}] the run in {folder} is not usable: {'; '.join(problems)}")
    marker_path(workdir, variant).write_text(json.dumps({"run_folder": str(folder), "tasks": tasks}))
    print(f"[{variant.name}] made {folder} in {time.perf_counter() - started:.0f} s "
          f"({perf_summary(output)})")
    return folder


def newest_run_folder(runinfo: Path) -> Path:
    folders = sorted(p for p in runinfo.iterdir() if p.is_dir())
    if not folders:
        sys.exit(f"parsl-perf made no run folder under {runinfo}")
    return folders[-1]


def perf_summary(output: Path) -> str:
    lines = [line for line in output.read_text().splitlines() if line.startswith(("Will run", "Tasks per second"))]
    return ", ".join(lines)


def check_run(folder: Path, variant: Variant, tasks: int) -> list[str]:
    """What is missing from a run folder (empty if it has every log and enough tasks)."""
    ext = variant.ext
    wanted = {
        f"parsl.{ext}": [folder / f"parsl.{ext}"],
        f"{LABEL}/interchange.{ext}": [folder / LABEL / f"interchange.{ext}"],
        f"{LABEL}/block-*/*/manager.{ext}": list(folder.glob(f"{LABEL}/block-*/*/manager.{ext}")),
        f"{LABEL}/block-*/*/worker_*.{ext}": list(folder.glob(f"{LABEL}/block-*/*/worker_*.{ext}")),
    }
    problems = [name for name, paths in wanted.items() if not any(p.is_file() and p.stat().st_size for p in paths)]
    if not problems:
        launched = count_containing(folder / f"parsl.{ext}", LAUNCH_TEXT)
        if launched < tasks:
            problems.append(f"only {launched} launch lines, wanted {tasks}")
    return problems


def count_containing(path: Path, text: str) -> int:
    with open(path, errors="replace") as handle:
        return sum(1 for line in handle if text in line)


def describe_run(folder: Path) -> None:
    """Print each log file of a run with its line count and size."""
    for path in sorted(p for p in folder.rglob("*") if p.suffix in (".log", ".jsonlog")):
        with open(path, "rb") as handle:
            lines = sum(1 for _ in handle)
        print(f"    {str(path.relative_to(folder)):48} {lines:>9,} lines {path.stat().st_size / 1e6:>8.1f} MB")


def replicate_run(folder: Path, workdir: Path, times: int) -> Path:
    """A copy of `folder` whose log files hold their lines `times` over (cached)."""
    dest = workdir / f"json-x{times}" / folder.name
    marker = dest.parent / "source.txt"
    if marker.exists() and marker.read_text() == str(folder):
        return dest
    shutil.rmtree(dest.parent, ignore_errors=True)
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        target = dest / path.relative_to(folder)
        target.parent.mkdir(parents=True, exist_ok=True)
        data = path.read_bytes()
        target.write_bytes(data * (times if path.suffix in (".log", ".jsonlog") else 1))
    marker.write_text(str(folder))
    return dest


# ---------------------------------------------------------------------------------------------
# the measurements


def timed(action: Callable[[], tuple[int, IngestReport | None]]) -> Sample:
    gc.collect()
    started, cpu_started = time.perf_counter(), time.process_time()
    items, report = action()
    return Sample(items, time.perf_counter() - started, report, time.process_time() - cpu_started)


def taskscope_ingest(folder: Path, count: str) -> Sample:
    """(a)/(c): ingest + relate `folder` into a fresh in-memory store.

    What is timed is `taskscope.ingest.ingest` (ingest + relate); `Store.ingest` then also
    computes the dashboard digests of ended runs, timed apart as `digest_seconds`.
    `count` is "events" (rows in the store) or "lines".
    """
    store = taskscope.open(":memory:")
    try:
        sample = timed(lambda: (0, ingest_paths(store.con, [str(folder)], load_rules())))
        assert sample.report is not None
        started = time.perf_counter()
        refresh_digests(store.con)
        sample.digest_seconds = time.perf_counter() - started
        sample.store_events = int(store.con.execute("SELECT count(*) FROM events").fetchone()[0])
        sample.items = sample.store_events if count == "events" else sample.report.lines
        return sample
    finally:
        store.close()


# Parsl JSONLogging keys -> events columns, for the floor (d)
_FLOOR_COLUMNS = {
    "created": ("DOUBLE", "ts"), "levelname": ("VARCHAR", "level"), "name": ("VARCHAR", "logger"),
    "formatted": ("VARCHAR", "message"), "process": ("BIGINT", "pid"), "threadName": ("VARCHAR", "thread"),
    "parsl.dfk": ("VARCHAR", "run_id"), "parsl.task": ("BIGINT", "task_id"), "parsl.try": ("BIGINT", "try_id"),
    "parsl.app_name": ("VARCHAR", "app_name"), "parsl.task_state": ("VARCHAR", "task_state"),
    "parsl.executor": ("VARCHAR", "executor_label"), "parsl.executor_task": ("BIGINT", "executor_task_id"),
}


def duckdb_floor(files: list[Path]) -> Sample:
    """(d): DuckDB alone, `read_json` of the *.jsonlog files INSERTed into `events`."""
    store = taskscope.open(":memory:")
    columns = "{" + ", ".join(f"'{key}': '{sql_type}'" for key, (sql_type, _) in _FLOOR_COLUMNS.items()) + "}"
    targets = ", ".join(column for _, column in _FLOOR_COLUMNS.values())
    values = ", ".join(f'"{key}"' for key in _FLOOR_COLUMNS)
    sql = f"""INSERT INTO events (source, file, {targets})
              SELECT 'json', filename, {values}
              FROM read_json(?, format='newline_delimited', filename=true, columns={columns})"""
    try:
        def run() -> tuple[int, None]:
            store.con.execute(sql, [[str(f) for f in files]])
            return int(store.con.execute("SELECT count(*) FROM events").fetchone()[0]), None

        return timed(run)
    finally:
        store.close()


_PEAK_SCRIPT = """
import os, sys, tempfile
import taskscope
from taskscope.ingest import ingest
with tempfile.TemporaryDirectory() as folder:
    store = taskscope.open(os.path.join(folder, "peak.duckdb"))
    ingest(store.con, [sys.argv[1]])
    store.close()
# VmHWM is this process's own peak; ru_maxrss is not: a child started by fork or vfork
# inherits its parent's peak at exec, so it reported the (big) bench process's peak
print(next(line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM:")))
"""


def peak_memory(folder: Path) -> int:
    """Peak resident memory in bytes of one ingest + relate of `folder` into a store file, in a fresh process."""
    done = subprocess.run([sys.executable, "-c", _PEAK_SCRIPT, str(folder)], capture_output=True, text=True,
                          check=True)
    return int(done.stdout.split()[-1]) * 1024  # VmHWM is in KiB


_STORE_INGEST_SCRIPT = """
import os, sys, tempfile, time
import taskscope
with tempfile.TemporaryDirectory() as folder:
    store = taskscope.open(os.path.join(folder, "store.duckdb"))
    started, cpu_started = time.perf_counter(), time.process_time()
    report = store.ingest(sys.argv[1])
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    store.close()
peak = next(line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(report.events, report.lines, wall, cpu, int(peak) * 1024)
"""


def store_ingest(runinfo: Path) -> None:
    """Time `Store.ingest` of `runinfo` into a store file in a fresh process, as the CLI runs it."""
    done = subprocess.run([sys.executable, "-c", _STORE_INGEST_SCRIPT, str(runinfo)], capture_output=True,
                          text=True, check=True)
    events, lines, wall, cpu, peak = done.stdout.split()[-5:]
    print(f"Store.ingest of {runinfo} (digests included), fresh process, store file:")
    print(f"  {int(events):,} events from {int(lines):,} lines: {float(wall):.1f} s wall, {float(cpu):.1f} CPU-s "
          f"(all threads), peak memory {int(peak) / (1 << 20):,.0f} MiB")


def json_loads_loop(files: list[Path]) -> Sample:
    """(b): the prototype's loader, one `json.loads` per line of every *.jsonlog file."""

    def run() -> tuple[int, None]:
        events = 0
        for f in files:
            for line in open(f):
                json.loads(line)
                events += 1
        return events, None

    return timed(run)


def measure(json_run: Path, text_run: Path, repeat: int, warmup: int) -> list[Series]:
    """Run the three measurements in alternating order; rounds rotate the order."""
    files = sorted(json_run.rglob("*.jsonlog"))
    series = [
        Series("a  taskscope ingest+relate, JSON run", "events"),
        Series("b  json.loads loop, same *.jsonlog", "events"),
        Series("c  taskscope ingest+relate, text run", "lines"),
        Series("d  floor: DuckDB read_json -> events", "events"),
    ]
    actions = [
        lambda: taskscope_ingest(json_run, "events"),
        lambda: json_loads_loop(files),
        lambda: taskscope_ingest(text_run, "lines"),
        lambda: duckdb_floor(files),
    ]
    for round_number in range(warmup + repeat):
        order = [(round_number + i) % len(actions) for i in range(len(actions))]
        this_round = {index: actions[index]() for index in order}
        if round_number >= warmup:
            for index, sample in this_round.items():
                series[index].samples.append(sample)
        kind = "warm-up" if round_number < warmup else f"round {round_number - warmup + 1}/{repeat}"
        times = ", ".join(f"{'abcd'[i]} {this_round[i].seconds:.3f}s" for i in order)
        print(f"  {kind}: {times}", flush=True)
    return series


# ---------------------------------------------------------------------------------------------
# optional per-statement SQL profile


class TimingConnection:
    """Wraps a DuckDB connection; times every `execute` by the statement's first words."""

    def __init__(self, con: duckdb.DuckDBPyConnection):
        self._con = con
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)

    def execute(self, sql: str, params: Any = None) -> duckdb.DuckDBPyConnection:
        started = time.perf_counter()
        result = self._con.execute(sql, params) if params is not None else self._con.execute(sql)
        key = statement_key(sql)
        self.seconds[key] += time.perf_counter() - started
        self.calls[key] += 1
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self._con, name)


# statements outside relate, named by a fragment of their text
_STATEMENT_MARKERS: tuple[tuple[str, str], ...] = (
    ("LIMIT 0", "staging: describe select"),
    ("template_text", "flush: rules + templates -> events"),
    ("txt::JSON AS attrs", "json: parse -> staged"),
    ("'invalid JSON'", "json: bad_lines"),
    ("text_lines AS", "text: split records -> text_lines"),
    ("arg_min(h, line)", "text: records -> staged"),
    ("'invalid UTF-8'", "lines: undecodable -> bad_lines"),
    ("ORDER BY line LIMIT 200", "text: format sample"),
    ("median(epoch(strptime", "text: learn utc offset"),
)


def statement_key(sql: str) -> str:
    """A short name for a SQL statement: what it does, or its start."""
    flat = " ".join(sql.split())
    for marker, name in _STATEMENT_MARKERS:
        if marker in flat:
            return name
    return flat[:70]


def profile_ingest(folder: Path) -> None:
    """One extra ingest of `folder` with every SQL statement timed; prints the top ones."""
    store = taskscope.open(":memory:")
    proxy = TimingConnection(store.con)
    rules = load_rules()
    gc.collect()
    started = time.perf_counter()
    ingest_paths(proxy, [str(folder)], rules)  # type: ignore[arg-type]
    total = time.perf_counter() - started
    store.close()
    in_sql = sum(proxy.seconds.values())
    print(f"  {folder}: {total:.3f} s total, {in_sql:.3f} s in SQL, {total - in_sql:.3f} s in Python")
    for key, seconds in sorted(proxy.seconds.items(), key=lambda kv: -kv[1])[:12]:
        print(f"    {seconds:7.3f} s {100 * seconds / total:5.1f}%  x{proxy.calls[key]:<4} {key}")


# ---------------------------------------------------------------------------------------------
# optional breakdown: the engine's own pieces of a JSON ingest, each against the loop


def engine_pieces(files: list[Path], json_run: Path) -> dict[str, Callable[[], None]]:
    """Bare DuckDB statements for each piece of a JSON ingest, on the JSON run's files.

    The rules piece runs taskscope's rules + templates SQL over the records as an ingest
    stages them (captured once from a real ingest), without moving them to `events`.
    """
    from taskscope import ingest as ingest_module
    from taskscope.rules import apply_rules_sql
    from taskscope.sources.json_fields import extract_columns_sql

    con = duckdb.connect()
    paths = [str(f) for f in files]
    con.execute("CREATE TABLE lines AS SELECT * FROM read_csv(?, columns={'txt': 'VARCHAR'}, delim=chr(1), "
                "quote='', escape='', header=false)", [paths])
    store = taskscope.open(":memory:")
    flush = ingest_module._flush

    def keep_staged(con_: duckdb.DuckDBPyConnection, rules_: list) -> None:
        con_.execute("CREATE TABLE IF NOT EXISTS kept AS SELECT * FROM staged LIMIT 0")
        con_.execute("INSERT INTO kept SELECT * FROM staged")
        flush(con_, rules_)

    ingest_module._flush = keep_staged
    try:
        ingest_paths(store.con, [str(json_run)], load_rules())
    finally:
        ingest_module._flush = flush
    rules_sql = apply_rules_sql(load_rules(), "kept")
    floor_columns = "{" + ", ".join(f"'{key}': '{t}'" for key, (t, _) in _FLOOR_COLUMNS.items()) + "}"
    extraction, _ = extract_columns_sql("txt")
    statements = {
        "read the lines (read_csv, one column)": (con, "SELECT * FROM read_csv(?, columns={'txt': 'VARCHAR'}, "
                                                       "delim=chr(1), quote='', escape='', header=false)", [paths]),
        "read_json of 13 keys (the floor d)": (con, "SELECT * FROM read_json(?, format='newline_delimited', "
                                                    f"columns={floor_columns})", [paths]),
        "json_transform of the candidate keys": (con, f"SELECT {extraction} AS v FROM lines", None),
        "attrs as logged (txt::JSON)": (con, "SELECT txt::JSON FROM lines", None),
        "rules + templates (taskscope's SQL)": (store.con, rules_sql, None),
    }

    def run(con_: duckdb.DuckDBPyConnection, sql: str, params: list | None) -> Callable[[], None]:
        return lambda: con_.execute(f"CREATE OR REPLACE TEMP TABLE piece AS {sql}", params or []).fetchall()

    return {name: run(*statement) for name, statement in statements.items()}


def breakdown(files: list[Path], json_run: Path, repeat: int) -> None:
    """Time each engine piece and the json.loads loop alternately; print each as a share of the loop."""
    pieces = engine_pieces(files, json_run)
    loop_times: list[float] = []
    piece_times: dict[str, list[float]] = defaultdict(list)
    for _ in range(repeat):
        loop_times.append(json_loads_loop(files).seconds)
        for name, action in pieces.items():
            started = time.perf_counter()
            action()
            piece_times[name].append(time.perf_counter() - started)
    loop = statistics.median(loop_times)
    print(f"  json.loads loop: {loop:.3f} s (median of {repeat}); {TARGET_JSON_RATIO}x the loop leaves {loop / TARGET_JSON_RATIO:.3f} s")
    for name, times in piece_times.items():
        seconds = statistics.median(times)
        print(f"  {name:42} {seconds:7.3f} s = {seconds / loop:5.2f} of the loop")
    needed = sum(statistics.median(times) for name, times in piece_times.items() if "floor" not in name)
    print(f"  read + parse + attrs + rules alone: {needed:.3f} s = {loop / needed:.2f}x the loop "
          f"(before line numbers, bad lines, staging and relate)")


# ---------------------------------------------------------------------------------------------
# report


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def print_results(series: list[Series], json_events_anchor: int, peaks: dict[str, int]) -> None:
    a, b, c, d = series
    print()
    print(f"{'measurement':40} {'items':>18} {'median s':>9} {'min s':>8} {'max s':>8} {'rate (median)':>22}")
    for s in series:
        times = [x.seconds for x in s.samples]
        print(f"{s.label:40} {s.items:>11,} {s.unit:6} {s.median_seconds:9.3f} {min(times):8.3f} "
              f"{max(times):8.3f} {s.rate:>13,.0f} {s.unit}/s")
    ratio = a.rate / b.rate
    print(f"\nratio d/b (DuckDB's floor over the json.loads loop): {d.rate / b.rate:.2f}x; "
          f"a is {a.rate / d.rate:.2f} of the floor")
    print(f"ratio a/b (taskscope JSON events/s over json.loads loop events/s): {ratio:.2f}x")
    print(f"per CPU second (all threads; steadier when the machine is shared): a {a.cpu_rate:,.0f} events/s, "
          f"b {b.cpu_rate:,.0f} events/s, c {c.cpu_rate:,.0f} lines/s; ratio a/b {a.cpu_rate / b.cpu_rate:.2f}x")
    print("\ntargets:")
    floor_share = a.rate / d.rate
    print(f"  JSON  >= {TARGET_JSON_RATIO:.1f}x json.loads loop  {ratio:>10.2f}x          {verdict(ratio >= TARGET_JSON_RATIO)}")
    print(f"  JSON  >= {TARGET_FLOOR_SHARE:.1f}x DuckDB's floor   {floor_share:>10.2f}x          "
          f"{verdict(floor_share >= TARGET_FLOOR_SHARE)}")
    print(f"  text  >= {TARGET_TEXT_RATE:,.0f} lines/s   {c.rate:>10,.0f} lines/s   {verdict(c.rate >= TARGET_TEXT_RATE)}")
    for name, peak in peaks.items():
        print(f"  {name:5} peak memory <= {TARGET_PEAK_BYTES >> 20:,} MiB {peak / (1 << 20):>10,.0f} MiB       "
              f"{verdict(peak <= TARGET_PEAK_BYTES)}")
    print("\nStore.ingest (the CLI and Python API) also computes the dashboard digests of ended runs, "
          "not timed above:")
    for name, series_ in (("JSON", a), ("text", c)):
        digest = statistics.median(x.digest_seconds for x in series_.samples)
        total = series_.median_seconds + digest
        print(f"  {name} run: digests {digest:.3f} s; ingest + relate + digests {total:.3f} s = "
              f"{series_.items / total:,.0f} {series_.unit}/s")
    print_counts(a, c, json_events_anchor)


def print_counts(a: Series, c: Series, json_events_anchor: int) -> None:
    print("\ncounts:")
    for name, sample in (("JSON run", a.samples[-1]), ("text run", c.samples[-1])):
        report = sample.report
        assert report is not None and report.relate is not None
        share = report.relate.joined_share
        print(f"  {name}: events in store {sample.store_events:,} (report.events {report.events:,}), "
              f"lines {report.lines:,}, bad_lines {report.bad_lines:,}, files read {report.files_read}, "
              f"relate rounds {report.relate.rounds}, "
              f"joined_share {'-' if share is None else f'{share:.4f}'} "
              f"({report.relate.executor_events_joined:,}/{report.relate.executor_events:,})")
    print(f"  json.loads loop: {json_events_anchor:,} lines parsed")


def print_environment(args: argparse.Namespace) -> None:
    import parsl

    threads = duckdb.connect().execute("SELECT current_setting('threads')").fetchone()[0]
    print(f"python {platform.python_version()}, duckdb {duckdb.__version__} ({threads} threads), "
          f"parsl {parsl.__version__}, taskscope {taskscope.__version__}, {os.cpu_count()} CPUs")
    print(f"taskscope source: {source_version()}")
    print(f"repeat {args.repeat} (median reported), warm-up {args.warmup}, replicate {args.replicate}, "
          f"tasks per run {args.tasks}")


def source_version() -> str:
    """The commit of the taskscope being measured, and whether src/ has uncommitted edits."""
    repo = Path(taskscope.__file__).resolve().parents[2]
    try:
        head = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--", "src"],
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return f"{repo} (not a git checkout)"
    return f"{repo} at {head}" + (" + uncommitted edits in src/" if dirty else "")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workdir = args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    print_environment(args)
    if args.store_ingest:
        store_ingest(args.store_ingest.resolve())
        return 0
    given = {"json": args.json_run, "text": args.text_run}
    runs = {name: given[name].resolve() if given[name] else ensure_run(workdir, v, args.tasks, args.remake, args.perf_timeout)
            for name, v in VARIANTS.items()}
    json_run = runs["json"] if args.replicate == 1 else replicate_run(runs["json"], workdir, args.replicate)
    for name, folder in (("JSON", json_run), ("text", runs["text"])):
        print(f"\n{name} run {folder}:")
        describe_run(folder)
    print("\ntiming (alternating a, b, c, d; each round starts one later):")
    series = measure(json_run, runs["text"], args.repeat, args.warmup)
    peaks = {name: peak_memory(folder) for name, folder in (("JSON", json_run), ("text", runs["text"]))}
    print_results(series, series[1].items, peaks)
    if args.profile:
        print("\nSQL profile (one extra ingest each; statements by total time):")
        profile_ingest(json_run)
        profile_ingest(runs["text"])
    if args.breakdown:
        print("\nengine pieces of a JSON ingest (bare DuckDB; medians, alternating with the loop):")
        breakdown(sorted(json_run.rglob("*.jsonlog")), json_run, args.repeat)
    return 0


if __name__ == "__main__":
    sys.exit(main())
