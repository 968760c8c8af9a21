"""Parsl throughput under logging set-ups: default text files, Parsl's JSONLogging, taskscope's
WideEventLogging, and (`--against noop`) Parsl with no logging at all.

Runs `parsl-perf` with the same HTEX config (`worker_debug=True`, 2 workers, one local block) and
fixed task counts, alternating the three set-ups for `--pairs` rounds (so slow phases of this
noisy machine hit each set-up alike), reads the tasks/s parsl-perf prints for the last (large)
iteration, and prints each run, the medians and the ratios to default file logging.

    .venv/bin/python benchmarks/parsl_logging_bench.py [--tasks 2000] [--pairs 3]
    .venv/bin/python benchmarks/parsl_logging_bench.py --against noop [--worker-debug false] [--profile]

Targets: WideEventLogging ≥ 1.00× default file logging (issue #3); against Parsl's NoopLogging
(issue #23) ≥ 0.8× with every component at DEBUG and ≥ 0.95× at Parsl's default levels. With
`--against noop` each pair is NoopLogging then WideEventLogging (the order alternating between
pairs), the ratios are taken within each pair (this machine is shared and noisy: only neighbours in
time are compared), and three ratios are printed, each the median over pairs:

- wall: tasks/s of WideEventLogging ÷ NoopLogging (what the issue's targets name; sensitive to
  whatever else the machine runs);
- CPU: CPU ms per task of NoopLogging ÷ WideEventLogging, summed over every process of the run
  (DFK, interchange, manager, workers) during the measured iteration, read from /proc when
  parsl-perf prints that the iteration starts and when it prints its runtime. This is the throughput
  ratio a machine where the run is CPU-bound would give, and hardly moves with other load; the
  per-process columns say which process pays;
- whole-run CPU: the same over the whole run (start-up and shut-down included), exactly, from
  getrusage of the reaped descendants (the bench makes itself their subreaper).

`--call-cost` has every process of the WideEventLogging runs measure the thread CPU time inside
each of Parsl's logging calls (WideEventLogging(measure_calls=True)) and prints calls per task,
µs per call and CPU ms per task in calls, per process: what the calls cost inside a real run.
`--gc-stats` counts the garbage collector's passes per generation and their thread CPU in every
process of every run (a `sitecustomize` put first on the runs' PYTHONPATH), over the whole run.
`--profile` records every process with py-spy (if installed) into `--profile-dir` (its CPU is not
counted, but its sampling slows the run: compare profiles, not figures, of such runs);
`--profile-native` adds C frames (the collector's, orjson's), `--profile-rate` sets the samples per second.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import math
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from rich.console import Console
from rich.table import Table

CONFIG = '''
import logging
from parsl.config import Config
from parsl.executors import HighThroughputExecutor
from parsl.providers import LocalProvider
{imports}
config = Config(
    executors=[HighThroughputExecutor(label="htex_local", worker_debug={worker_debug}, cores_per_worker=1,
                                      max_workers_per_node=2, provider=LocalProvider(init_blocks=1, max_blocks=1))],
    strategy="none",
    run_dir={run_dir!r},{logging}
)

# parsl-perf shuts the run down right after printing an iteration's figures: when the bench asks
# (TASKSCOPE_BENCH_GO names a file), wait after the "Runtime" line until the bench has read the
# processes' CPU and made that file (at most 30 s). The module is run twice: wrap print once.
import builtins, os, time
if os.environ.get("TASKSCOPE_BENCH_GO") and not getattr(builtins.print, "bench_wrapped", False):
    def _print_then_wait(*args, _print=builtins.print, **kwargs):
        _print(*args, **kwargs)
        if args and str(args[0]).startswith("Runtime: actual"):
            go, deadline = os.environ["TASKSCOPE_BENCH_GO"], time.monotonic() + 30
            while not os.path.exists(go) and time.monotonic() < deadline:
                time.sleep(0.01)
            if os.path.exists(go):
                os.remove(go)
    _print_then_wait.bench_wrapped = True
    builtins.print = _print_then_wait
'''

SETUPS = {
    "default file logging": ("", ""),
    "Parsl JSONLogging": ("from parsl.logconfigs.json import JSONLogging",
                          "\n    initialize_logging=JSONLogging(level=logging.DEBUG),"),
    "taskscope WideEventLogging": ("from taskscope.parsl import WideEventLogging",
                                   "\n    initialize_logging=WideEventLogging(level=logging.DEBUG),"),
}
NOOP_SETUPS = {
    "Parsl NoopLogging": ("from parsl.logconfigs.noop import NoopLogging", "\n    initialize_logging=NoopLogging(),"),
    "taskscope WideEventLogging": SETUPS["taskscope WideEventLogging"],
}
WIDE_DEFAULT_LEVELS = ("from taskscope.parsl import WideEventLogging",
                       "\n    initialize_logging=WideEventLogging(level=logging.DEBUG if {worker_debug} else logging.INFO),")
RATE = re.compile(r"Tasks per second: ([0-9.]+)")
PR_SET_CHILD_SUBREAPER = 36  # linux/prctl.h
PY_SPY_OPTIONS: list[str] = ["--nonblocking"]  # set from --profile-native and --profile-rate
GO_FILE = "bench-go"  # made when the bench has read an iteration's CPU: parsl-perf goes on


#: with --gc-stats, every Python process of a run imports this (as `sitecustomize`, found first on
#: PYTHONPATH): it counts the garbage collector's passes per generation and the thread CPU they
#: take, and writes them every 0.2 s to `<TASKSCOPE_BENCH_GC>/<pid>.json`
GC_SITECUSTOMIZE = """
import gc, json, os, sys, threading, time
_dir = os.environ.get("TASKSCOPE_BENCH_GC")
if _dir:
    _passes = {0: [0, 0], 1: [0, 0], 2: [0, 0]}
    _started = [0]
    def _count(phase, info, clock=time.thread_time_ns):
        if phase == "start":
            _started[0] = clock()
        else:
            row = _passes[info["generation"]]
            row[0] += 1
            row[1] += clock() - _started[0]
    gc.callbacks.append(_count)
    def _dump():
        path = os.path.join(_dir, f"{os.getpid()}.json")
        while True:
            time.sleep(0.2)
            try:
                with open(path + ".tmp", "w") as file:
                    json.dump({"cmdline": " ".join(sys.orig_argv), "passes": _passes}, file)
                os.replace(path + ".tmp", path)
            except Exception:
                pass
    def _start_dumper():
        threading.Thread(target=_dump, daemon=True).start()
    _start_dumper()
    os.register_at_fork(after_in_child=_start_dumper)
