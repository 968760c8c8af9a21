"""A small real Parsl workflow: HTEX on the local machine, tasks with dependencies, one
that always fails (and is retried), so that every part of a run's logs is exercised.

Needs Parsl (`pip install taskscope[parsl]`).

>>> run_folder = run_workflow("runinfo")          # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import parsl
from parsl.config import Config
from parsl.executors import HighThroughputExecutor, ThreadPoolExecutor
from parsl.launchers import SingleNodeLauncher
from parsl.monitoring.monitoring import MonitoringHub
from parsl.providers import LocalProvider


@parsl.python_app
def square(x: int) -> int:
    import time

    time.sleep(0.01)
    return x * x


@parsl.python_app
def total(*parts: int) -> int:
    return sum(parts)


@parsl.python_app
def always_fails(x: int) -> int:
    raise ValueError(f"demo failure for input {x}")


def htex(label: str, worker_debug: bool = True) -> HighThroughputExecutor:
    """A HighThroughputExecutor with two workers in one local block."""
    return HighThroughputExecutor(
        label=label,
        max_workers_per_node=2,
        cores_per_worker=1,
        worker_debug=worker_debug,
        loopback_address="127.0.0.1",
        encrypted=False,
        provider=LocalProvider(init_blocks=1, min_blocks=0, max_blocks=1, launcher=SingleNodeLauncher()),
    )


def build_config(
    run_dir: str | Path,
    executor_labels: tuple[str, ...] = ("htex_local",),
    logs: str = "text",
    monitoring: bool = True,
    threads: bool = False,
    retries: int = 1,
) -> Config:
    """The demo's Parsl config: one HTEX per label (plus a ThreadPoolExecutor if `threads`).

    `logs` chooses how Parsl logs: "text" (Parsl's default files), "json" (Parsl's JSONLogging)
    or "wide" (taskscope's WideEventLogging).
    """
    executors = [htex(label) for label in executor_labels]
    if threads:
        executors.append(ThreadPoolExecutor(label="threads", max_threads=2))
    options: dict = {}
    if logs == "json":
        from parsl.logconfigs.json import JSONLogging

        options["initialize_logging"] = JSONLogging(level=logging.DEBUG)
    elif logs == "wide":
        from taskscope.parsl import WideEventLogging

        options["initialize_logging"] = WideEventLogging(level=logging.DEBUG)
    elif logs != "text":
        raise ValueError(f"logs must be text, json or wide, not {logs!r}")
    if monitoring:
        options["monitoring"] = MonitoringHub(resource_monitoring_interval=1)
    return Config(executors=executors, run_dir=str(run_dir), retries=retries, strategy="none", **options)


def run_workflow(run_dir: str | Path, n_inputs: int = 20, dependent_of_failure: bool = False,
                 **config_options) -> Path:
    """Run the demo workflow under `run_dir` (a runinfo folder); return the new run folder.

    `n_inputs` squares feed `n_inputs // 4` totals of four each, plus a grand total and one
    task that fails on every try: 2 + n_inputs + n_inputs // 4 tasks in all. With
    `dependent_of_failure`, one more task takes the failing one's result, so Parsl never
    launches it (`dep_fail`).
    """
    _put_interpreter_scripts_on_path()
    config = build_config(run_dir, **config_options)
    with parsl.load(config) as dfk:
        squares = [square(i) for i in range(n_inputs)]
        subtotals = [total(*squares[i : i + 4]) for i in range(0, n_inputs - n_inputs % 4, 4)]
        grand_total = total(*subtotals)
        failing = always_fails(7)
        blocked = [total(failing)] if dependent_of_failure else []
        grand_total.result()
        for future in [failing, *blocked]:
            try:
                future.result()
            except Exception:  # the failure (ValueError) and the dependency error it causes
                pass
        run_folder = Path(dfk.run_dir)
    parsl.clear()
    return run_folder


def _put_interpreter_scripts_on_path() -> None:
    """HTEX starts `interchange.py` and `process_worker_pool.py` by name: make sure the ones
    installed beside this interpreter are found even when its virtualenv is not activated."""
    scripts = os.path.dirname(sys.executable)
    if scripts not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = scripts + os.pathsep + os.environ.get("PATH", "")
