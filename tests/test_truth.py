"""What the analyses and the dashboard say about a run is true: capacity per host, CPU time per
task try, badput, one run status and one set of run fields, no negative wait, no internal
executor counted.

Real runs: the corpus, and a fresh Parsl run (`truth_workflow.py`) with two managers on this
one host, a task that burns a known amount of CPU and a task that fails on every try.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from conftest import CORPUS_RUNS, corpus_path, invoke, parsl_env, shared_once
from truth_workflow import BURN_CPU_S, SHORT_CPU_S

import taskscope
from taskscope.analyses.bottlenecks import bottlenecks
from taskscope.analyses.common_path import common_path
from taskscope.analyses.compare import compare
from taskscope.analyses.latency import latency
from taskscope.analyses.resources import capacity, infrastructure, per_task
from taskscope.analyses.summary import summary
from taskscope.analyses.tasks import tasks
from taskscope.web.dashboard import Dashboard
from taskscope.web.server import BackgroundServer, listen_tcp

WORKFLOW = Path(__file__).parent / "truth_workflow.py"


def run_workflow(script: Path, base: Path, *args: Path) -> None:
    """Run a real Parsl workflow script in `base`; the test fails with its output if it does."""
    done = subprocess.run([sys.executable, str(script), *map(str, args)], capture_output=True, text=True,
                          timeout=300, env=parsl_env(), cwd=base, check=False)
    if done.returncode != 0:
        pytest.fail(f"real Parsl run failed:\n{done.stdout}\n{done.stderr}")


def make_truth_run(base: Path) -> None:
    run_workflow(WORKFLOW, base, base / "runinfo")


@pytest.fixture(scope="module")
def truth_run(tmp_path_factory) -> Path:
    """The runinfo folder of a fresh `truth_workflow.py` run."""
    return shared_once(tmp_path_factory, "truth_run", make_truth_run) / "runinfo"


@pytest.fixture(scope="module")
def truth_stores(truth_run, tmp_path_factory):
    """The truth run ingested three ways: `all` (logs and monitoring.db), `logs` (the run folder
    only) and `monitoring` (monitoring.db alone)."""
    base = tmp_path_factory.mktemp("truth_stores")
    shutil.copy(truth_run / "monitoring.db", base / "monitoring.db")
    inputs = {"all": truth_run, "logs": truth_run / "000", "monitoring": base / "monitoring.db"}
    stores = {}
    for name, path in inputs.items():
        stores[name] = taskscope.open(":memory:")
        stores[name].ingest(path)
    yield stores
    for store in stores.values():
        store.close()


def only_run(store) -> str:
    run_ids = store.runs().run_id.tolist()
    assert len(run_ids) == 1, run_ids
    return run_ids[0]


def total_memory_bytes() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no MemTotal in /proc/meminfo")


class Served:
    """A store served by the real dashboard on a free loopback port."""

    def __init__(self, store):
        self.server = BackgroundServer(Dashboard(store), listen_tcp("127.0.0.1", 0)).start()
        self.url = f"http://127.0.0.1:{self.server.address[1]}"

    def get(self, path: str) -> bytes:
        with urllib.request.urlopen(self.url + path, timeout=60) as response:
            return response.read()

    def json(self, path: str):
        return json.loads(self.get(path))

    def __enter__(self) -> Served:  # noqa: PYI034 (a test helper, never subclassed)
        return self

    def __exit__(self, *exc) -> None:
        self.server.stop()


# 1. capacity

def test_a_hosts_cores_and_memory_count_once_however_many_managers_it_runs(truth_stores):
    for name in ("all", "logs", "monitoring"):
        store = truth_stores[name]
        held = capacity(store.con, only_run(store))
        assert held["managers"] == 2 and held["hosts"] == 1, (name, held)
        assert held["cpu_cores"] == os.cpu_count(), (name, held)
        assert held["memory_bytes"] == total_memory_bytes(), (name, held)
    store = truth_stores["monitoring"]
    run_id = only_run(store)
    with Served(store) as served:
        data = served.json(f"/api/runs/{run_id}/resources")
        page = served.get(f"/runs/{run_id}/resources").decode()
    assert data["capacity"]["cpu_cores"] == os.cpu_count()
    assert data["capacity"]["memory_bytes"] == total_memory_bytes()
    assert [(h["managers"], h["cpu_cores"]) for h in data["hosts"]] == [(2, os.cpu_count())]
    assert f'id="total-cpus">{os.cpu_count()}<' in page and 'id="hosts"' in page


# 2. CPU time per task try

def sampled_cpu_from_monitoring_db(path: Path) -> dict[tuple[str, int], float]:
    """Per (task, try) with two samples or more: user + system CPU of its last resource sample
    minus its first, read with sqlite3 from Parsl's own monitoring.db."""
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT task_id, try_id, psutil_process_time_user + psutil_process_time_system "
                          "FROM resource ORDER BY task_id, try_id, timestamp").fetchall()
    samples: dict[tuple[str, int], list[float]] = {}
    for task_id, try_id, cpu in rows:
        samples.setdefault((str(task_id), int(try_id)), []).append(cpu)
    return {key: cpus[-1] - cpus[0] for key, cpus in samples.items() if len(cpus) >= 2}


