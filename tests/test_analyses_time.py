"""States over time, between, series, latency and summary, on real runs (the corpus and fresh
Parsl runs), each checked against an independent derivation: monitoring.db against the logs,
tasks() timestamps, pandas over raw events, the SQLite file itself, the log files themselves."""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import taskscope
from conftest import CORPUS_RUNS, corpus_path, invoke, make_real_run
from taskscope.analyses.between import STANDARD_QUEUES, WHY_MISSING, between, standard_queues
from taskscope.analyses.latency import latency, latency_histogram, latency_stats
from taskscope.analyses.selectors import SelectorError, parse_selector
from taskscope.analyses.series import FieldError, series
from taskscope.analyses.states import resample, states, states_from_monitoring, states_wide
from taskscope.analyses.summary import summary
from taskscope.analyses.runs import FINAL_STATES, WORKER_STATES

#: tolerance between a log line's time and monitoring's separate clock read of the same change
CLOCK_TOLERANCE_S = 1.0
#: transitions this close together on different threads may be recorded in either order
CONCURRENT_S = 0.005


@pytest.fixture(scope="module", params=CORPUS_RUNS)
def corpus_store(request, tmp_path_factory):
    """A store file per corpus run: (store path, the run folder)."""
    path = corpus_path(request.param)
    store_file = tmp_path_factory.mktemp("time_store") / "store.duckdb"
    with taskscope.open(store_file) as opened:
        opened.ingest(path)
    return store_file, path


@pytest.fixture(scope="module")
def text_store(text_run):
    opened = taskscope.open(":memory:")
    opened.ingest(text_run)
    yield opened
    opened.close()


@pytest.fixture(scope="module")
def json_store(json_two_htex_run):
    opened = taskscope.open(":memory:")
    opened.ingest(json_two_htex_run)
    yield opened
    opened.close()


def opened(store_file: Path):
    return taskscope.open(store_file, read_only=True)


# ---------------------------------------------------------------------------------------------
# states: logs against monitoring.db


def transition_keys(curve: pd.DataFrame) -> pd.DataFrame:
    """The transitions of a `states` curve: step, ts, and a key (task, state entered, nth time)."""
    entered = curve[curve.change == 1].sort_values("step").reset_index(drop=True)
    entered["nth"] = entered.groupby(["task_id", "state"]).cumcount()
    entered["key"] = list(zip(entered.task_id, entered.state, entered.nth))
    return entered[["step", "ts", "key"]]


def assert_same_curve(from_logs: pd.DataFrame, from_monitoring: pd.DataFrame) -> int:
    """The two curves agree at every transition; returns how many steps needed the allowance for
    concurrent transitions recorded in another order (see below)."""
    logs_wide, monitoring_wide = states_wide(from_logs), states_wide(from_monitoring)
    assert set(logs_wide.columns) == set(monitoring_wide.columns), "the same states are entered"
    states_seen = [c for c in logs_wide.columns if c not in ("run_id", "step", "ts")]
    assert len(logs_wide) == len(monitoring_wide), "the same number of transitions"
    logs_keys, monitoring_keys = transition_keys(from_logs), transition_keys(from_monitoring)
    assert sorted(logs_keys.key) == sorted(monitoring_keys.key), "the same transitions, task by task"

    # each transition is seen at nearly the same time by both clocks
    times = logs_keys.merge(monitoring_keys, on="key", suffixes=("_logs", "_monitoring"))
    assert (times.ts_monitoring - times.ts_logs).abs().max() < CLOCK_TOLERANCE_S

    # the same per-state counts after every transition. Two transitions made by different threads
    # close together may be logged in one order and reach monitoring in the other (the DFK logs
    # under its state lock, monitoring's clock read is outside it, and on a loaded machine a thread
    # can be paused between the two); at such a step the counts may differ, but only by
    # transitions whose log time is within that step's of the larger of their two clock reads'
    # own gap (log to monitoring), plus CONCURRENT_S.
    log_time = dict(zip(logs_keys.key, logs_keys.ts))
    gap = dict(zip(times.key, (times.ts_monitoring - times.ts_logs).abs()))
    logs_counts = logs_wide[states_seen].to_numpy()
    monitoring_counts = monitoring_wide[states_seen].to_numpy()
    excused = 0
    for i in range(len(logs_wide)):
        if (logs_counts[i] == monitoring_counts[i]).all():
            continue
        in_flight = set(logs_keys.key[: i + 1]) ^ set(monitoring_keys.key[: i + 1])
        assert in_flight, f"step {i + 1}: counts differ with the same transitions applied"
        step_gap = gap[logs_keys.key[i]]
        assert all(abs(log_time[key] - logs_wide.ts[i]) < max(step_gap, gap[key]) + CONCURRENT_S
                   for key in in_flight), (
            f"step {i + 1}: logs {dict(zip(states_seen, logs_counts[i]))} != monitoring "
            f"{dict(zip(states_seen, monitoring_counts[i]))}"
        )
        excused += 1
    return excused


def test_states_from_logs_equal_monitoring_corpus(corpus_store):
    store_file, _ = corpus_store
    with opened(store_file) as store:
        from_logs, from_monitoring = states(store), states_from_monitoring(store)
    assert not from_logs.empty
    assert assert_same_curve(from_logs, from_monitoring) == 0, "the corpus runs need no allowance for concurrency"


