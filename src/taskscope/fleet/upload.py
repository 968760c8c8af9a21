"""`taskscope fleet upload`: a Parsl run's summary, from the event store, sent as a `kind: parsl` cluster.

The runinfo folder is ingested with `taskscope.open(...).ingest(...)` (into a temporary store unless
one is given); each run becomes one `parsl.run` message, under a cluster id derived from the run id,
so uploading a run again replaces its summary instead of adding a second cluster.

>>> upload_runs("runinfo/", server="http://127.0.0.1:8090", token="tsf_...")  # doctest: +SKIP
[{'run_id': '...', 'cluster_id': '...', 'tasks': 12, 'tasks_failed': 1, ...}]
"""

from __future__ import annotations

import socket
import tempfile
import time
import uuid
from pathlib import Path

import pandas as pd

import taskscope
from taskscope.analyses.resources import capacity
from taskscope.analyses.runs import runs as run_table
from taskscope.analyses.summary import summary
from taskscope.analyses.tasks import tasks
from taskscope.fleet.api import call, connection
from taskscope.fleet.protocol import DEFAULT_PRICE_PER_CORE_HOUR, INGEST_PATH, PROTOCOL_VERSION

#: cluster ids of uploaded runs are uuid5(this, run_id): stable across uploads of the same run
RUN_NAMESPACE = uuid.UUID("4b0b1a5e-6f0c-4d39-9a57-7a1f0e5d2c11")


class UploadError(RuntimeError):
    """The runinfo held no run (a refused upload is a `taskscope.fleet.api.FleetAPIError`)."""


def run_messages(store, price_per_core_hour: float = DEFAULT_PRICE_PER_CORE_HOUR) -> list[dict]:
    """One `parsl.run` message per run in `store` (tasks, apps, failures, workers, wall time, cost).

    Cores are the run's CPU cores where monitoring or the interchange reported them, else its worker
    slots; core-seconds are those cores held for the run's wall time (first to last event);
    compute_s is the tasks' run times (on a worker, else from launch, to their end) summed.

    >>> [m["tasks"] for m in run_messages(taskscope.open("run.duckdb"))]  # doctest: +SKIP
    [12]
    """
    runs = run_table(store.con)
    messages = []
    for run in runs.to_dict("records"):
        run_id = run["run_id"]
        result = summary(store, run=run_id)
        task_rows = tasks(store.con, run_id)
        task_run_s = task_rows.end_ts - task_rows.worker_start_ts.fillna(task_rows.launch_ts)
        held = capacity(store.con, run_id)
        cores = held["cpu_cores"] or held["workers"]
        wall_s = _float(run["duration_s"])
        core_seconds = cores * wall_s if cores and wall_s is not None else None
        start, stop = _epoch(run["start"]), _epoch(run["end"])
        messages.append({
            "kind": "parsl.run", "ts": stop or start or time.time(), "run_id": run_id,
            "workflow_name": _text(run["workflow_name"]), "user": _text(run["user"]), "host": _text(run["host"]),
            "start": start, "stop": stop, "tasks": int(run["tasks"]), "tasks_failed": int(run["tasks_failed"]),
            "apps": _apps(result.apps), "failures": _failures(result.failures),
            "workers": held["workers"], "cores": cores, "wall_s": wall_s, "core_seconds": core_seconds,
            "compute_s": _float(task_run_s.sum()) if task_run_s.notna().any() else None,
            "cost": core_seconds / 3600 * price_per_core_hour if core_seconds is not None else None,
        })
    return messages


def batch_for(message: dict) -> dict:
    """The protocol batch carrying one `parsl.run` message, under its run's cluster."""
    return {
        "protocol": PROTOCOL_VERSION, "batch_id": uuid.uuid4().hex, "sent_at": time.time(),
        # no user recorded in the run: the server takes the token's user
        "cluster": {"cluster_id": uuid.uuid5(RUN_NAMESPACE, message["run_id"]).hex, "kind": "parsl",
                    "name": message["run_id"], "user": message["user"],
                    "host": message["host"] or socket.gethostname()},
        "messages": [message],
    }


def upload_runs(runinfo: str | Path, server: str | None = None, token: str | None = None, store: str | None = None,
                price_per_core_hour: float = DEFAULT_PRICE_PER_CORE_HOUR, verify: bool | str = True) -> list[dict]:
    """Ingest `runinfo` (into `store`, else a temporary one) and send every run's summary to `server`.

    Returns one dict per run: run_id, cluster_id, tasks, tasks_failed, cost.
    """
    connection(server, token)  # no server or token: say so before ingesting
    with tempfile.TemporaryDirectory(prefix="taskscope-upload-") as scratch:
        opened = taskscope.open(store or str(Path(scratch) / "upload.duckdb"))
        try:
            opened.ingest(str(runinfo))
            messages = run_messages(opened, price_per_core_hour)
        finally:
            opened.close()
    if not messages:
        raise UploadError(f"no Parsl run found in {runinfo}")
    sent = []
    for message in messages:
        batch = batch_for(message)
        call("POST", INGEST_PATH, json=batch, server=server, token=token, verify=verify, timeout_s=60.0)
        sent.append({"run_id": message["run_id"], "cluster_id": batch["cluster"]["cluster_id"],
                     "tasks": message["tasks"], "tasks_failed": message["tasks_failed"], "cost": message["cost"]})
    return sent


def _apps(apps: pd.DataFrame) -> list[dict]:
    return [{"app_name": row.app_name, "tasks": int(row.tasks), "failed": int(row.failed + row.dep_fail),
             "mean_duration_s": _float(row.mean_duration_s)} for row in apps.itertuples()]


def _failures(failures: pd.DataFrame) -> list[dict]:
    if failures.empty:
        return []
    per_type = failures.groupby("exception_type").agg(count=("failed_tries", "sum"), tasks=("tasks", "sum"))
    return [{"exception_type": name, "count": int(row["count"]), "tasks": int(row["tasks"])}
            for name, row in per_type.iterrows()]


def _epoch(value) -> float | None:
    return None if pd.isna(value) else pd.Timestamp(value).timestamp()


def _float(value) -> float | None:
    return None if value is None or pd.isna(value) else float(value)


def _text(value) -> str | None:
    return None if value is None or pd.isna(value) else str(value)