def test_cpu_time_per_try_is_the_difference_of_its_first_and_last_sample(truth_run, truth_stores):
    store = truth_stores["all"]
    run_id = only_run(store)
    tries = per_task(store.con, run_id).merge(tasks(store.con, run_id)[["task_id", "app_name"]], on="task_id")
    expected = sampled_cpu_from_monitoring_db(truth_run / "monitoring.db")
    sampled = tries[tries.samples >= 2]
    assert {(t, int(r)) for t, r in zip(sampled.task_id, sampled.try_id)} == set(expected)
    for row in sampled.itertuples():
        assert row.cpu_s == pytest.approx(expected[(row.task_id, int(row.try_id))], abs=1e-9), row
    burns = tries[tries.app_name == "burn"].assign(order=lambda t: t.task_id.astype(int)).sort_values("order")
    # the workflow submits the four 20 ms burns first, then the 0.5 s one; each sleeps 1 s first,
    # so its first sample comes before it burns: the samples hold the whole burn (and, on a loaded
    # machine, some of the worker's own CPU besides)
    short, long = burns.iloc[:4], burns.iloc[4]
    assert long.samples >= 2 and long.cpu_s >= 0.8 * BURN_CPU_S, long.to_dict()
    assert (short.samples >= 2).all() and (short.cpu_s >= 0).all(), short[["task_id", "samples", "cpu_s"]]
    assert short.cpu_s.max() < long.cpu_s and SHORT_CPU_S < 0.1 * BURN_CPU_S
    few = tries[tries.samples < 2]
    assert few.cpu_s.isna().all(), few  # unknown, not a running total


# 3. badput

def failed_tries_worker_time(store, run_id: str) -> float:
    """The failed tries' time on a worker, straight from the events: received to finished."""
    return store.con.execute("""
        WITH failed AS (SELECT DISTINCT task_id, try_id FROM events
                        WHERE run_id = $run AND event = 'task.try_failed')
        SELECT sum(finished - received) FROM (
            SELECT task_id, try_id, min(ts) FILTER (WHERE event = 'htex.worker.received') AS received,
                   max(ts) FILTER (WHERE event = 'htex.worker.finished') AS finished
            FROM events WHERE run_id = $run GROUP BY task_id, try_id) JOIN failed USING (task_id, try_id)
    """, {"run": run_id}).fetchall()[0][0]


def test_badput_is_the_time_failed_tries_ran(truth_stores):
    store = truth_stores["all"]
    run_id = only_run(store)
    row = summary(store, run_id).runs.iloc[0]
    assert row.failed_tries == 2 and row.badput_measured_by == "worker 2"
    assert row.badput_s == pytest.approx(failed_tries_worker_time(store, run_id), abs=1e-6)
    assert 0 < row.badput_s <= row.makespan_s
    alone = summary(truth_stores["monitoring"], only_run(truth_stores["monitoring"])).runs.iloc[0]
    assert alone.badput_measured_by == "monitoring 2"
    assert 0 < alone.badput_s <= alone.makespan_s
    # each failed try sleeps 0.2 s before it raises: what ran, not what waited for a worker
    assert alone.badput_s == pytest.approx(row.badput_s, abs=0.2)