def test_states_from_logs_equal_monitoring_fresh_runs(text_store, json_store):
    for store in (text_store, json_store):
        from_logs, from_monitoring = states(store), states_from_monitoring(store)
        assert {"pending", "launched", "exec_done", "fail_retryable", "failed"} <= set(from_logs.state)
        assert_same_curve(from_logs, from_monitoring)


def test_states_of_a_stream_whose_records_carry_their_task_state(tmp_path):
    """A program's JSON lines with `task_state` on its records (named by their messages, with no
    DFK state line): the curve follows each record's state, `running` included (it was empty)."""
    records = [(0.0, "a", "pending"), (1.0, "b", "pending"), (2.0, "a", "running"), (3.0, "b", "running"),
               (4.0, "a", "exec_done"), (5.0, "a", "exec_done"), (6.0, "b", "failed")]
    path = tmp_path / "stream.jsonl"
    path.write_text("".join(json.dumps({"ts": 1_796_090_400 + at, "run_id": "r1", "task_id": task, "task_state": state,
                                        "message": f"task {task} is {state}"}) + "\n" for at, task, state in records))
    with taskscope.open(":memory:") as store:
        store.ingest(path)
        wide = states_wide(states(store, run="r1"))
    counts = wide.drop(columns=["run_id", "step"]).assign(ts=lambda f: f.ts - 1_796_090_400)
    # by hand: each step is a change of one task's state (the repeated exec_done is none)
    assert counts.to_dict("records") == [
        {"ts": 0.0, "pending": 1, "running": 0, "exec_done": 0, "failed": 0},
        {"ts": 1.0, "pending": 2, "running": 0, "exec_done": 0, "failed": 0},
        {"ts": 2.0, "pending": 1, "running": 1, "exec_done": 0, "failed": 0},
        {"ts": 3.0, "pending": 0, "running": 2, "exec_done": 0, "failed": 0},
        {"ts": 4.0, "pending": 0, "running": 1, "exec_done": 1, "failed": 0},
        {"ts": 6.0, "pending": 0, "running": 0, "exec_done": 1, "failed": 1},
    ]


def test_states_curve_is_a_consistent_step_function(text_store):
    curve = states(text_store)
    tasks = text_store.tasks()
    assert (curve.tasks >= 0).all()
    assert curve.ts.is_monotonic_increasing
    # every task is in exactly one state after every transition
    wide = states_wide(curve)
    state_columns = [c for c in wide.columns if c not in ("run_id", "step", "ts")]
    started = curve[curve.change == 1].groupby("task_id").step.min().sort_values()
    known = np.searchsorted(started.to_numpy(), wide.step.to_numpy(), side="right")
    assert (wide[state_columns].sum(axis=1).to_numpy() == known).all()
    # at the end, the counts are the tasks' final states
    final = wide.iloc[-1]
    expected = tasks.final_state.value_counts()
    assert {s: final[s] for s in state_columns if final[s]} == expected.to_dict()
    # resampling keeps the end state and never invents counts
    sampled = resample(curve, points=25)
    assert len(sampled) == 25
    assert sampled.iloc[-1][state_columns].tolist() == final[state_columns].tolist()
    assert (sampled[state_columns].max() <= wide[state_columns].max()).all()


def test_states_of_pre_2026_logs_infer_the_unlogged_changes():
    """Parsl 2025.1.13 logs neither `launched` nor retries as state changes; the curve has them."""
    with taskscope.open(":memory:") as store:
        store.ingest(corpus_path("parsl-2025-textlog"))
        logged = store.sql("SELECT DISTINCT task_state FROM events WHERE event = 'task.state' AND source = 'parsl'")
        assert "launched" not in set(logged.task_state)
        curve = states(store)
        assert {"launched", "fail_retryable", "failed"} <= set(curve.state)


# ---------------------------------------------------------------------------------------------
# between


def test_between_standard_queues_never_negative_and_drain(corpus_store, text_store):
    with opened(corpus_store[0]) as store:
        corpus_curves = standard_queues(store)
    for curves in (corpus_curves, standard_queues(text_store)):
        assert {"waiting in DFK", "running on worker"} <= set(curves.queue)
        assert (curves["count"] >= 0).all()
        for _, curve in curves.groupby(["run_id", "queue"]):
            assert curve.ts.is_monotonic_increasing
            assert curve["count"].iloc[-1] == 0, "a completed run leaves nothing in any queue"
            assert curve["count"].max() > 0


@pytest.fixture(scope="module")
def dep_fail_store(tmp_path_factory):
    """A fresh real run in which one task is never launched: its dependency failed."""
    runinfo = tmp_path_factory.mktemp("dep_fail_run") / "runinfo"
    make_real_run(runinfo, n_inputs=4, dependent_of_failure=True)
    path = tmp_path_factory.mktemp("dep_fail_store") / "s.duckdb"
    with taskscope.open(str(path)) as store:
        store.ingest(runinfo)
    return path


def test_a_task_that_never_launches_leaves_the_dfk_queue(dep_fail_store):
    with opened(dep_fail_store) as store:
        states = store.tasks().final_state.value_counts().to_dict()
        curves = standard_queues(store)
    assert states.get("dep_fail") == 1
    dfk = curves[curves.queue == "waiting in DFK"]
    assert dfk["count"].iloc[-1] == 0 and (dfk["count"] >= 0).all()


