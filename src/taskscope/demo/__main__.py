"""`python -m taskscope.demo`: run the demo workflow, ingest it, show what taskscope sees.

This is what `make demo` runs. It prints each command it runs so you can repeat them.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from pathlib import Path


def _show(args: list[str]) -> None:
    command = ["taskscope", *args]
    print(f"\n$ {shlex.join(command)}", flush=True)
    subprocess.run([sys.executable, "-m", "taskscope.cli", *args], check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", default="demo-run", help="where the run and the store go (default: demo-run)")
    parser.add_argument("--inputs", type=int, default=20, help="number of square() tasks (default: 20)")
    parser.add_argument("--logs", choices=["wide", "text", "json"], default="wide",
                        help="how Parsl logs: taskscope WideEventLogging (default), Parsl text files, Parsl JSONLogging")
    options = parser.parse_args()

    from taskscope.demo.workflow import run_workflow

    workdir = Path(options.workdir)
    runinfo = workdir / "runinfo"
    store = str(workdir / "demo.duckdb")
    print(f"running a real Parsl workflow (HTEX, {options.inputs + options.inputs // 4 + 2} tasks, "
          f"{options.logs} logs) in {runinfo}/ ...",
          flush=True)
    run_folder = run_workflow(runinfo, n_inputs=options.inputs, logs=options.logs)
    print(f"run finished: {run_folder}")

    _show(["ingest", str(runinfo), "--store", store])
    _show(["runs", "--store", store])
    _show(["tasks", "--run", run_folder.name, "--store", store])
    # the grand total: it waited on the subtotals, which waited on the squares
    grand_total_task = options.inputs + options.inputs // 4
    _show(["timeline", "--task", str(grand_total_task), "--run", run_folder.name, "--store", store])
    _show(["summary", "--run", run_folder.name, "--store", store])
    _show(["common-path", "--run", run_folder.name, "--store", store])
    _show(["sql", "SELECT source, count(*) AS events, count(task_id) AS with_task FROM events GROUP BY 1 ORDER BY 2 DESC",
           "--store", store])


if __name__ == "__main__":
    main()