"""


def gc_stats(gc_dir: Path, dfk_marker: str) -> dict[str, list[list[float]]]:
    """Per process kind: [[passes, CPU seconds] per generation 0, 1, 2] over the whole run."""
    totals: dict[str, list[list[float]]] = {}
    for path in gc_dir.glob("*.json"):
        try:
            stats = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        kind = process_kind_of(stats["cmdline"], dfk_marker in stats["cmdline"] and "parsl.benchmark" in stats["cmdline"])
        rows = totals.setdefault(kind, [[0, 0.0], [0, 0.0], [0, 0.0]])
        for generation in range(3):
            passes, ns = stats["passes"][str(generation)]
            rows[generation][0] += passes
            rows[generation][1] += ns / 1e9
    return totals


def run_perf(workdir: Path, name: str, setup: tuple[str, str], round_no: int, warmup: int, tasks: int,
             worker_debug: bool = True, profile_dir: Path | None = None,
             call_cost_dir: Path | None = None, gc_dir: Path | None = None) -> tuple[float, "RunCpu"]:
    """One parsl-perf run: the tasks/s of its last iteration, and the CPU it cost (`RunCpu`)."""
    imports, logging_line = setup
    slug = name.split()[-1].lower()
    if call_cost_dir is not None:  # each process writes its logging calls' thread CPU (WideEventLogging only)
        logging_line = logging_line.replace(
            "WideEventLogging(", f"WideEventLogging(stats_dir={str(call_cost_dir / f'{slug}_{round_no}')!r}, measure_calls=True, ")
    config = workdir / f"config_{slug}_{round_no}.py"
    config.write_text(CONFIG.format(imports=imports, logging=logging_line.format(worker_debug=worker_debug),
                                    worker_debug=worker_debug, run_dir=str(workdir / f"runinfo_{slug}")))
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
               PYTHONUNBUFFERED="1",  # parsl-perf's lines as they are printed: they mark the measured iteration
               TASKSCOPE_BENCH_GO=str(workdir / GO_FILE))
    (workdir / GO_FILE).unlink(missing_ok=True)
    if gc_dir is not None:
        (workdir / "gc-site").mkdir(exist_ok=True)
        (workdir / "gc-site" / "sitecustomize.py").write_text(GC_SITECUSTOMIZE)
        gc_dir.mkdir(parents=True, exist_ok=True)
        env["TASKSCOPE_BENCH_GC"] = str(gc_dir)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(workdir / "gc-site"), env.get("PYTHONPATH"))))
    command = [sys.executable, "-m", "parsl.benchmark.perf", "--config", str(config), "--iterate", f"{warmup},{tasks}"]
    if profile_dir is not None:
        profile_dir.mkdir(parents=True, exist_ok=True)
        command = ["py-spy", "record", "--subprocesses", "--format", "raw", *PY_SPY_OPTIONS, "-o",
                   str(profile_dir / f"{slug}_{round_no}.txt"), "--"] + command
    become_subreaper()
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(workdir / "perf.err", "w+") as err:
        proc = subprocess.Popen(command, cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=err, text=True)
        stdout, iteration = follow_perf(proc, workdir, tasks)
        err.seek(0)
        stderr = err.read()
    reap_descendants()
    children_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    whole_run = (children_after.ru_utime + children_after.ru_stime
                 - children_before.ru_utime - children_before.ru_stime)
    rates = RATE.findall(stdout)
    if proc.returncode != 0 or len(rates) < 2:
        sys.exit(f"parsl-perf failed for {name}:\n{stdout[-2000:]}\n{stderr[-2000:]}")
    return float(rates[-1]), RunCpu(iteration=iteration, tasks=tasks, whole_run=whole_run, run_tasks=warmup + tasks)


@dataclass
class RunCpu:
    """CPU seconds (user + system) of one parsl-perf run.

    `iteration`: per process kind, used during the measured (last) iteration, between parsl-perf
    printing that it starts and printing its runtime (parsl-perf then waits for the bench before it
    shuts the run down): every process of the run read from /proc at both moments (a process
    started in between counts from zero; one gone by the end: no figure). `whole_run`: every process of the run,
    start-up and shut-down included, exactly (getrusage of the reaped descendants: the bench is
    their subreaper, so the detached HTEX managers and their workers are reaped here too)."""

    iteration: dict[str, float]
    tasks: int
    whole_run: float
    run_tasks: int

    @property
    def per_task_ms(self) -> float:
        """CPU ms per task of the measured iteration, all processes (NaN: not measured)."""
        return 1000 * sum(self.iteration.values()) / self.tasks if self.iteration else math.nan


def become_subreaper() -> None:
    """Make this process the subreaper of its descendants (Linux): processes that their parent
    leaves (LocalProvider starts the HTEX managers detached) are re-parented here, so that their
    CPU reaches RUSAGE_CHILDREN when `reap_descendants` waits for them."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def reap_descendants(timeout: float = 60.0) -> None:
    """Wait for every remaining child (the run's left processes) to end, at most `timeout` s,
    then SIGKILL those still left (by pid: only processes of this run are children here)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid:
            continue
        if time.monotonic() > deadline:
            for child in psutil.Process().children():
                child.kill()
            deadline = float("inf")
        time.sleep(0.05)


def follow_perf(proc: subprocess.Popen, workdir: Path, tasks: int) -> tuple[str, dict[str, float]]:
    """Read parsl-perf's output until it ends; snapshot the run's processes' CPU when the
    measured iteration starts (`Will run <tasks> tasks` after the first iteration) and when its
    runtime is printed. Returns the output and the CPU seconds of that iteration per process kind
    ({} when a process was gone by then)."""
    lines, start, end, iterations = [], None, None, 0
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("==== Iteration"):
            iterations += 1
        elif iterations >= 2 and start is None and line.startswith(f"Will run {tasks} tasks"):
            start = cpu_snapshot(proc.pid, workdir)
        elif line.startswith("Runtime: actual"):  # parsl-perf waits for the go file (see CONFIG)
            if start is not None and end is None:
                end = cpu_snapshot(proc.pid, workdir)
            (workdir / GO_FILE).touch()
    proc.wait()
    if start is None or end is None:
        return "".join(lines), {}
    missing = {kind for kind, _ in start.values()} - {kind for kind, _ in end.values()}
    if missing:
        print(f"warning: no {', '.join(sorted(missing))} process left at the iteration's end (read too late): "
              "this run has no CPU figure for the iteration", file=sys.stderr)
        return "".join(lines), {}
    totals: dict[str, float] = {}
    for pid, (kind, seconds) in end.items():
        totals[kind] = totals.get(kind, 0.0) + seconds - start.get(pid, (kind, 0.0))[1]
    return "".join(lines), totals


def cpu_snapshot(root_pid: int, workdir: Path) -> dict[int, tuple[str, float]]:
    """pid -> (process kind, user + system CPU seconds) of the run's processes: parsl-perf, its
    descendants, and the HTEX managers of its run (found by their command line naming `workdir`)
    with theirs. py-spy (under --profile) is left out."""
    root = psutil.Process(root_pid)
    tops = [root]
    for process in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(process.info["cmdline"] or ())
        if "process_worker_pool" in cmdline and str(workdir) in cmdline:
            tops.append(process)
    family: dict[int, psutil.Process] = {}
    for top in tops:
        for _ in range(10):  # a process ending during the walk makes it raise: walk again
            try:
                family.update((p.pid, p) for p in (top, *top.children(recursive=True)))
                break
            except psutil.Error:
                continue
    dfk_pid = root_pid
    snapshot: dict[int, tuple[str, float]] = {}
    for process in family.values():
        try:
            cmdline = " ".join(process.cmdline())
            if process.name().startswith("py-spy"):
                continue
            if process.pid != root_pid and process.ppid() == root_pid and "parsl.benchmark" in cmdline:
                dfk_pid = process.pid  # run under py-spy: the DFK is py-spy's child
            times = process.cpu_times()
            snapshot[process.pid] = (cmdline, times.user + times.system)
        except psutil.Error:
            continue
    return {pid: (process_kind_of(cmdline, pid == dfk_pid), seconds) for pid, (cmdline, seconds) in snapshot.items()}


def process_kind_of(cmdline: str, is_dfk: bool) -> str:
    """Which Parsl process a command line is: DFK, interchange, manager, worker (or other)."""
    if is_dfk:
        return "DFK"
    if "interchange" in cmdline:
        return "interchange"
    if "process_worker_pool" in cmdline:
        return "manager"
    if "multiprocessing" in cmdline and "resource_tracker" not in cmdline:
        return "worker"  # the manager's spawned workers (and its multiprocessing Manager server)
    return "other"


KINDS = ("DFK", "interchange", "manager", "worker")


def call_costs(stats_dir: Path, tasks: int) -> dict[str, tuple[int, float, float]]:
    """Per process kind, from the counters WideEventLogging(measure_calls=True) wrote: (logging
    calls, thread CPU seconds in them, thread CPU seconds of the handler's flushes) over the whole
    run of `tasks` tasks."""
    kinds = {"parsl": "DFK", "interchange": "interchange", "manager": "manager"}
    totals: dict[str, list] = {}
    for path in stats_dir.glob("*.json"):
        stats = json.loads(path.read_text())
        kind = kinds.get(path.stem.rsplit("-", 1)[0], "worker")
        row = totals.setdefault(kind, [0, 0.0, 0.0])
        row[0] += stats.get("calls", 0)
        row[1] += stats.get("call_cpu_ns", 0) / 1e9
        row[2] += stats.get("writer_cpu_ns", 0) / 1e9
    return {kind: tuple(row) for kind, row in totals.items()}


def print_call_costs(rows: list[tuple[int, dict[str, tuple[int, float, float]]]], tasks: int, console: Console) -> None:
    table = Table(title="WideEventLogging: Parsl's logging calls in each process, thread CPU measured around each call "
                        "(a real run: caches are cold, unlike a loop of calls)")
    for column in ("pair", "process", "calls/task", "µs/call", "CPU ms/task in calls", "CPU ms/task in flushes"):
        table.add_column(column)
    for pair, costs in rows:
        for kind in KINDS:
            calls, seconds, flushes = costs.get(kind, (0, 0.0, 0.0))
            table.add_row(str(pair), kind, f"{calls / tasks:.1f}", f"{1e6 * seconds / max(calls, 1):.1f}",
                          f"{1000 * seconds / tasks:.3f}", f"{1000 * flushes / tasks:.3f}")
    console.print(table)


def print_gc_stats(rows: list[tuple[int, str, dict[str, list[list[float]]]]], tasks: int, console: Console) -> None:
    table = Table(title="The garbage collector over the whole run (start-up included): passes per generation and "
                        "CPU ms per task in them, per process")
    for column in ("pair", "logging", "process", "gen 0 passes", "gen 1", "gen 2", "GC CPU ms/task (gen 0/1/2)"):
        table.add_column(column)
    for pair, name, kinds in rows:
        for kind in KINDS:
            gens = kinds.get(kind)
            if gens is None:
                continue
            table.add_row(str(pair), name, kind, *(str(int(g[0])) for g in gens),
                          f"{1000 * sum(g[1] for g in gens) / tasks:.3f} ("
                          + "/".join(f"{1000 * g[1] / tasks:.3f}" for g in gens) + ")")
    console.print(table)


#: logging stages, by the first matching frame from the innermost out (py-spy sees Python frames:
#: orjson's C time is inside the frame that calls it)
STAGES = (
    ("write (flusher thread)", ("_flush_loop", "_flush_queue", "_write_queued", "(handler.py")),
    ("encode: message formatting", ("formatted_message",)),
    ("encode: site and thread", ("site_json", "thread_json", "caller_of", "_process_name")),
    ("encode: moment dict + orjson", ("encode_moment", "task_name", "_dumps_plain_first", "encode (records.py")),
    ("queue (handle_body/handle)", ("handle_body", "handle_fields", "handle (handler.py")),
    ("stdlib record path", ("findCaller", "makeRecord", "record_fields", "_fast_record", "callHandlers",
                            "handle (__init__.py")),
    ("call: level check, receivers", ("log_fast", "wide_receivers", "_log (logger.py", "_log (__init__.py",
                                      "isEnabledFor", "debug (__init__.py", "info (__init__.py")),
)


def profile_summary(path: Path) -> dict[str, dict[str, float]]:
    """Per process kind: total samples and the share of them in each logging stage (py-spy raw)."""
    result: dict[str, dict[str, float]] = {}
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue  # a command line with a line break in it
        frames = stack.split(";")
        head = frames[0]
        kind = ("interchange" if "interchange" in head else "manager" if "process_worker_pool" in head
                else "worker" if "multiprocessing" in head else "DFK" if "parsl.benchmark" in head else "other")
        row = result.setdefault(kind, {"samples": 0.0})
        row["samples"] += int(count)
        for frame in reversed(frames):
            stage = next((name for name, marks in STAGES if any(mark in frame for mark in marks)), None)
            if stage:
                row[stage] = row.get(stage, 0.0) + int(count)
                break
    return result


def print_profiles(profile_dir: Path, console: Console) -> None:
    table = Table(title="py-spy samples in logging, % of each process's samples")
    table.add_column("run")
    table.add_column("process")
    table.add_column("samples")
    for name, _ in STAGES:
        table.add_column(name)
    for path in sorted(profile_dir.glob("*.txt")):
        for kind, row in sorted(profile_summary(path).items()):
            if kind == "other":
                continue
            total = row["samples"] or 1
            table.add_row(path.stem, kind, f"{row['samples']:.0f}",
                          *(f"{100 * row.get(name, 0) / total:.1f}" for name, _ in STAGES))
    console.print(table)


def against_noop(options: argparse.Namespace, console: Console) -> None:
    """Alternating pairs NoopLogging / WideEventLogging; the medians of the per-pair ratios of
    tasks/s (wall clock: load-sensitive) and of CPU per task (noop ÷ wide: what the throughput
    ratio would be on a machine where the run is CPU-bound, and insensitive to other load)."""
    setups = dict(NOOP_SETUPS)
    if not options.worker_debug:
        setups["taskscope WideEventLogging"] = WIDE_DEFAULT_LEVELS
    wall_ratios, cpu_ratios, whole_ratios, runs, call_rows, gc_rows = [], [], [], [], [], []
    with tempfile.TemporaryDirectory(prefix="parsl-logging-bench-") as tmp:
        for pair in range(options.pairs):
            order = list(setups) if pair % 2 == 0 else list(reversed(setups))
            result = {}
            for name in order:
                gc_dir = Path(tmp) / "gc" / f"{name.split()[-1].lower()}_{pair}" if options.gc_stats else None
                rate, cpu = run_perf(Path(tmp), name, setups[name], pair, options.warmup, options.tasks,
                                     options.worker_debug, options.profile_dir if options.profile else None,
                                     Path(tmp) / "call-cost" if options.call_cost else None, gc_dir)
                result[name] = (rate, cpu)
                if gc_dir is not None:
                    gc_rows.append((pair + 1, name, gc_stats(gc_dir, f"config_{name.split()[-1].lower()}_{pair}")))
                if options.call_cost and "WideEventLogging" in name:
                    call_rows.append((pair + 1, call_costs(Path(tmp) / "call-cost" / f"{name.split()[-1].lower()}_{pair}",
                                                           options.warmup + options.tasks)))
                runs.append((pair + 1, name, rate, cpu, os.getloadavg()[0]))
                console.print(f"pair {pair + 1}: {name:28s} {rate:8.1f} tasks/s  CPU ms/task {cpu.per_task_ms:.3f} ("
                              + "  ".join(f"{kind} {1000 * cpu.iteration.get(kind, 0) / cpu.tasks:.3f}" for kind in KINDS)
                              + f")  whole run CPU s {cpu.whole_run:.2f}", highlight=False)
            noop, wide = result["Parsl NoopLogging"], result["taskscope WideEventLogging"]
            wall_ratios.append(wide[0] / noop[0])
            cpu_ratios.append(noop[1].per_task_ms / wide[1].per_task_ms)  # NaN: left out of the median
            whole_ratios.append(noop[1].whole_run / wide[1].whole_run)
            console.print(f"pair {pair + 1}: wall ratio {wall_ratios[-1]:.2f}  CPU ratio {cpu_ratios[-1]:.2f}  "
                          f"whole-run CPU ratio {whole_ratios[-1]:.2f}  (load average {os.getloadavg()[0]:.1f})",
                          highlight=False)
    table = Table(title=f"parsl-perf, HTEX worker_debug={options.worker_debug}, --iterate={options.warmup},"
                        f"{options.tasks}, {options.pairs} alternating pairs; CPU ms per task of the measured iteration")
    for column in ("pair", "logging", "tasks/s", "CPU ms/task", *KINDS, "whole run CPU s", "load 1 min"):
        table.add_column(column)
    for pair, name, rate, cpu, load in runs:
        table.add_row(str(pair), name, f"{rate:.0f}", f"{cpu.per_task_ms:.3f}",
                      *(f"{1000 * cpu.iteration.get(kind, 0) / cpu.tasks:.3f}" for kind in KINDS),
                      f"{cpu.whole_run:.2f}", f"{load:.1f}")
    console.print(table)
    target = 0.8 if options.worker_debug else 0.95
    for label, ratios in (("wall (tasks/s) WideEventLogging ÷ NoopLogging", wall_ratios),
                          ("CPU per task NoopLogging ÷ WideEventLogging", cpu_ratios),
                          ("whole-run CPU NoopLogging ÷ WideEventLogging", whole_ratios)):
        ratios = [r for r in ratios if not math.isnan(r)] or [math.nan]
        median = statistics.median(ratios)
        console.print(f"{label}: median {median:.2f} (pairs {', '.join(f'{r:.2f}' for r in ratios)}; "
                      f"target ≥ {target}: {'met' if median >= target else 'missed'})", highlight=False)
    if options.call_cost:
        print_call_costs(call_rows, options.warmup + options.tasks, console)
    if options.gc_stats:
        print_gc_stats(gc_rows, options.warmup + options.tasks, console)
    if options.profile:
        print_profiles(options.profile_dir, console)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=2000, help="tasks in the measured iteration (default 2000)")
    parser.add_argument("--warmup", type=int, default=100, help="tasks in the first, unmeasured iteration")
    parser.add_argument("--pairs", type=int, default=3, help="alternating rounds (default 3)")
    parser.add_argument("--against", choices=("default", "noop"), default="default",
                        help="compare with default file logging and JSONLogging, or with NoopLogging in pairs")
    parser.add_argument("--worker-debug", type=lambda v: v.lower() in ("1", "true", "yes"), default=True,
                        help="HTEX worker_debug (default true); false also logs WideEventLogging at INFO")
    parser.add_argument("--profile", action="store_true", help="record each run with py-spy (raw stacks)")
    parser.add_argument("--call-cost", action="store_true",
                        help="with --against noop: measure the thread CPU of each logging call in every process "
                             "(adds about 1 µs a call to the WideEventLogging runs)")
    parser.add_argument("--gc-stats", action="store_true",
                        help="with --against noop: count the garbage collector's passes and their CPU in every process")
    parser.add_argument("--profile-native", action="store_true",
                        help="with --profile: py-spy --native (C frames too: the garbage collector, orjson, syscalls; "
                             "it pauses the process at each sample, so it slows the run more)")
    parser.add_argument("--profile-rate", type=int, default=100, help="py-spy samples per second (default 100)")
    parser.add_argument("--profile-dir", type=Path, default=Path("parsl-logging-profiles"))
    parser.add_argument("--summarize", action="store_true", help="only summarize the profiles in --profile-dir")
    options = parser.parse_args()
    console = Console(width=190)
    PY_SPY_OPTIONS[:] = ["--native"] if options.profile_native else ["--nonblocking"]
    PY_SPY_OPTIONS.extend(["--rate", str(options.profile_rate)])
    if options.summarize:
        return print_profiles(options.profile_dir, console)
    if options.against == "noop":
        return against_noop(options, console)
    rates: dict[str, list[float]] = {name: [] for name in SETUPS}
    with tempfile.TemporaryDirectory(prefix="parsl-logging-bench-") as tmp:
        for round_no in range(options.pairs):
            order = list(SETUPS) if round_no % 2 == 0 else list(reversed(SETUPS))
            for name in order:
                rate, _ = run_perf(Path(tmp), name, SETUPS[name], round_no, options.warmup, options.tasks)
                rates[name].append(rate)
                console.print(f"round {round_no + 1}: {name:28s} {rate:8.1f} tasks/s", highlight=False)
    baseline = statistics.median(rates["default file logging"])
    table = Table(title=f"parsl-perf, HTEX worker_debug=True, {options.tasks} tasks, {options.pairs} alternating rounds")
    for column in ("logging", "tasks/s per round", "median tasks/s", "vs default file logging"):
        table.add_column(column)
    for name, values in rates.items():
        median = statistics.median(values)
        table.add_row(name, ", ".join(f"{v:.0f}" for v in values), f"{median:.1f}", f"{median / baseline:.2f}×")
    console.print(table)
    wide = statistics.median(rates["taskscope WideEventLogging"]) / baseline
    console.print(f"target WideEventLogging ≥ 1.00× default file logging: {'met' if wide >= 1.0 else 'missed'} ({wide:.2f}×)")


if __name__ == "__main__":
    main()