def test_between_interchange_queue_uses_multi_task_messages():
    """`Sent tasks: [1, 2] to manager` leaves two tasks at once (event_task_links)."""
    with taskscope.open(":memory:") as store:
        store.ingest(corpus_path("parsl-htex-jsonlog"))
        curve = between(store, "htex.interchange.queued", "htex.interchange.sent")
        multi = store.sql("""SELECT e.ts, count(*) AS tasks FROM events e JOIN event_task_links l USING (file_id, line)
                             WHERE e.event = 'htex.interchange.sent' GROUP BY e.ts""")
    assert (curve["count"] >= 0).all() and curve["count"].iloc[-1] == 0
    assert (multi.tasks > 1).any()
    drops = curve.assign(change=curve["count"].diff())
    at_multi = drops[drops.ts.isin(multi.ts)]
    assert (at_multi.change <= -2).any()


def test_between_equals_a_count_from_task_timestamps(text_store, json_store):
    """Tasks between their first pending and exec_done, counted at quiet instants from each
    task's own first `pending` and `exec_done` events, read straight from `events`. (Not from
    `tasks().submit_ts`: Parsl logs "Task N submitted" before "initializing state to pending",
    and under load the two are milliseconds apart.)"""
    for store in (text_store, json_store):
        curve = between(store, "state:pending", "state:exec_done")
        tasks = store.sql("""
            SELECT run_id, task_id, min(ts) FILTER (WHERE task_state = 'pending') AS entered_ts,
                   min(ts) FILTER (WHERE task_state = 'exec_done') AS left_ts
            FROM events WHERE event = 'task.state' AND task_id IS NOT NULL GROUP BY run_id, task_id""")
        assert (tasks.left_ts.dropna() >= tasks.entered_ts[tasks.left_ts.notna()]).all()  # no exec_done before pending
        boundaries = np.sort(np.concatenate([curve.ts, tasks.entered_ts.dropna(), tasks.left_ts.dropna()]))
        gaps = np.diff(boundaries)
        # quiet instants: the middles of the ten longest gaps between boundaries (a fast, quiet
        # machine leaves few long ones), each long enough that no clock rounding can blur it
        longest = np.argsort(gaps)[-10:]
        instants = (boundaries[:-1] + gaps / 2)[longest[gaps[longest] > 0.002]]
        assert len(instants) >= 2
        for instant in instants:
            from_curve = curve[curve.ts <= instant]["count"].iloc[-1]
            entered = tasks.entered_ts <= instant
            left = tasks.left_ts <= instant
            assert from_curve == (entered & ~left).sum(), f"at {instant}"


def test_between_per_try_on_monitoring_worker_states(text_store):
    curve = between(text_store, "state:running@monitoring", "state:running_ended@monitoring", per="try")
    tries = text_store.sql("SELECT count(DISTINCT (task_id, try_id)) AS n FROM events "
                           "WHERE source = 'monitoring' AND task_state = 'running'").n[0]
    assert (curve["count"] >= 0).all() and curve["count"].iloc[-1] == 0
    assert curve["count"].diff().fillna(curve["count"]).clip(lower=0).sum() == tries


# ---------------------------------------------------------------------------------------------
# latency


def test_latency_agrees_with_pandas_over_raw_events():
    """Launch to interchange dispatch, computed here from the raw messages: executor ids parsed out
    of `Sent tasks: [...]`, bound to tasks by the launch lines, without taskscope's relate step."""
    with taskscope.open(":memory:") as store:
        store.ingest(corpus_path("parsl-htex-jsonlog"))
        raw = store.sql("SELECT ts, event, message FROM events WHERE event IN ('task.launched', 'htex.interchange.sent')")
        found = latency(store, "task.launched", "htex.interchange.sent")
        stats = latency_stats(store, "task.launched", "htex.interchange.sent")
    launches = raw[raw.event == "task.launched"].message.str.extract(
        r"Parsl task (?P<task_id>\d+) try \d+ launched on executor \S+ with executor id (?P<executor_task_id>\d+)"
    ).astype("int64").assign(a_ts=raw[raw.event == "task.launched"].ts)
    sent = raw[raw.event == "htex.interchange.sent"]
    dispatched = pd.DataFrame(
        [(int(k), ts) for ts, message in zip(sent.ts, sent.message)
         for k in re.match(r"Sent tasks: \[([\d, ]*)\]", message).group(1).split(",")],
        columns=["executor_task_id", "b_ts"],
    )
    expected = launches.groupby("task_id").agg(a_ts=("a_ts", "min"), executor_task_id=("executor_task_id", "first"))
    pairs = expected.reset_index().merge(dispatched, on="executor_task_id")
    pairs = pairs[pairs.b_ts >= pairs.a_ts].groupby("task_id").agg(a_ts=("a_ts", "first"), b_ts=("b_ts", "min"))
    seconds = (pairs.b_ts - pairs.a_ts).sort_index()

    got = found.dropna(subset=["latency_s"]).set_index("task_id").latency_s
    got.index = got.index.astype("int64")  # task ids are text; the expected ones were parsed as numbers
    got = got.sort_index()
    assert got.index.tolist() == seconds.index.tolist()
    assert np.allclose(got.to_numpy(), seconds.to_numpy())
    row = stats.iloc[0]
    assert row["count"] == len(seconds)
    assert row["mean"] == pytest.approx(seconds.mean())
    assert row["p50"] == pytest.approx(np.percentile(seconds, 50))
    assert row["p90"] == pytest.approx(np.percentile(seconds, 90))
    assert row["p99"] == pytest.approx(np.percentile(seconds, 99))
    assert row["max"] == pytest.approx(seconds.max())
    histogram = latency_histogram(found, bins=7)
    assert histogram["count"].sum() == len(seconds) and len(histogram) == 7


