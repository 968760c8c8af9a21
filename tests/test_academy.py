"""Academy (academy-py): a real two-agent program's JSON logs, ingested with the shipped
`academy` source, rules and relations, give every action a run, a task, a timeline that spans
both agents' processes, and a common path.

The truth every test checks against is read from the raw `.jsonlog` files here, with `json`,
independently of taskscope.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import tarfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import REPO, run_cli

import taskscope
from taskscope.analyses.common_path import common_path

WORKFLOW = REPO / "tests" / "academy_workflow.py"

pytestmark = pytest.mark.slow  # a real Academy run: agents in their own processes, an HTTP exchange


@dataclass(frozen=True)
class AcademyRun:
    """A finished run of tests/academy_workflow.py and its store."""

    logs: Path  # $ACADEMY_HOME/logs, what was ingested
    pool: str  # the JSONPoolLogging uuid: the run
    result: dict  # what the program printed
    records: dict[str, list[dict]]  # events.file -> the file's records, line 1 first
    store: Path


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
def academy_run(tmp_path_factory) -> AcademyRun:
    """Run the two-agent Academy program once (agents in their own processes, an HTTP exchange
    on loopback), with Academy's JSONPoolLogging on, and ingest its logs into a store file."""
    home = tmp_path_factory.mktemp("academy-home")
    done = subprocess.run([sys.executable, str(WORKFLOW), str(_free_port())], check=False, capture_output=True,
                          text=True, timeout=300, env=dict(os.environ, ACADEMY_HOME=str(home)))
    if done.returncode != 0:
        pytest.fail(f"the Academy program failed:\n{done.stdout}\n{done.stderr}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    logs = home / "logs"
    records = {
        str(path.relative_to(logs)): [json.loads(line) for line in path.read_text().splitlines()]
        for path in sorted(logs.rglob("*.jsonlog"))
    }
    store_path = tmp_path_factory.mktemp("academy-store") / "academy.duckdb"
    with taskscope.open(store_path) as store:
        report = store.ingest(logs)
    assert report.bad_lines == 0 and report.files_read == len(records)
    return AcademyRun(logs, Path(result["pool"]).name, result, records, store_path)


# ---- the truth, from the raw records ---------------------------------------------------------

def _actions(run: AcademyRun) -> dict[str, str]:
    """tag -> action name of every action requested (its requester logs state `start` once)."""
    return {r["academy.action_tag"]: r["academy.action"] for rs in run.records.values() for r in rs
            if r.get("academy.action_state") == "start"}


def _lines_of(run: AcademyRun, tag: str) -> set[tuple[str, int]]:
    """(file, line) of every record about action `tag`: those naming it as the action's tag,
    those of the messages its records name (the request and its response, a cancel request and
    its response), and the runtime's "Started action with tag" and "Cancelled action with tag"."""
    everything = [(file, number, r) for file, rs in run.records.items() for number, r in enumerate(rs, start=1)]
    messages = {r["academy.message_tag"] for _, _, r in everything
                if r.get("academy.action_tag") == tag and "academy.message_tag" in r}
    return {(file, number) for file, number, r in everything
            if r.get("academy.action_tag") == tag or r.get("academy.message_tag") in messages
            or r["message"] in (f"Started action with tag {tag}", f"Cancelled action with tag {tag}")}


def _file_with_state(run: AcademyRun, tag: str, state: str) -> str:
    [file] = {file for file, rs in run.records.items() for r in rs
              if r.get("academy.action_tag") == tag and r.get("academy.action_state") == state}
    return file


# ---- the program itself ----------------------------------------------------------------------

def test_the_program_ran_two_agents_in_their_own_processes(academy_run):
    assert academy_run.result["totals"] == [14, 16] and academy_run.result["direct"] == 25
    assert academy_run.result["refused"] is True and academy_run.result["cancelled"] is True
    # one file per process: the manager's and each agent's
    assert len(academy_run.records) == 3
    # 2 calls of total, which call square 3 + 1 times, 2 direct calls of square, 1 of wait
    assert Counter(_actions(academy_run).values()) == {"total": 2, "square": 6, "wait": 1}


# ---- ingest ----------------------------------------------------------------------------------

def test_every_action_is_a_task_with_its_tag_as_text_and_the_pool_as_its_run(academy_run):
    actions = _actions(academy_run)
    with taskscope.open(academy_run.store, read_only=True) as store:
        rows = store.sql("""SELECT task_id, list(DISTINCT run_id) AS runs, list(DISTINCT app_name) AS apps,
                                   count(*) FILTER (WHERE run_id IS NULL) AS without_run
                            FROM events WHERE task_id IS NOT NULL GROUP BY task_id""")
        sources = store.sql("SELECT DISTINCT source FROM events")["source"].tolist()
    assert sources == ["academy"]
    assert set(rows["task_id"]) == set(actions)
    assert all(isinstance(task_id, str) for task_id in rows["task_id"])
    for row in rows.itertuples():
        assert list(row.runs) == [academy_run.pool], row.task_id
        assert list(row.apps) == [actions[row.task_id]], row.task_id
        assert row.without_run == 0


def test_each_action_timeline_has_both_sides_and_every_record_of_it(academy_run):
    actions = _actions(academy_run)
    with taskscope.open(academy_run.store, read_only=True) as store:
        for tag in actions:
            timeline = store.timeline(tag)
            got = set(zip(timeline["file"], timeline["line"].astype(int)))
            assert got == _lines_of(academy_run, tag), tag
            requester = _file_with_state(academy_run, tag, "start")
            handler = _file_with_state(academy_run, tag, "execute_start")
            assert requester != handler
            assert set(timeline["file"]) == {requester, handler}
            assert (timeline["run_id"] == academy_run.pool).all()
            assert list(timeline["ts"]) == sorted(timeline["ts"])


def test_states_follow_the_action_lifecycle(academy_run):
    """Academy's action states map to the task states the analyses know, and the raw
    `academy.action_state` stays in attrs."""
    raw = Counter(r["academy.action_state"] for rs in academy_run.records.values() for r in rs
                  if "academy.action_state" in r)
    with taskscope.open(academy_run.store, read_only=True) as store:
        states = dict(store.sql("""SELECT task_state, count(*) FROM events WHERE event = 'task.state'
                                    GROUP BY 1""").values.tolist())
        kept = store.sql("""SELECT count(*) FROM events WHERE attrs->>'academy.action_state' IS NOT NULL""")
    assert states == {
        "pending": raw["start"], "launched": raw["waiting"], "running": raw["execute_start"],
        "running_ended": raw["execute_success"] + raw["execute_exception"] + raw["execute_cancelled"],
        "exec_done": raw["success"], "failed": raw["exception"], "cancelled": raw["cancelled"],
    }
    assert int(kept.iloc[0, 0]) == sum(raw.values())


def test_common_path_covers_every_action(academy_run):
    actions = _actions(academy_run)
    ended = {state: {r["academy.action_tag"] for rs in academy_run.records.values() for r in rs
                     if r.get("academy.action_state") == state} for state in ("success", "exception", "cancelled")}
    with taskscope.open(academy_run.store, read_only=True) as store:
        path = common_path(store, run=academy_run.pool)
    assert int(path.variants["tasks"].sum()) == len(actions)
    # the successful actions share one path; the one that raised and the one cancelled took others
    assert [len(ended["exception"]), len(ended["cancelled"])] == [1, 1]
    assert list(path.variants["tasks"]) == [len(ended["success"]), 1, 1]
    assert path.variants.iloc[0]["example_task_id"] in ended["success"]
    assert set(path.variants.iloc[1:]["example_task_id"]) == ended["exception"] | ended["cancelled"]
    dominant = path.dominant
    assert {"academy"} == set(dominant["source"])
    assert "Invoking action %s with tag id %s" in set(dominant["template"])


def test_cli_timeline_and_common_path(academy_run):
    tag = next(iter(_actions(academy_run)))
    shown = run_cli("timeline", "--task", tag, "--store", str(academy_run.store), "--format", "json")
    assert shown.returncode == 0, shown.stderr
    assert len(json.loads(shown.stdout)) == len(_lines_of(academy_run, tag))
    path = run_cli("common-path", "--store", str(academy_run.store), "--format", "json")
    assert path.returncode == 0, path.stderr
    assert sum(variant["tasks"] for variant in json.loads(path.stdout)["variants"]) == len(_actions(academy_run))


#: what Academy's exchange client logs (`logger.exception(e)`) when the program's shutdown cancels
#: a request: the text of a CancelledError is empty. Copied from a real run of academy_workflow.py
#: on a busy machine, where it happens in some runs and not others (the traceback shortened).
CANCELLED_REQUEST = {
    "formatted": "\nTraceback (most recent call last):\n  File \"academy/exchange/cloud/client.py\", line 732, "
                 "in _request_with_retry\n    response = await session.request(\nasyncio.exceptions.CancelledError",
    "name": "academy.exchange.cloud.client", "msg": "", "args": "()", "levelname": "ERROR", "levelno": "40",
    "pathname": "academy/exchange/cloud/client.py", "filename": "client.py", "module": "client",
    "exc_info": "(<class 'asyncio.exceptions.CancelledError'>, CancelledError(), <traceback object>)",
    "exc_text": "Traceback (most recent call last):\nasyncio.exceptions.CancelledError", "stack_info": "None",
    "lineno": "738", "funcName": "_request_with_retry", "created": "1796646744.612159", "msecs": "612.0",
    "relativeCreated": "1714.1923904418945", "thread": "139802573859712", "threadName": "MainThread",
    "processName": "SpawnProcess-3", "process": "19600", "message": "",
}


def test_an_exception_logged_with_an_empty_text_is_named(tmp_path):
    log = tmp_path / "pool" / "83f5d2ec-916d-4bea-bf70-f64a97c1a047.jsonlog"
    log.parent.mkdir()
    log.write_text(json.dumps(CANCELLED_REQUEST) + "\n")
    with taskscope.open(tmp_path / "a.duckdb") as store:
        store.ingest(log.parent)
        row = store.sql("SELECT source, event, level, message FROM events").iloc[0]
    assert (row.source, row.event, row.level, row.message) == ("academy", "academy.exception", "ERROR", "")


def test_unnamed_records_are_named_by_their_template(academy_run):
    """A record no rule names keeps its template as its name (Academy's %-template here), so a
    rule given later finds it as unnamed."""
    with taskscope.open(academy_run.store, read_only=True) as store:
        unnamed = store.sql("SELECT event, template FROM events WHERE NOT starts_with(logger, 'academy')")
        # every message Academy itself logged in this program has a name from rules/academy.toml
        academy_unnamed = store.sql("SELECT message FROM events WHERE starts_with(logger, 'academy') AND event = template")
    raw = {r["msg"] for rs in academy_run.records.values() for r in rs if not r["name"].startswith("academy")}
    assert set(unnamed["template"]) == raw == {"Using selector: %s"}
    assert (unnamed["event"] == unnamed["template"]).all()
    assert academy_unnamed.empty, list(academy_unnamed["message"])


def test_a_rule_given_later_names_stored_academy_records(academy_run, tmp_path):
    mine = tmp_path / "mine.toml"
    mine.write_text("[[rule]]\nevent = \"asyncio.selector\"\nlogger = \"asyncio\"\n"
                    "pattern = '^Using selector: (?P<selector>\\w+)$'\n")
    selectors = [r["message"].split(": ")[1] for rs in academy_run.records.values() for r in rs
                 if r["msg"] == "Using selector: %s"]
    with taskscope.open(tmp_path / "later.duckdb") as store:
        store.ingest(academy_run.logs)
        report = store.ingest(academy_run.logs, rules_files=[mine])
        named = store.sql("SELECT attrs->>'selector' AS selector FROM events WHERE event = 'asyncio.selector'")
    assert report.reapplied
    assert sorted(named["selector"]) == sorted(selectors) and selectors


def test_a_log_read_in_parts_away_from_its_pool_folder_gives_the_same_events(academy_run, tmp_path):
    """Files copied flat (their folder no longer names the pool) and read while they grow: each
    part's records get the run from the file's first record, as a whole read does."""
    columns = "line, event, task_id, run_id, app_name, task_state"
    copies = tmp_path / "copied"
    copies.mkdir()
    texts = {}
    for file in academy_run.records:
        texts[file] = (academy_run.logs / file).read_text()
        half = texts[file].splitlines(keepends=True)[: len(academy_run.records[file]) // 2]
        (copies / Path(file).name).write_text("".join(half))
    with taskscope.open(tmp_path / "parts.duckdb") as store:
        store.ingest(copies)
        for file, text in texts.items():
            (copies / Path(file).name).write_text(text)
        store.ingest(copies)
        parts = store.sql(f"SELECT file, {columns} FROM events ORDER BY file, line")
    with taskscope.open(academy_run.store, read_only=True) as store:
        whole = store.sql(f"SELECT file, {columns} FROM events ORDER BY file, line")
    whole["file"] = [Path(file).name for file in whole["file"]]
    whole = whole.sort_values(["file", "line"]).reset_index(drop=True)
    assert len(parts) == sum(len(records) for records in academy_run.records.values())
    assert parts.equals(whole)


def test_a_tarball_of_the_logs_gives_the_same_events(academy_run, tmp_path):
    columns = "line, event, task_id, run_id, app_name, task_state"
    tarball = tmp_path / "academy-logs.tar.gz"
    with tarfile.open(tarball, "w:gz") as archive:
        archive.add(academy_run.logs, arcname="logs")
    with taskscope.open(tmp_path / "tarball.duckdb") as store:
        store.ingest(tarball)
        packed = store.sql(f"SELECT file, {columns} FROM events")
    with taskscope.open(academy_run.store, read_only=True) as store:
        whole = store.sql(f"SELECT file, {columns} FROM events")
    packed["file"] = [file.removeprefix("academy-logs.tar.gz!logs/") for file in packed["file"]]
    order = ["file", "line"]
    assert packed.sort_values(order).reset_index(drop=True).equals(whole.sort_values(order).reset_index(drop=True))
    assert packed["task_id"].nunique() == len(_actions(academy_run))


def test_the_run_is_listed_ended_with_its_actions(academy_run):
    actions = _actions(academy_run)
    failed = sum(1 for rs in academy_run.records.values() for r in rs if r.get("academy.action_state") == "exception")
    with taskscope.open(academy_run.store, read_only=True) as store:
        runs = store.runs()
    assert runs[["run_id", "status", "tasks", "tasks_failed", "events"]].values.tolist() == [
        [academy_run.pool, "failed" if failed else "completed", len(actions), failed,
         sum(len(rs) for rs in academy_run.records.values())]]


def test_a_failed_action_fails_with_the_exception_its_agent_logged(academy_run):
    """The action that raised (`square(-1)`) is a failed task with one failed try, under the
    exception the handling agent logged with its traceback; its type is read here from the
    record's `exc_info` (`(<class 'ValueError'>, ...)`), a field taskscope does not read. The
    failure rows add up to the run's failed tries and failed tasks."""
    records = [r for rs in academy_run.records.values() for r in rs]
    raised = {r["academy.action_tag"]: re.match(r"\(<class '(?:builtins\.)?([\w.]+)'>", r["exc_info"]).group(1)
              for r in records if r.get("academy.action_state") == "execute_exception"}
    failed = {r["academy.action_tag"] for r in records if r.get("academy.action_state") == "exception"}
    assert academy_run.result["refused"] and set(raised) == failed and set(raised.values()) == {"ValueError"}
    actions = _actions(academy_run)
    with taskscope.open(academy_run.store, read_only=True) as store:
        result = store.summary(academy_run.pool)
        rows = store.tasks(run=academy_run.pool).set_index("task_id")
    expected = Counter((actions[tag], kind) for tag, kind in raised.items())
    assert {(row.app_name, row.exception_type): (row.failed_tries, row.tasks, row.tasks_failed)
            for row in result.failures.itertuples()} == {key: (n, n, n) for key, n in expected.items()}
    run = result.runs.iloc[0]
    assert run.failed_tries == run.failed == result.failures.tasks_failed.sum() == len(failed)
    for tag, kind in raised.items():
        assert (rows.loc[tag, "final_state"], rows.loc[tag, "tries"], rows.loc[tag, "exception_type"]) == ("failed", 1, kind)
    assert rows.exception_type.notna().sum() == len(failed)
