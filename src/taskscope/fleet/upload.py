"""`taskscope fleet upload`: a run's summary, from the event store, sent as a `kind: parsl` cluster (a
`kind: workflow` one for a run no Parsl component wrote: Academy, generic JSON lines).

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
from taskscope._sql import registered
from taskscope.analyses.resources import capacity
from taskscope.analyses.runs import runs as run_table
from taskscope.analyses.summary import summary
from taskscope.analyses.tasks import FAILED_TRIES, FAILURE_RECORDS, tasks
from taskscope.fleet.api import call, connection
from taskscope.fleet.protocol import DEFAULT_PRICE_PER_CORE_HOUR, INGEST_PATH, PROTOCOL_VERSION

#: failed tries sent as ``exception`` messages per run (their count is in the run's ``failures``)
MAX_FAILURES_SENT = 1000
#: characters kept of a failure's message (its first line)
MAX_FAILURE_TEXT = 300
#: each failed try of a run, as `taskscope.analyses.summary` counts them for any stream (`FAILURE_RECORDS`,
#: `FAILED_TRIES`: records without a try id placed in their task's tries, a failed task's last try
#: without a record failed under its traceback's exception, else `unknown`), given `task_rows`: when it
#: failed (its logged failure, else its first record, else its task's end), task, try, app, exception
#: type and monitoring's fail history
_FAILED_TRIES_SQL = f"""
    WITH {FAILURE_RECORDS}, {FAILED_TRIES},
    recorded AS (SELECT run_id, task_id, try_id, min(ts) AS ts FROM failure_records GROUP BY ALL),
    histories AS (
        SELECT run_id, task_id, try_id, any_value(nullif(attrs->>'task_fail_history', '')) AS history
        FROM events
        WHERE run_id = $run AND event IN ('try.info', 'try.not_launched') AND task_id IS NOT NULL AND try_id IS NOT NULL
          AND nullif(attrs->>'task_fail_history', '') IS NOT NULL
        GROUP BY ALL)
    SELECT coalesce(f.fail_ts, r.ts, t.end_ts) AS ts, f.task_id, f.try_id, t.app_name, f.exception_type, h.history
    FROM failed_tries f
    LEFT JOIN recorded r USING (run_id, task_id, try_id)
    LEFT JOIN histories h USING (run_id, task_id, try_id)
    LEFT JOIN task_rows t USING (run_id, task_id)
    ORDER BY ts NULLS LAST, f.task_id, f.try_id
    LIMIT $limit
"""

#: the `events.source` of what Parsl's components write (`taskscope.sources.parsl_layout`, monitoring.db):
#: a run with events from one of them, or from a `parsl.*` logger, is a Parsl run
PARSL_SOURCES = ("parsl", "interchange", "manager", "worker", "monitoring", "dbm", "router")

#: cluster ids of uploaded runs are uuid5(this, run_id): stable across uploads of the same run
RUN_NAMESPACE = uuid.UUID("4b0b1a5e-6f0c-4d39-9a57-7a1f0e5d2c11")


class UploadError(RuntimeError):
    """The runinfo held no run (a refused upload is a `taskscope.fleet.api.FleetAPIError`)."""


def run_messages(store, price_per_core_hour: float = DEFAULT_PRICE_PER_CORE_HOUR) -> list[dict]:
    """One `parsl.run` message per run in `store` (tasks, apps, failures, workers, wall time, cost), each
    followed by its failed tries as ``exception`` messages (`failure_messages`).

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
        start, stop = _float(run["start_ts"]), _float(run["end_ts"])
        messages.append({
            "kind": "parsl.run", "ts": stop or start or time.time(), "run_id": run_id,
            "workflow_name": _text(run["workflow_name"]), "user": _text(run["user"]), "host": _text(run["host"]),
            "start": start, "stop": stop, "tasks": int(run["tasks"]), "tasks_failed": int(run["tasks_failed"]),
            "apps": _apps(result.apps, task_rows.assign(run_s=task_run_s)), "failures": _failures(result.failures),
            "workers": held["workers"], "cores": cores, "wall_s": wall_s, "core_seconds": core_seconds,
            "compute_s": _float(task_run_s.sum()) if task_run_s.notna().any() else None,
            "cost": core_seconds / 3600 * price_per_core_hour if core_seconds is not None else None,
        })
        failed = failure_messages(store.con, run_id, task_rows)
        for failure in messages[-1]["failures"]:  # each type with the message of its first failure
            failure["message"] = next((m["exception_text"] for m in failed
                                       if m["exception_type"] == failure["exception_type"]), None)
        messages.extend(failed)
    return messages