def test_latency_is_to_the_microsecond_in_every_format(tmp_path):
    """Timestamps are microseconds: a latency is their difference to the microsecond (0.1, not
    the 0.09999990463256836 two epoch-seconds doubles differ by), in JSON, CSV and the table,
    checked against the differences of the timestamps as written, in decimal."""
    from decimal import Decimal

    written = {"a": ("10:00:02.450000", "10:00:02.550000"), "b": ("10:00:07.700000", "10:00:08.000000"),
               "c": ("10:00:01.000001", "10:00:01.000013")}
    path = tmp_path / "stream.jsonl"
    path.write_text("".join(
        json.dumps({"ts": f"2026-03-01T{ts}Z", "run_id": "r1", "task_id": task, "message": message}) + "\n"
        for task, pair in written.items() for ts, message in zip(pair, ("job started", "job finished"))))
    expected = {task: float(Decimal(end[6:]) - Decimal(start[6:])) for task, (start, end) in written.items()}
    store = str(tmp_path / "run.duckdb")
    assert invoke("ingest", str(path), "--store", store).returncode == 0
    args = ("latency", "job started", "job finished", "--store", store)
    document = json.loads(invoke(*args, "--format", "json").stdout)
    assert {row["task_id"]: row["latency_s"] for row in document["latencies"]} == expected
    stats = document["stats"][0]
    assert (stats["min"], stats["p50"], stats["max"]) == (min(expected.values()), 0.1, max(expected.values()))
    csv = pd.read_csv(pd.io.common.StringIO(invoke(*args, "--format", "csv").stdout), dtype={"task_id": str})
    assert dict(zip(csv.task_id, csv.latency_s)) == expected
    table = invoke(*args, env={"COLUMNS": "120"}).stdout
    header = next(line for line in table.splitlines() if line.startswith("run_id"))
    row = next(line for line in table.splitlines() if line.startswith("r1 "))
    shown = dict(zip(header.split(), row.split()))
    assert (shown["min"], shown["p50"], shown["max"]) == ("0.000012", "0.100000", "0.300000"), table


def test_a_b_logged_just_before_its_a_gives_a_negative_latency_not_a_task_without_b(tmp_path):
    """A worker may log receiving a task before the DFK logs launching it (two processes, 0.8 ms
    apart): that task reached B. Only a task with no B at all is `without_b`."""
    events = [("t1", "launched", "10:00:00.100000"), ("t1", "received", "10:00:00.105000"),
              ("t2", "received", "10:00:01.199200"), ("t2", "launched", "10:00:01.200000"),
              ("t3", "launched", "10:00:02.000000")]
    path = tmp_path / "stream.jsonl"
    path.write_text("".join(json.dumps({"ts": f"2026-03-01T{ts}Z", "run_id": "r1", "task_id": task,
                                        "message": f"task {what}"}) + "\n" for task, what, ts in events))
    with taskscope.open(":memory:") as store:
        store.ingest(path)
        found = latency(store, "task launched", "task received").set_index("task_id").latency_s
        stats = latency_stats(store, "task launched", "task received").iloc[0]
    assert found["t1"] == pytest.approx(0.005) and found["t2"] == pytest.approx(-0.0008) and pd.isna(found["t3"])
    assert (stats["count"], stats["without_b"]) == (2, 1)


def test_latency_keeps_tasks_that_never_reach_b(text_store):
    found = latency(text_store, "state:pending", "state:exec_done", per="task")
    tasks = text_store.tasks()
    never_done = set(tasks[tasks.final_state != "exec_done"].task_id)
    assert never_done and set(found[found.latency_s.isna()].task_id) == never_done
    stats = latency_stats(text_store, "state:pending", "state:exec_done", by="app_name")
    assert stats["count"].sum() + stats["without_b"].sum() == len(tasks)
    assert set(stats.app_name) == set(tasks.app_name)


# ---------------------------------------------------------------------------------------------
# summary


