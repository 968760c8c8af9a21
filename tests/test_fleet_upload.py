"""`taskscope fleet upload` of a task stream that is not Parsl's: its failed tries reach the server
as exceptions also when its records carry no try id (they once did only with try ids), counted as
the run summary counts them (`taskscope.analyses.summary`: a failure record is a try of its task, a
failed task with no record fails under its traceback's exception, else `unknown`).

The truth is the plan the stream is written from, not the analysis. A real `taskscope fleet serve`
on 127.0.0.1 and a real DuckDB file, as in tests/test_fleet_server.py.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest

from taskscope.fleet import api

from test_fleet_server import FleetServer, cli, make_token

#: what each try of a task did, in try order: "ok"; an exception type (a `task.try_failed` record
#: names it); "quiet" (no record: only the task's final state says it failed); ("traceback", type)
#: (no record, but an event of the task logs the traceback `logger.exception` writes). A task whose
#: last try is not "ok" ends `failed`; "t6" never ran (`dep_fail`: no try failed).
PLAN = {
    "t1": ["ok"],
    "t2": ["ValueError", "ok"],
    "t3": [("traceback", "RuntimeError")],
    "t4": ["quiet"],
    "t5": ["KeyError", "KeyError"],
    "t6": [],
}
RUN_ID = "r-no-try-ids"


def traceback_text(exception_type: str) -> str:
    return ('Traceback (most recent call last):\n  File "step.py", line 3, in run\n    go()\n'
            f"{exception_type}: step broke")


def write_stream(path: Path, try_ids: bool) -> None:
    """`PLAN` as JSON lines of one run (a try's start carries its try id when `try_ids`; a failure never does)."""
    records, ts = [], 1_796_090_400.0
    for task_id, tries in PLAN.items():
        records.append({"task_id": task_id, "event": "task.state", "task_state": "pending", "message": "submitted"})
        for try_id, outcome in enumerate(tries):
            records.append({"task_id": task_id, "event": "task.started", "message": "started",
                            **({"try_id": try_id} if try_ids else {})})
            if isinstance(outcome, tuple):
                records.append({"task_id": task_id, "event": "task.error", "message": "error in task",
                                "exc_text": traceback_text(outcome[1])})
            elif outcome not in ("ok", "quiet"):
                records.append({"task_id": task_id, "event": "task.try_failed", "message": f"failed: {outcome}",
                                "exception_type": outcome})
        final = "dep_fail" if not tries else "exec_done" if tries[-1] == "ok" else "failed"
        records.append({"task_id": task_id, "event": "task.state", "task_state": final, "message": final})
    lines = []
    for record in records:
        ts += 0.5
        lines.append(json.dumps({"ts": ts, "run_id": RUN_ID, "app_name": "step", **record}))
    path.write_text("\n".join(lines) + "\n")


def failed_tries() -> list[tuple[str, str]]:
    """(task, exception) of every failed try of `PLAN`."""
    return [(task_id, outcome[1] if isinstance(outcome, tuple) else "unknown" if outcome == "quiet" else outcome)
            for task_id, tries in PLAN.items() for outcome in tries if outcome != "ok"]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    store = tmp_path_factory.mktemp("fleet-upload") / "fleet.duckdb"
    token = make_token(store, "team-a", "alice")
    server = FleetServer(store)
    yield server, token
    server.stop()


@pytest.mark.parametrize("try_ids", [False, True], ids=["no-try-ids", "try-ids-on-starts"])
def test_an_uploaded_stream_reports_every_failed_try(served, tmp_path, try_ids):
    server, token = served
    stream = tmp_path / "run.jsonl"
    write_stream(stream, try_ids)
    expected = failed_tries()
    failed_tasks = [task_id for task_id, tries in PLAN.items() if not tries or tries[-1] != "ok"]
    assert (len(expected), len(failed_tasks)) == (5, 4)  # the plan, counted by hand

    [uploaded] = json.loads(cli("fleet", "upload", str(stream), "--server", server.url, "--token", token,
                                "--format", "json").stdout)
    assert (uploaded["run_id"], uploaded["tasks"], uploaded["tasks_failed"]) == (RUN_ID, len(PLAN), len(failed_tasks))
    [cluster] = [c for c in api.list_clusters(since=None, server=server.url, token=token) if c["name"] == RUN_ID]
    # no Parsl component wrote it: another workflow system's run, not labelled a Parsl one
    assert uploaded["kind"] == cluster["kind"] == "workflow"
    found = api.list_exceptions(since=None, cluster_id=cluster["cluster_id"], server=server.url, token=token)
    assert cluster["exceptions"] == len(found) == len(expected)
    assert Counter((x["key"], x["exception_text"]) for x in found) == Counter(expected)
    assert {x["task_group"] for x in found} == {"step"}
    run = api.call("GET", f"/api/v1/clusters/{cluster['cluster_id']}", server=server.url, token=token)["parsl_run"]
    assert {f["exception_type"]: f["count"] for f in run["failures"]} == Counter(e for _, e in expected)
    assert run["tasks_failed"] == len(failed_tasks)
    page = server.get(f"/clusters/{cluster['cluster_id']}", token).text
    assert "<h2>Run</h2>" in page and "Parsl" not in page
    assert all(f"<td>{task_id}</td>" in page for task_id, _ in expected)
    # what the stream does not say (workflow, cores, task time: no worker times) is left out, not shown empty
    assert re.search(r'<p id="parsl-summary">6 tasks, 4 failed; wall time [0-9.]+ s\.</p>', page), page
    assert "core time not known;" in page
    # nor is its cost: unknown, not 0 (the cluster table's sum leaves it out)
    assert '<td id="cost">not known (core time not known;' in page and cluster["cost"] is None
