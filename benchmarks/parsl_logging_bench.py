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
pairs), the ratio is taken within each pair (this machine is shared and noisy: only neighbours in
time are compared), and the CPU seconds each Parsl process used (DFK, interchange, manager,
workers: sampled from /proc through psutil) are printed per run, so a slower run can be told
apart from a run that did more work. `--profile` records the DFK with py-spy (if installed) into
`--profile-dir`.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
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


def run_perf(workdir: Path, name: str, setup: tuple[str, str], round_no: int, warmup: int, tasks: int,
             worker_debug: bool = True, profile_dir: Path | None = None) -> tuple[float, dict[str, float]]:
    """One parsl-perf run: the tasks/s of its last iteration, and CPU seconds per Parsl process kind."""
    imports, logging_line = setup
    slug = name.split()[-1].lower()
    config = workdir / f"config_{slug}_{round_no}.py"
    config.write_text(CONFIG.format(imports=imports, logging=logging_line.format(worker_debug=worker_debug),
                                    worker_debug=worker_debug, run_dir=str(workdir / f"runinfo_{slug}")))
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    command = [sys.executable, "-m", "parsl.benchmark.perf", "--config", str(config), "--iterate", f"{warmup},{tasks}"]
    if profile_dir is not None:
        profile_dir.mkdir(parents=True, exist_ok=True)
        command = ["py-spy", "record", "--nonblocking", "--subprocesses", "--format", "raw", "-o",
                   str(profile_dir / f"{slug}_{round_no}.txt"), "--"] + command
    with open(workdir / "perf.out", "w+") as out, open(workdir / "perf.err", "w+") as err:
        proc = subprocess.Popen(command, cwd=workdir, env=env, stdout=out, stderr=err, text=True)
        cpu = sample_cpu(proc, workdir)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    rates = RATE.findall(stdout)
    if proc.returncode != 0 or len(rates) < 2:
        sys.exit(f"parsl-perf failed for {name}:\n{stdout[-2000:]}\n{stderr[-2000:]}")
    return float(rates[-1]), cpu


def process_kind(process: psutil.Process, dfk_pid: int) -> str:
    """Which Parsl process `process` is: DFK, interchange, manager, worker (or other)."""
    if process.pid == dfk_pid:
        return "DFK"
    try:
        cmdline = " ".join(process.cmdline())
    except psutil.Error:
        return "other"
    if "interchange" in cmdline:
        return "interchange"
    if "process_worker_pool" in cmdline:
        return "manager"
    if "multiprocessing" in cmdline and "resource_tracker" not in cmdline:
        return "worker"  # the manager's spawned workers (and its multiprocessing Manager server)
    return "other"


def sample_cpu(proc: subprocess.Popen, workdir: Path) -> dict[str, float]:
    """Wait for `proc`, sampling the user+system CPU seconds of it, its descendants and the HTEX
    managers of its run (LocalProvider starts them detached: found by their command line naming
    `workdir`) with their workers, every 0.2 s (a process's last 0.2 s before it exits can be
    missed); seconds per process kind."""
    last: dict[int, tuple[str, float]] = {}
    root = psutil.Process(proc.pid)
    dfk_pid = proc.pid
    managers: dict[int, psutil.Process] = {}
    rounds = 0
    while proc.poll() is None:
        if rounds % 5 == 0:
            for process in psutil.process_iter(["cmdline"]):
                cmdline = " ".join(process.info["cmdline"] or ())
                if "process_worker_pool" in cmdline and str(workdir) in cmdline:
                    managers.setdefault(process.pid, process)
        rounds += 1
        family = [root]
        for top in (root, *managers.values()):
            try:
                family += [top, *top.children(recursive=True)]
            except psutil.Error:
                continue
        for process in set(family):
            try:
                if process.name().startswith("py-spy"):
                    continue
                times = process.cpu_times()
                if process.pid not in last and process.pid != root.pid and process.ppid() == root.pid \
                        and "parsl.benchmark" in " ".join(process.cmdline()):
                    dfk_pid = process.pid  # run under py-spy: the DFK is py-spy's child
                kind = last[process.pid][0] if process.pid in last else process_kind(process, dfk_pid)
                last[process.pid] = (kind, times.user + times.system)
            except psutil.Error:
                continue
        time.sleep(0.2)
    totals: dict[str, float] = {}
    for kind, seconds in last.values():
        totals[kind] = totals.get(kind, 0.0) + seconds
    return totals


KINDS = ("DFK", "interchange", "manager", "worker")
#: logging stages, by the first matching frame from the innermost out (py-spy sees Python frames:
#: orjson's C time is inside the frame that calls it)
STAGES = (
    ("write (flusher thread)", ("_flush_loop", "_flush_queue", "_write_queued", "(handler.py")),
    ("encode: message formatting", ("formatted_message",)),
    ("encode: site and thread", ("site_json", "thread_json", "caller_of", "_caller_frame", "_process_name")),
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
    """Alternating pairs NoopLogging / WideEventLogging; the median of the per-pair ratios."""
    setups = dict(NOOP_SETUPS)
    if not options.worker_debug:
        setups["taskscope WideEventLogging"] = WIDE_DEFAULT_LEVELS
    ratios, runs = [], []
    with tempfile.TemporaryDirectory(prefix="parsl-logging-bench-") as tmp:
        for pair in range(options.pairs):
            order = list(setups) if pair % 2 == 0 else list(reversed(setups))
            result = {}
            for name in order:
                rate, cpu = run_perf(Path(tmp), name, setups[name], pair, options.warmup, options.tasks,
                                     options.worker_debug, options.profile_dir if options.profile else None)
                result[name] = (rate, cpu)
                runs.append((pair + 1, name, rate, cpu))
                console.print(f"pair {pair + 1}: {name:28s} {rate:8.1f} tasks/s  CPU s: "
                              + "  ".join(f"{kind} {cpu.get(kind, 0):.1f}" for kind in KINDS), highlight=False)
            ratios.append(result["taskscope WideEventLogging"][0] / result["Parsl NoopLogging"][0])
            console.print(f"pair {pair + 1}: ratio {ratios[-1]:.2f}  (load average {os.getloadavg()[0]:.1f})",
                          highlight=False)
    table = Table(title=f"parsl-perf, HTEX worker_debug={options.worker_debug}, --iterate={options.warmup},"
                        f"{options.tasks}, {options.pairs} alternating pairs")
    for column in ("pair", "logging", "tasks/s", *(f"CPU s {kind}" for kind in KINDS)):
        table.add_column(column)
    for pair, name, rate, cpu in runs:
        table.add_row(str(pair), name, f"{rate:.0f}", *(f"{cpu.get(kind, 0):.1f}" for kind in KINDS))
    console.print(table)
    median = statistics.median(ratios)
    target = 0.8 if options.worker_debug else 0.95
    console.print(f"ratios {', '.join(f'{r:.2f}' for r in ratios)}; spread {min(ratios):.2f}-{max(ratios):.2f}")
    console.print(f"median WideEventLogging ÷ NoopLogging {median:.2f} (target ≥ {target}): "
                  f"{'met' if median >= target else 'missed'}")
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
    parser.add_argument("--profile-dir", type=Path, default=Path("parsl-logging-profiles"))
    parser.add_argument("--summarize", action="store_true", help="only summarize the profiles in --profile-dir")
    options = parser.parse_args()
    console = Console(width=190)
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