def test_summary_agrees_with_tasks_and_monitoring(corpus_store):
    store_file, _ = corpus_store
    with opened(store_file) as store:
        result = summary(store)
        tasks = store.tasks()
        monitoring = store.sql(f"""
            WITH app AS (SELECT task_id, any_value(app_name) AS app_name FROM events
                         WHERE source = 'monitoring' AND event = 'task.info' GROUP BY task_id),
                 last AS (SELECT task_id, arg_max(task_state, ts) AS final_state FROM events
                          WHERE source = 'monitoring' AND event = 'task.state' AND task_state NOT IN {WORKER_STATES}
                          GROUP BY task_id),
                 tries AS (SELECT task_id, count(*) AS tries,
                                  count(*) FILTER (WHERE attrs->>'task_fail_history' <> '') AS failed_tries
                           FROM events WHERE source = 'monitoring' AND event = 'try.info' GROUP BY task_id)
            SELECT app_name, final_state, tries, failed_tries FROM app JOIN last USING (task_id) JOIN tries USING (task_id)
        """)
    apps = result.apps.set_index("app_name")
    from_tasks = pd.crosstab(tasks.app_name, tasks.final_state)
    from_monitoring = pd.crosstab(monitoring.app_name, monitoring.final_state)
    for state in FINAL_STATES:
        for frame in (from_tasks, from_monitoring):
            expected = frame[state] if state in frame else pd.Series(0, index=frame.index)
            assert apps.loc[expected.index, state].tolist() == expected.tolist(), state
    assert apps.tasks.sum() == len(tasks) == len(monitoring)
    assert (apps.tries == monitoring.groupby("app_name").tries.sum().reindex(apps.index)).all()
    assert (apps.failed_tries == monitoring.groupby("app_name").failed_tries.sum().reindex(apps.index)).all()
    assert ((apps.badput_s > 0) == (apps.failed_tries > 0)).all()
    run = result.runs.iloc[0]
    assert run.tasks == len(tasks) and run.done + run.failed + run.unfinished == run.tasks
    assert run.makespan_s == pytest.approx(tasks.end_ts.max() - tasks.submit_ts.min())
    assert result.throughput.completed.sum() == run.done
    assert result.failures.failed_tries.sum() == run.failed_tries > 0


class Boom(RuntimeError):
    """An exception of this module: a traceback names it with its module (`test_analyses_time.Boom`)."""


def raised(make) -> tuple[str, str]:
    """(the traceback Python's logging writes as `exc_text` for the exception `make()` raises, its
    type as a traceback names it: the qualified name, with the module unless it is a builtin)."""
    import traceback

    try:
        make()
    except Exception as exc:  # noqa: BLE001 - any exception is the point
        kind = type(exc)
        name = kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"
        return traceback.format_exc().rstrip("\n"), name
    raise AssertionError("nothing raised")


def chained() -> None:
    try:
        {}["missing"]
    except KeyError as exc:
        raise Boom("lookup failed\n  indented second line") from exc


#: what each try of a task did, in try order: "ok"; an exception type (a `task.try_failed` record
#: names it, without a try id); "quiet" (no record: only the task's final state says it failed);
#: or ("traceback", make) (no record, but an event of the task logs the traceback of what `make`
#: raises, as `logger.exception` does)
FAILURE_PLAN = {
    "sample-A": ["ok"],
    "sample-B": ["ValueError", "ok"],
    "sample-C": ["ValueError", "KeyError", "quiet"],
    "sample-D": ["RuntimeError"],
    "sample-E": ["KeyError", "ValueError", "ok"],
    "sample-F": ["KeyError", ("traceback", chained)],
    "sample-G": [("traceback", lambda: int("multi\nline: message"))],
    "sample-H": ["quiet"],
}
#: the plan without try ids: a task's failure records are its tries, so a last try the final
#: state alone says failed can only be told apart when it is the task's only try
NO_TRY_IDS_PLAN = {task: tries for task, tries in FAILURE_PLAN.items() if task not in ("sample-C", "sample-F")}
NO_TRY_IDS_PLAN["sample-C"] = ["ValueError", "KeyError"]


def failure_stream(path: Path, plan: dict, try_ids: bool) -> dict[str, list[str | None]]:
    """Write `plan` as a JSON-lines run "r-7" (the try's start carries its try id when `try_ids`;
    failures never do; a try's failure and the next try's start share a timestamp, in line
    order) and return the truth: per task, the exception of each try (None: it did not fail)."""
    records, truth, ts = [], {}, 1_796_090_400.0

    def record(task_id: str, message: str, **fields) -> None:
        records.append({"ts": round(ts, 6), "run_id": "r-7", "task_id": task_id, "message": message, **fields})

    for task_id, tries in plan.items():
        record(task_id, "submitted", event="task.state", task_state="pending")
        truth[task_id] = []
        for try_id, outcome in enumerate(tries):
            record(task_id, "started", event="task.started", **({"try_id": try_id} if try_ids else {}))
            ts += 0.25
            last = try_id == len(tries) - 1
            if outcome == "ok":
                record(task_id, "finished", event="task.state", task_state="exec_done")
                truth[task_id].append(None)
                continue
            if isinstance(outcome, tuple):
                text, name = raised(outcome[1])
                record(task_id, "error in task", event="task.error", exc_text=text)
                truth[task_id].append(name)
            elif outcome == "quiet":
                truth[task_id].append("unknown")
            else:
                # an error traceback logged before the record: not the exception of a later try
                record(task_id, "error in task", event="task.error", exc_text=raised(lambda: Path("/nonexistent/x").stat())[0])
                record(task_id, f"failed: {outcome}", event="task.try_failed", exception_type=outcome)
                truth[task_id].append(outcome)
            if last:
                record(task_id, "gave up", event="task.state", task_state="failed")
        ts += 1.0
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return truth