def failure_messages(con, run_id: str, task_rows: pd.DataFrame | None = None) -> list[dict]:
    """One ``exception`` message per failed try of `run_id` (at most `MAX_FAILURES_SENT`), oldest first,
    the tries `taskscope.analyses.summary` counts (also of a stream without try ids): the task id as key,
    the app as task group, and as text the failure's message (``ValueError('bad 0')``, from monitoring's
    fail history, its first line, at most `MAX_FAILURE_TEXT` characters), else its exception type.
    `task_rows`: the run's `taskscope.analyses.tasks.tasks`, when the caller has them.

    >>> failure_messages(taskscope.open("run.duckdb").con, "0")[0]["exception_text"]  # doctest: +SKIP
    "ValueError('bad 0')"
    """
    task_rows = tasks(con, run_id) if task_rows is None else task_rows
    columns = task_rows[["run_id", "task_id", "final_state", "tries", "app_name", "end_ts"]]
    with registered(con, "task_rows", columns):
        rows = con.execute(_FAILED_TRIES_SQL, {"run": run_id, "limit": MAX_FAILURES_SENT}).fetchall()
    return [{"kind": "exception", "ts": ts, "key": str(task_id), "task_group": _text(app_name),
             "exception_text": failure_text(history, exception_type), "exception_type": exception_type or "unknown",
             "traceback_text": None, "worker": None,
             "computation_id": None, "run_id": run_id, "try_id": int(try_id)}
            for ts, task_id, try_id, app_name, exception_type, history in rows]


def failure_text(history: str | None, exception_type: str | None) -> str:
    """What a failed try says: the first line of its fail history (bounded), else its type.

    >>> failure_text("ValueError('bad 0')\\nmore", "ValueError"), failure_text(None, None)
    ("ValueError('bad 0')", 'unknown')
    """
    text = (history or "").strip().splitlines()[0].strip() if (history or "").strip() else ""
    text = text or exception_type or "unknown"
    return text if len(text) <= MAX_FAILURE_TEXT else text[:MAX_FAILURE_TEXT - 1] + "…"


def parsl_run_ids(con) -> set[str]:
    """The runs of the store that Parsl wrote (`PARSL_SOURCES`, or a `parsl.*` logger).

    >>> parsl_run_ids(taskscope.open("run.duckdb").con)  # doctest: +SKIP
    {'4b6b...'}
    """
    rows = con.execute(
        f"""SELECT DISTINCT run_id FROM events WHERE run_id IS NOT NULL
            AND (source IN ({', '.join('?' for _ in PARSL_SOURCES)}) OR logger = 'parsl' OR starts_with(logger, 'parsl.'))""",
        list(PARSL_SOURCES)).fetchall()
    return {row[0] for row in rows}


def batch_for(message: dict, failures: list[dict] = (), kind: str = "parsl") -> dict:
    """The protocol batch carrying one `parsl.run` message and its failed tries, under its run's cluster
    (of `kind` "parsl", or "workflow" for another system's run)."""
    return {
        "protocol": PROTOCOL_VERSION, "batch_id": uuid.uuid4().hex, "sent_at": time.time(),
        # no user recorded in the run: the server takes the token's user
        "cluster": {"cluster_id": uuid.uuid5(RUN_NAMESPACE, message["run_id"]).hex, "kind": kind,
                    "name": message["run_id"], "user": message["user"],
                    "host": message["host"] or socket.gethostname()},
        "messages": [message, *failures],
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
            by_parsl = parsl_run_ids(opened.con)
        finally:
            opened.close()
    if not messages:
        raise UploadError(f"no run found in {runinfo}")
    sent = []
    runs = [message for message in messages if message["kind"] == "parsl.run"]
    for message in runs:
        failed = [m for m in messages if m["kind"] == "exception" and m["run_id"] == message["run_id"]]
        batch = batch_for(message, failed, "parsl" if message["run_id"] in by_parsl else "workflow")
        call("POST", INGEST_PATH, json=batch, server=server, token=token, verify=verify, timeout_s=60.0)
        sent.append({"run_id": message["run_id"], "cluster_id": batch["cluster"]["cluster_id"], "kind": batch["cluster"]["kind"],
                     "tasks": message["tasks"], "tasks_failed": message["tasks_failed"], "cost": message["cost"]})
    return sent


def _apps(apps: pd.DataFrame, task_rows: pd.DataFrame) -> list[dict]:
    """Per app: tasks, failed, the mean run time (`run_s` of `task_rows`: on a worker, else from launch,
    to the end) and the mean time from submit to end (which includes the wait for a worker)."""
    mean_run = task_rows.groupby("app_name")["run_s"].mean()
    return [{"app_name": row.app_name, "tasks": int(row.tasks), "failed": int(row.failed + row.dep_fail),
             "mean_run_s": _float(mean_run.get(row.app_name)), "mean_duration_s": _float(row.mean_duration_s)}
            for row in apps.itertuples()]


def _failures(failures: pd.DataFrame) -> list[dict]:
    if failures.empty:
        return []
    per_type = failures.groupby("exception_type").agg(count=("failed_tries", "sum"), tasks=("tasks", "sum"))
    return [{"exception_type": name, "count": int(row["count"]), "tasks": int(row["tasks"])}
            for name, row in per_type.iterrows()]


def _float(value) -> float | None:
    return None if value is None or pd.isna(value) else float(value)


def _text(value) -> str | None:
    return None if value is None or pd.isna(value) else str(value)