@pytest.mark.parametrize("name", CORPUS_RUNS)
def test_badput_is_within_the_makespan_on_every_corpus_run(name, corpus_store_file):
    with taskscope.open(corpus_store_file(name), read_only=True) as store:
        runs = summary(store).runs
    assert not runs.empty
    assert (runs.badput_s <= runs.makespan_s).all(), runs[["badput_s", "makespan_s"]]
    assert runs.badput_measured_by.str.startswith("worker").all(), runs.badput_measured_by


# 4. one run status, one set of fields

def run_rows_agree(store_path: Path) -> list[dict]:
    """`taskscope runs --format json` and `/api/runs` on one store: the rows, checked equal."""
    done = invoke("runs", "--store", store_path, "--format", "json")
    assert done.returncode == 0, done.stderr
    cli_rows = json.loads(done.stdout)
    with taskscope.open(str(store_path), read_only=True) as store, Served(store) as served:
        api_rows = served.json("/api/runs")["runs"]
    assert cli_rows == api_rows
    return cli_rows


@pytest.mark.parametrize("name", CORPUS_RUNS)
def test_cli_and_api_give_the_same_run_rows(name, corpus_store_file, tmp_path):
    rows = run_rows_agree(corpus_store_file(name))
    monitoring_only = tmp_path / "monitoring.duckdb"
    with taskscope.open(str(monitoring_only)) as store:
        store.ingest(corpus_path(name) / "monitoring.db")
    rows_of_db = run_rows_agree(monitoring_only)
    for row in rows + rows_of_db:
        assert set(row) >= {"status", "start_ts", "end_ts", "duration_s", "run_dir"}
        assert "start" not in row and "end" not in row
        assert row["status"] == ("failed" if row["tasks_failed"] else "completed"), row
        assert row["duration_s"] == pytest.approx(row["end_ts"] - row["start_ts"], abs=1e-6)
        assert row["run_dir"], row  # from the folder, else from monitoring.db's workflow row


# 6. Parsl's internal executor

def test_parsls_internal_executor_is_not_a_user_executor(truth_stores):
    for store in truth_stores.values():
        found = infrastructure(store.con, only_run(store))
        assert found["executors"] == 1 and found["executor_labels"] == "htex_local", found


def test_corpus_runs_count_only_configured_executors(corpus_store_file):
    for name in CORPUS_RUNS:
        with taskscope.open(corpus_store_file(name), read_only=True) as store:
            for run_id in store.runs().run_id:
                found = infrastructure(store.con, run_id)
                labels = found["executor_labels"].split(", ")
                assert "_parsl_internal" not in labels and found["executors"] == len(labels), found


# 5. no negative waits

def assert_no_negative_time(store, run_id: str) -> None:
    """common-path, bottlenecks and compare of one run: every wait and step time at least zero,
    each variant's steps in time order, and what the CLI prints in fixed notation."""
    path = common_path(store, run=run_id)
    times = [c for c in path.steps.columns if c.startswith(("since_", "until_next", "stage_wait"))]
    assert (path.steps[times].fillna(0) >= 0).all().all(), path.steps[times].min()
    for _, steps in path.steps.groupby("variant"):
        assert steps.sort_values("position").since_first_mean.is_monotonic_increasing, steps.label.tolist()
    found = bottlenecks(store, run=run_id)
    waits = [c for c in found.steps.columns if c.startswith("wait_")]
    assert (found.steps[waits].fillna(0) >= 0).all().all() and (found.stages.wait_total_s >= 0).all()
    compared = compare(store, run_id, run_id)
    latency = compared[compared.unit == "s"]
    assert (latency[["mean_a", "median_a", "p25_a", "p75_a"]].fillna(0) >= 0).all().all()
    assert (compared.direction == "same").all(), compared[["step", "direction"]]


def assert_cli_prints_fixed_notation(store_path: Path, run_id: str) -> None:
    for command in ("common-path", "bottlenecks"):
        done = invoke(command, "--run", run_id, "--store", store_path)
        assert done.returncode == 0, done.stderr
        assert "-0.000" not in done.stdout and not re.search(r"\b\d+(\.\d+)?e[-+]\d+\b", done.stdout), done.stdout
    done = invoke("compare", run_id, run_id, "--store", store_path)
    assert done.returncode == 0 and not re.search(r"\b\d+(\.\d+)?e[-+]\d+\b", done.stdout), done.stdout