@pytest.mark.parametrize("try_ids", [True, False], ids=["tries-with-ids", "no-try-ids"])
def test_failures_without_try_ids_add_up_to_the_failed_tries_and_tasks(tmp_path, try_ids):
    """Failures whose records carry no try id count as failed tries of their task, and a failed
    task whose last try no record names fails under its own traceback's exception, else
    `unknown`: the failure rows add up to the run's failed tries and failed tasks, checked against
    the plan the stream was written from (see NO_TRY_IDS_PLAN for what a stream without try ids
    cannot tell)."""
    truth = failure_stream(tmp_path / "run.jsonl", FAILURE_PLAN if try_ids else NO_TRY_IDS_PLAN, try_ids)
    with taskscope.open(":memory:") as store:
        store.ingest(tmp_path / "run.jsonl")
        result = summary(store, "r-7")
        rows = store.tasks(run="r-7").set_index("task_id")
    failed = [e for per_try in truth.values() for e in per_try if e]
    failed_tasks = [per_try[-1] for per_try in truth.values() if per_try[-1]]
    run = result.runs.iloc[0]
    assert (run.tasks, run.tries, run.failed_tries, run.failed) == (
        len(truth), sum(map(len, truth.values())), len(failed), len(failed_tasks))
    by_exception = result.failures.set_index("exception_type")
    assert by_exception.failed_tries.to_dict() == pd.Series(failed).value_counts().to_dict()
    assert by_exception.tasks_failed[by_exception.tasks_failed > 0].to_dict() == pd.Series(failed_tasks).value_counts().to_dict()
    assert by_exception.failed_tries.sum() == run.failed_tries and by_exception.tasks_failed.sum() == run.failed
    assert (result.apps.failed_tries.sum(), result.apps.tries.sum()) == (run.failed_tries, run.tries)
    for task_id, per_try in truth.items():
        row = rows.loc[task_id]
        assert row.tries == len(per_try), (task_id, row)
        assert (row.exception_type if isinstance(row.exception_type, str) else None) == per_try[-1], (task_id, row)
        earlier = ", ".join(e for e in per_try[:-1] if e) or None
        assert (row.earlier_exceptions if isinstance(row.earlier_exceptions, str) else None) == earlier, (task_id, row)


def test_summary_table_shows_all_four_parts(tmp_path):
    """Without --part, the table output shows the runs, apps, failures and throughput tables (the
    docs say four); throughput counts the tasks done, as `tasks` lists them."""
    store = str(tmp_path / "run.duckdb")
    assert invoke("ingest", str(corpus_path("parsl-htex-jsonlog")), "--store", store).returncode == 0
    shown = invoke("summary", "--store", store, env={"COLUMNS": "150"})
    assert shown.returncode == 0, shown.stderr
    titles = [line.strip() for line in shown.stdout.splitlines()
              if line.strip().split(" (")[0] in ("runs", "apps", "failures", "throughput")]
    assert [title.split(" (")[0] for title in titles] == ["runs", "apps", "failures", "throughput"], shown.stdout
    assert "throughput (tasks done per bin" in shown.stdout
    with opened(Path(store)) as opened_store:
        done = opened_store.tasks().final_state.isin(["exec_done", "memo_done"]).sum()
    parsed = json.loads(invoke("summary", "--store", store, "--part", "throughput", "--format", "json").stdout)
    assert sum(row["completed"] for row in parsed) == done > 0


# ---------------------------------------------------------------------------------------------
# series


def test_series_returns_the_monitoring_resource_values(corpus_store):
    store_file, path = corpus_store
    with opened(store_file) as store:
        values = series(store, "psutil_process_memory_resident", group_by="task_id", where="task.resource")
    with sqlite3.connect(path / "monitoring.db") as sqlite:
        rows = pd.read_sql_query("SELECT CAST(task_id AS TEXT) AS task_id, psutil_process_memory_resident AS value "
                                 "FROM resource", sqlite)
    assert sorted(values.value) == sorted(rows.value.astype(float))
    assert values.groupby("task_id").size().to_dict() == rows.groupby("task_id").size().to_dict()
    assert set(values.event) == {"task.resource"} and values.ts.is_monotonic_increasing


def test_series_of_a_queue_length_a_component_logs(tmp_path):
    """A rule names the numbers in the manager's `ready workers: N, pending tasks: M`."""
    rules = tmp_path / "queue_rules.toml"
    rules.write_text(
        '[[rule]]\nevent = "htex.manager.queue"\n'
        "pattern = '^ready workers: (?P<ready_workers>\\d+), pending tasks: (?P<pending_tasks>\\d+)'\n"
    )
    run = corpus_path("parsl-htex-jsonlog")
    with taskscope.open(":memory:") as store:
        store.ingest(run, rules_files=[rules])
        values = series(store, "pending_tasks", group_by="manager_id")
    logged = [
        int(m.group(1))
        for log in run.rglob("manager.jsonlog")
        for line in log.read_text().splitlines()
        if (m := re.match(r"ready workers: \d+, pending tasks: (\d+)$", json.loads(line).get("formatted", "")))
    ]
    assert logged and sorted(values.value.astype(int)) == sorted(logged)
    assert values.manager_id.notna().all()


def test_series_rejects_unknown_and_text_fields(text_store):
    with pytest.raises(FieldError, match="did you mean"):
        series(text_store, "psutil_process_memory_resdent")
    with pytest.raises(FieldError, match="not numeric"):
        series(text_store, "host")


