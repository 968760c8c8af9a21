"""Parsl throughput under three logging set-ups: default text files, Parsl's JSONLogging,
taskscope's WideEventLogging.

Runs `parsl-perf` with the same HTEX config (`worker_debug=True`, 2 workers, one local block) and
fixed task counts, alternating the three set-ups for `--pairs` rounds (so slow phases of this
noisy machine hit each set-up alike), reads the tasks/s parsl-perf prints for the last (large)
iteration, and prints each run, the medians and the ratios to default file logging.

    .venv/bin/python benchmarks/parsl_logging_bench.py [--tasks 2000] [--pairs 3]

Target (issue #3): WideEventLogging ≥ 1.00× default file logging.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

CONFIG = '''
import logging
from parsl.config import Config
from parsl.executors import HighThroughputExecutor
from parsl.providers import LocalProvider
{imports}
config = Config(
    executors=[HighThroughputExecutor(label="htex_local", worker_debug=True, cores_per_worker=1,
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
RATE = re.compile(r"Tasks per second: ([0-9.]+)")


def run_perf(workdir: Path, name: str, round_no: int, warmup: int, tasks: int) -> float:
    """One parsl-perf run; the tasks/s of its last iteration."""
    imports, logging_line = SETUPS[name]
    slug = name.split()[0].lower()
    config = workdir / f"config_{slug}_{round_no}.py"
    config.write_text(CONFIG.format(imports=imports, logging=logging_line, run_dir=str(workdir / f"runinfo_{slug}")))
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    done = subprocess.run(
        [sys.executable, "-m", "parsl.benchmark.perf", "--config", str(config), "--iterate", f"{warmup},{tasks}"],
        cwd=workdir, env=env, capture_output=True, text=True, timeout=1800,
    )
    rates = RATE.findall(done.stdout)
    if done.returncode != 0 or len(rates) < 2:
        sys.exit(f"parsl-perf failed for {name}:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return float(rates[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=2000, help="tasks in the measured iteration (default 2000)")
    parser.add_argument("--warmup", type=int, default=100, help="tasks in the first, unmeasured iteration")
    parser.add_argument("--pairs", type=int, default=3, help="alternating rounds (default 3)")
    options = parser.parse_args()
    console = Console(width=150)
    rates: dict[str, list[float]] = {name: [] for name in SETUPS}
    with tempfile.TemporaryDirectory(prefix="parsl-logging-bench-") as tmp:
        for round_no in range(options.pairs):
            order = list(SETUPS) if round_no % 2 == 0 else list(reversed(SETUPS))
            for name in order:
                rate = run_perf(Path(tmp), name, round_no, options.warmup, options.tasks)
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