@pytest.mark.parametrize("name", CORPUS_RUNS)
def test_no_negative_wait_on_corpus_runs(name, corpus_store_file):
    path = corpus_store_file(name)
    with taskscope.open(str(path), read_only=True) as store:
        run_id = only_run(store)
        assert_no_negative_time(store, run_id)
    assert_cli_prints_fixed_notation(path, run_id)


def test_no_negative_wait_on_a_parsl_perf_run(perf_run, tmp_path):
    path = tmp_path / "perf.duckdb"
    with taskscope.open(str(path)) as store:
        store.ingest(perf_run)
        run_id = only_run(store)
        assert_no_negative_time(store, run_id)
    assert_cli_prints_fixed_notation(path, run_id)


def test_steps_logged_in_either_order_by_two_processes_compare_as_one_stage(tmp_path):
    """Every pair of corpus runs of one store: the interchange's "Sent tasks" and the manager's
    "Got executor tasks" are one stage, so compare never gives one a huge rise and the other a
    100 % fall; no percentage of a time the clock cannot resolve."""
    path = tmp_path / "corpus.duckdb"
    with taskscope.open(str(path)) as store:
        for name in CORPUS_RUNS:
            store.ingest(corpus_path(name))
        run_ids = store.runs().run_id.tolist()
        for a in run_ids:
            for b in run_ids:
                compared = compare(store, a, b)
                stages = compared[compared.unit == "s"]
                sent = stages[stages.step.str.contains("Sent tasks")]
                assert (sent.step.str.contains("Got executor tasks") | sent.direction.str.startswith("only")).all()
                assert stages[stages.median_a < 0.001].change_pct.isna().all(), stages


def test_task_page_shows_each_trys_cpu_time_since_its_first_sample(truth_stores):
    store = truth_stores["all"]
    run_id = only_run(store)
    tries = per_task(store.con, run_id)
    failing = tries[tries.task_id == tries.task_id.iloc[-1]]  # the task that fails twice, submitted last
    assert len(failing) == 2
    with Served(store) as served:
        samples = served.json(f"/api/runs/{run_id}/tasks/{failing.task_id.iloc[0]}")["resources"]
        page = served.get(f"/runs/{run_id}/tasks/{failing.task_id.iloc[0]}").decode()
    for try_id, expected in zip(failing.try_id, failing.cpu_s):
        of_try = [s["cpu_since_first_s"] for s in samples if s["try_id"] == try_id]
        assert of_try[0] == 0 and of_try[-1] == pytest.approx(expected, abs=1e-9)
    assert "try 0: CPU time since first sample" in page and "try 1: CPU time since first sample" in page


# 7. the exception of a task is its last try's; failure rows sum true

#: a real run whose tries fail in different ways: `mixed` fails with RuntimeError, then KeyError,
#: then ValueError (retries=2, so it ends failed); `flaky` fails once, then succeeds
MIXED_FAILURES_WORKFLOW = '''
import os, sys
import parsl
from parsl.config import Config
from parsl.executors import HighThroughputExecutor
from parsl.monitoring.monitoring import MonitoringHub
from parsl.providers import LocalProvider


@parsl.python_app
def mixed(marker):
    import os
    tries = os.path.getsize(marker) if os.path.exists(marker) else 0
    with open(marker, "a") as out:
        out.write("x")
    raise [RuntimeError, KeyError, ValueError][min(tries, 2)]("try failed")


@parsl.python_app
def flaky(marker):
    import os
    if not os.path.exists(marker):
        open(marker, "w").close()
        raise RuntimeError("first try fails")
    return 1


if __name__ == "__main__":
    runinfo, markers = sys.argv[1], sys.argv[2]
    executor = HighThroughputExecutor(label="htex_local", max_workers_per_node=2, encrypted=False,
                                      provider=LocalProvider(init_blocks=1, max_blocks=1))
    config = Config(executors=[executor], run_dir=runinfo, retries=2, strategy="none",
                    monitoring=MonitoringHub(resource_monitoring_interval=0))
    with parsl.load(config) as dfk:
        futures = [mixed(os.path.join(markers, f"mixed{i}")) for i in range(2)]
        futures += [flaky(os.path.join(markers, f"flaky{i}")) for i in range(2)]
        for future in futures:
            try:
                future.result()
            except Exception:
                pass
        print(dfk.run_dir)
    parsl.clear()
'''