def test_a_field_that_is_a_column_and_an_attrs_key_is_suggested_once(tmp_path):
    """A JSON record's own `try_id` is kept in attrs (the record as logged) and fills the column:
    a misspelt `tryid` suggests it once."""
    path = tmp_path / "stream.jsonl"
    path.write_text(json.dumps({"ts": 1_796_090_400, "run_id": "r1", "task_id": "a", "try_id": 0,
                                "message": "a started"}) + "\n")
    store = str(tmp_path / "run.duckdb")
    assert invoke("ingest", str(path), "--store", store).returncode == 0
    done = invoke("series", "tryid", "--store", store)
    assert done.returncode == 2 and done.stderr.strip().endswith("(did you mean try_id?)"), done.stderr


# ---------------------------------------------------------------------------------------------
# selectors


@pytest.mark.parametrize("junk", ["", "   ", "foo:bar", "state:", "state:lunched", "template:", "event: @parsl"])
def test_selectors_reject_junk(junk):
    with pytest.raises(SelectorError):
        parse_selector(junk)


def test_selectors_bind_values_and_name_typos(text_store):
    injected = parse_selector("task.launched' OR 1=1 --")
    assert injected.count(text_store.con) == 0
    assert parse_selector("state:launched@parsl").count(text_store.con) == text_store.sql(
        "SELECT count(*) AS n FROM events WHERE event = 'task.state' AND task_state = 'launched' AND source = 'parsl'").n[0]
    assert parse_selector("template:Task <num> will not be memoized").count(text_store.con) > 0
    with pytest.raises(SelectorError, match="did you mean task.launched"):
        between(text_store, "task.lanched", "htex.worker.finished")
    with pytest.raises(SelectorError, match="it comes from source parsl"):
        latency(text_store, "task.launched@nowhere", "htex.worker.finished")


# ---------------------------------------------------------------------------------------------
# the command line


