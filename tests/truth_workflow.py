"""A small real Parsl run for the truth tests: one HTEX executor with two blocks (so two
managers on this one host), resource monitoring every 2 s, a task that burns a known amount of
CPU, tasks that use 20 ms of CPU (each burn after a 1 s sleep, so that monitoring samples it at
least twice and its first sample comes before the CPU is spent), instant tasks, and a task that
fails on every try (retried once).

    python tests/truth_workflow.py RUNINFO

prints the run folder.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import parsl
from parsl.config import Config
from parsl.executors import HighThroughputExecutor
from parsl.launchers import SingleNodeLauncher
from parsl.monitoring.monitoring import MonitoringHub
from parsl.providers import LocalProvider

#: CPU seconds the `burn` task spends in a busy loop
BURN_CPU_S = 0.5
#: CPU seconds each `short` task spends
SHORT_CPU_S = 0.02


@parsl.python_app
def burn(seconds: float, sleep_first: float = 0.0) -> float:
    import time

    time.sleep(sleep_first)
    start = time.process_time()
    while time.process_time() - start < seconds:
        pass
    return time.process_time() - start


@parsl.python_app
def instant(x: int) -> int:
    return x


@parsl.python_app
def fails(x: int) -> int:
    import time

    time.sleep(0.2)
    raise ValueError(f"truth failure {x}")


def main(runinfo: str) -> Path:
    scripts = os.path.dirname(sys.executable)
    os.environ["PATH"] = scripts + os.pathsep + os.environ.get("PATH", "")
    executor = HighThroughputExecutor(
        label="htex_local", max_workers_per_node=1, cores_per_worker=1, loopback_address="127.0.0.1",
        encrypted=False,
        provider=LocalProvider(init_blocks=2, min_blocks=2, max_blocks=2, launcher=SingleNodeLauncher()),
    )
    config = Config(executors=[executor], run_dir=runinfo, retries=1, strategy="none",
                    monitoring=MonitoringHub(resource_monitoring_interval=2))
    with parsl.load(config) as dfk:
        futures = [burn(SHORT_CPU_S, sleep_first=1.0) for _ in range(4)] + [burn(BURN_CPU_S, sleep_first=1.0)]
        futures += [instant(i) for i in range(4)]
        failing = fails(1)
        for future in futures:
            future.result()
        try:
            failing.result()
        except ValueError:
            pass
        folder = Path(dfk.run_dir)
    parsl.clear()
    return folder


if __name__ == "__main__":
    print(main(sys.argv[1]))