def make_failing_run(base: Path) -> None:
    (base / "markers").mkdir()
    script = base / "mixed_failures.py"
    script.write_text(MIXED_FAILURES_WORKFLOW)
    run_workflow(script, base, base / "runinfo", base / "markers")


@pytest.fixture(scope="module")
def failing_run(tmp_path_factory) -> Path:
    """The runinfo folder of a fresh run of MIXED_FAILURES_WORKFLOW."""
    return shared_once(tmp_path_factory, "mixed_failures_run", make_failing_run) / "runinfo"


@pytest.fixture(scope="module")
def failing_stores(failing_run, tmp_path_factory):
    """The failing run ingested as `truth_stores` ingests the truth run: all, logs, monitoring."""
    base = tmp_path_factory.mktemp("failing_stores")
    shutil.copy(failing_run / "monitoring.db", base / "monitoring.db")
    inputs = {"all": failing_run, "logs": failing_run / "000", "monitoring": base / "monitoring.db"}
    stores = {name: taskscope.open(":memory:") for name in inputs}
    for name, path in inputs.items():
        stores[name].ingest(path)
    yield stores
    for store in stores.values():
        store.close()


def exceptions_per_try(monitoring_db: Path) -> dict[str, list[str | None]]:
    """Per task, the exception type of each try in try order (None: the try did not fail), read
    with sqlite3 from monitoring.db's try table (`task_fail_history` is `Type('message')`)."""
    with sqlite3.connect(monitoring_db) as db:
        rows = db.execute("SELECT task_id, try_id, task_fail_history FROM try ORDER BY task_id, try_id").fetchall()
    tries: dict[str, list[str | None]] = {}
    for task_id, _, history in rows:
        tries.setdefault(str(task_id), []).append(history.split("(")[0] if history else None)
    return tries


def test_a_tasks_exception_is_its_last_trys_and_earlier_ones_are_listed(failing_run, failing_stores):
    expected = exceptions_per_try(failing_run / "monitoring.db")
    assert sorted(map(tuple, expected.values()), key=len) == [("RuntimeError", None)] * 2 + [("RuntimeError", "KeyError", "ValueError")] * 2
    for name, store in failing_stores.items():
        rows = tasks(store.con, only_run(store)).set_index("task_id")
        for task_id, per_try in expected.items():
            row = rows.loc[task_id]
            assert row.tries == len(per_try), (name, task_id)
            assert (row.exception_type if isinstance(row.exception_type, str) else None) == per_try[-1], (name, row)
            earlier = ", ".join(e for e in per_try[:-1] if e) or None
            assert (row.earlier_exceptions if isinstance(row.earlier_exceptions, str) else None) == earlier, (name, row)
            assert row.final_state == ("failed" if per_try[-1] else "exec_done"), (name, row)


def test_failure_rows_count_failed_tries_and_each_failed_task_once(failing_run, failing_stores):
    expected = exceptions_per_try(failing_run / "monitoring.db")
    failed_tries: dict[str, int] = {}
    for per_try in expected.values():
        for exception in filter(None, per_try):
            failed_tries[exception] = failed_tries.get(exception, 0) + 1
    failed_by = {per_try[-1] for per_try in expected.values() if per_try[-1]}
    assert failed_tries == {"RuntimeError": 4, "KeyError": 2, "ValueError": 2} and failed_by == {"ValueError"}
    for name, store in failing_stores.items():
        result = summary(store, only_run(store))
        rows = result.failures.groupby("exception_type")[["failed_tries", "tasks_failed"]].sum()
        assert rows.failed_tries.to_dict() == failed_tries, (name, result.failures)
        assert rows.tasks_failed.to_dict() == {"RuntimeError": 0, "KeyError": 0, "ValueError": 2}, (name, result.failures)
        assert rows.tasks_failed.sum() == result.runs.failed.iloc[0] == 2
        assert rows.failed_tries.sum() == result.runs.failed_tries.iloc[0] == 8


# 8. the wait after a launch is the executor's