def test_cli_json_output_and_plots(tmp_path):
    store = str(tmp_path / "run.duckdb")
    assert invoke("ingest", str(corpus_path("parsl-htex-jsonlog")), "--store", store).returncode == 0
    common = ["--store", store, "--run", "000", "--format", "json"]

    done = invoke("states", *common, "--plot", str(tmp_path / "states.png"))
    assert done.returncode == 0, done.stderr
    with taskscope.open(store, read_only=True) as opened_store:
        expected_states = states(opened_store)
    assert pd.DataFrame(json.loads(done.stdout))[["step", "state", "tasks"]].equals(
        expected_states[["step", "state", "tasks"]])
    assert (tmp_path / "states.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    done = invoke("between", "htex.interchange.queued", "htex.interchange.sent", *common,
                  "--plot", str(tmp_path / "between.html"))
    assert done.returncode == 0, done.stderr
    curve = json.loads(done.stdout)
    assert curve[-1]["count"] == 0 and min(row["count"] for row in curve) >= 0
    html = (tmp_path / "between.html").read_text()
    assert html.lower().startswith("<!doctype html>") and "Plotly.newPlot" in html

    done = invoke("queues", *common)
    parsed = json.loads(done.stdout)
    assert {row["queue"] for row in parsed["queues"]} == set(STANDARD_QUEUES) and parsed["missing"] == {}

    done = invoke("latency", "task.launched", "htex.worker.received", *common, "--by", "app_name",
                  "--plot", str(tmp_path / "latency.png"))
    assert done.returncode == 0, done.stderr
    parsed = json.loads(done.stdout)
    assert set(parsed) == {"stats", "histogram", "latencies"}
    assert sum(row["count"] for row in parsed["stats"]) == len([r for r in parsed["latencies"] if r["latency_s"] is not None])
    assert (tmp_path / "latency.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    done = invoke("series", "psutil_process_memory_resident", "--by", "task_id", *common)
    assert done.returncode == 0, done.stderr
    assert all(row["value"] > 0 for row in json.loads(done.stdout))

    done = invoke("summary", *common, "--plot", str(tmp_path / "summary.html"))
    assert done.returncode == 0, done.stderr
    parsed = json.loads(done.stdout)
    assert {app["app_name"]: app["failed"] for app in parsed["apps"]} == {"boom": 2, "inc": 0}
    assert parsed["failures"][0]["exception_type"] == "ValueError"
    assert (tmp_path / "summary.html").stat().st_size > 100_000


def test_step_plots_span_the_whole_run(corpus_store):
    from taskscope.presenters.figures import run_steps_figure

    with opened(corpus_store[0]) as store:
        curve = states(store)
    span = curve.ts.max() - curve.ts.min()
    figure = run_steps_figure(curve, "tasks", "state", "tasks per state", "tasks")
    lines = {trace["name"]: (list(trace["x"]), list(trace["y"])) for trace in figure["data"]}
    assert {"pending", "exec_done"} <= set(lines)
    for name, (x, y) in lines.items():
        assert x[0] == 0 and x[-1] == pytest.approx(span), name  # from the run's start to its end
    assert lines["exec_done"][1][0] == 0  # nothing was done before the first task finished
    assert lines["exec_done"][1][-1] == curve[curve.state == "exec_done"].tasks.iloc[-1]


def test_cli_tables_and_errors(tmp_path):
    store = str(tmp_path / "run.duckdb")
    invoke("ingest", str(corpus_path("parsl-mixed-textlog")), "--store", store)
    table = invoke("states", "--store", store, "--points", "12")
    assert table.returncode == 0, table.stderr
    assert "evenly spaced instants" in table.stderr and "exec_done" in table.stdout
    assert invoke("summary", "--store", store).returncode == 0
    csv = invoke("latency", "state:pending", "task.launched", "--store", store, "--format", "csv")
    assert pd.read_csv(pd.io.common.StringIO(csv.stdout)).latency_s.notna().all()
    for args in (["between", "task.lanched", "state:exec_done"], ["latency", "state:nope", "task.launched"],
                 ["series", "no_such_field"], ["states", "--plot", str(tmp_path / "x.svg")],
                 ["between", "a:b", "task.launched"]):
        done = invoke(*args, "--store", store)
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert done.stderr.startswith("error:") and len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_series_by_a_name_of_its_own_columns_gets_a_by_column(tmp_path):
    store = str(tmp_path / "run.duckdb")
    assert invoke("ingest", str(corpus_path("parsl-htex-jsonlog")), "--store", store).returncode == 0
    field = "psutil_process_memory_resident"
    with opened(Path(store)) as opened_store:
        plain = series(opened_store, field)
    for by in ("run_id", "event", "ts"):
        for fmt in ("table", "csv", "json"):
            done = invoke("series", field, "--by", by, "--store", store, "--format", fmt)
            assert done.returncode == 0 and "Traceback" not in done.stderr, (by, fmt, done.stderr)
        rows = pd.DataFrame(json.loads(invoke("series", field, "--by", by, "--store", store, "--format", "json").stdout))
        assert list(rows.columns) == ["run_id", "ts", f"by_{by}", "event", "value"]
        assert rows[f"by_{by}"].tolist() == plain[by].tolist() and rows.value.tolist() == plain.value.tolist()
        header = invoke("series", field, "--by", by, "--store", store, "--format", "csv").stdout.splitlines()[0]
        assert header == f"run_id,ts,by_{by},event,value"


def test_a_by_field_no_event_has_is_refused(tmp_path):
    store = str(tmp_path / "run.duckdb")
    assert invoke("ingest", str(corpus_path("parsl-htex-jsonlog")), "--store", store).returncode == 0
    for by in ("tsk_id", "value"):
        done = invoke("series", "worker_count", "--by", by, "--store", store)
        assert done.returncode == 2, (by, done.stdout)
        assert done.stderr.startswith(f"error: no event has a field '{by}' to group by"), done.stderr
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "did you mean task_id" in invoke("series", "worker_count", "--by", "tsk_id", "--store", store).stderr
    # a column, or a key some events' attrs have, is a group even where the value's events lack it
    with opened(Path(store)) as opened_store:
        for by in ("task_id", "psutil_process_memory_resident"):
            grouped = series(opened_store, "worker_count", group_by=by)
            assert grouped[by].isna().all() and len(grouped) == len(series(opened_store, "worker_count"))


def test_latency_by_run_id_is_per_run(tmp_path):
    store = str(tmp_path / "runs.duckdb")
    for name in CORPUS_RUNS:
        assert invoke("ingest", str(corpus_path(name)), "--store", store).returncode == 0
    for fmt in ("table", "json"):
        done = invoke("latency", "task.launched", "htex.worker.received", "--by", "run_id", "--store", store,
                      "--format", fmt)
        assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    stats = pd.DataFrame(json.loads(done.stdout)["stats"])
    with opened(Path(store)) as opened_store:
        per_run = latency(opened_store, "task.launched", "htex.worker.received")
    assert list(stats.columns[:2]) == ["run_id", "count"] and len(stats) == 3
    assert stats.set_index("run_id")["count"].to_dict() == per_run.dropna().groupby("run_id").size().to_dict()


def test_queues_say_which_queue_is_left_out_and_why(tmp_path):
    store = str(tmp_path / "run.duckdb")
    # the mixed run logs at Parsl's default levels: the interchange logs no line per task
    assert invoke("ingest", str(corpus_path("parsl-mixed-textlog")), "--store", store).returncode == 0
    table = invoke("queues", "--store", store)
    assert table.returncode == 0, table.stderr
    note = [line for line in table.stderr.splitlines() if line.startswith("note:")]
    assert note == ["note: 'queued in interchange' left out: no htex.interchange.queued nor htex.interchange.sent "
                    "events: " + WHY_MISSING["queued in interchange"]], table.stderr
    csv = invoke("queues", "--store", store, "--format", "csv")
    assert csv.stderr == table.stderr.split("peak:")[0] and csv.stdout.startswith("run_id,queue,ts,count")
    parsed = json.loads(invoke("queues", "--store", store, "--format", "json").stdout)
    assert set(parsed["missing"]) == {"queued in interchange"}
    assert {row["queue"] for row in parsed["queues"]} == {"waiting in DFK", "running on worker"}


def test_a_run_without_an_interchange_log_is_told_so(tmp_path):
    """A run with no interchange at all (a program's own stream, another executor) is not told
    that the interchange logged too little."""
    from taskscope.analyses.between import WHY_NO_LOG, missing_queues

    path = tmp_path / "stream.jsonl"
    path.write_text(json.dumps({"ts": 1_796_090_400, "run_id": "r1", "task_id": "a", "task_state": "pending",
                                "message": "a is pending"}) + "\n")
    with taskscope.open(":memory:") as store:
        store.ingest(path)
        why = missing_queues(store, run="r1")["queued in interchange"]
    assert why.endswith(WHY_NO_LOG["queued in interchange"][1]) and "DEBUG" not in why