def dominant_tasks(store, run_id: str) -> set[str]:
    """The tasks of the run's most common set of steps (source and template, with repeats; the
    tasks' own events and those that name several tasks), computed here from the events."""
    rows = store.con.execute("""
        WITH steps AS (
            SELECT task_id, source, coalesce(template, event, '') AS step FROM events
            WHERE run_id = $run AND task_id IS NOT NULL AND source <> 'monitoring'
                  AND coalesce(event, '') NOT IN ('task.stdout', 'task.stderr', 'task.resource')
            UNION ALL
            SELECT l.task_id, e.source, coalesce(e.template, e.event, '') FROM event_task_links l
            JOIN events e ON e.file_id = l.file_id AND e.line = l.line
            WHERE l.run_id = $run AND e.task_id IS NULL AND e.source <> 'monitoring'
        )
        SELECT task_id, list(source || ': ' || step ORDER BY source, step) AS signature FROM steps GROUP BY task_id
    """, {"run": run_id}).df()
    signatures = rows.signature.map(tuple)
    return set(rows.task_id[signatures == signatures.value_counts().index[0]])


def assert_launch_to_worker_is_the_executors(store, run_id: str) -> None:
    """The DFK's stage is pending to launch; from the launch to the worker's receipt the wait is
    the executor's (and the interchange's and manager's where they log a step between): checked
    against `latency` of those two events over the same tasks."""
    found = bottlenecks(store, run=run_id)
    members = dominant_tasks(store, run_id)
    steps = found.steps.sort_values("position")
    assert set(steps.tasks) == {len(members)}, (len(members), steps[["label", "tasks"]])
    launched = steps[steps.event == "task.launched"].iloc[0]
    received = steps[steps.event == "htex.worker.received"].iloc[0]
    assert launched.stage == "executor", launched
    handed_on = steps[(steps.position >= launched.position) & (steps.position < received.position)]
    assert set(handed_on.stage) <= {"executor", "interchange", "manager"}, handed_on[["stage", "label"]]
    to_worker = latency(store, "task.launched", "htex.worker.received", run_id)
    to_worker = to_worker[to_worker.task_id.isin(members)].latency_s.sum()
    # within the clock's resolution per task: a step another process logged a little before the
    # step ahead of it counts as reached with it (no negative wait)
    assert handed_on.wait_total_s.sum() == pytest.approx(to_worker, abs=1e-3 * len(members)), handed_on
    # the DFK holds a task from its first step to its launch: pending to launched, plus the
    # microseconds from submission to pending
    before_launch = steps[steps.position < launched.position]
    assert set(before_launch.stage) == {"DFK"}, before_launch[["stage", "label"]]
    pending = latency(store, "state:pending", "task.launched", run_id)
    pending = pending[pending.task_id.isin(members)].latency_s.sum()
    dfk = found.stages.set_index("stage").wait_total_s
    assert 0 <= dfk["DFK"] - before_launch.wait_total_s.sum() < 0.01 * len(members)  # the steps after the worker's
    assert 0 <= before_launch.wait_total_s.sum() - pending < 0.01 * len(members), (before_launch.wait_total_s.sum(), pending)


@pytest.mark.parametrize("name", CORPUS_RUNS)
def test_bottlenecks_file_the_wait_after_launch_under_the_executor_on_corpus_runs(name, corpus_store_file):
    with taskscope.open(corpus_store_file(name), read_only=True) as store:
        assert_launch_to_worker_is_the_executors(store, only_run(store))


def test_bottlenecks_file_the_wait_after_launch_under_the_executor_at_default_levels(truth_stores):
    """The truth run logs at Parsl's default levels: the interchange logs no line per task, so the
    whole wait from launch to the worker is one step, the executor's; the queues say the same."""
    store = truth_stores["logs"]
    run_id = only_run(store)
    assert_launch_to_worker_is_the_executors(store, run_id)
    found = bottlenecks(store, run=run_id)
    launched = found.steps[found.steps.event == "task.launched"].iloc[0]
    steps = found.steps.sort_values("position").reset_index(drop=True)
    assert steps.event[steps.index[steps.event == "task.launched"][0] + 1] == "htex.worker.received"
    assert launched.wait_total_s > found.stages.set_index("stage").wait_total_s["DFK"]
