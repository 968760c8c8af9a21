"""A store remembers the rules and relations files given to it: every later ingest, a live
dashboard's included, reads new logs with them, until they are forgotten.

Real stores, the real CLI in a fresh process, and a real `taskscope ui` following a log as it grows.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

import taskscope
from conftest import run_cli
from taskscope.rules import RuleError

RULES = """
[[rule]]
event = "task.state"
pattern = '^job (?P<task_id>\\S+) queued$'
set = { task_state = "pending" }

[[rule]]
event = "task.state"
pattern = '^job (?P<task_id>\\S+) done$'
set = { task_state = "exec_done" }
"""

RELATIONS = """
[[relation]]
kind = "implies"
key = ["run_id", "task_id"]
fields = ["app_name"]
"""


def records(first: int, last: int) -> str:
    """JSON lines of jobs `first`..`last`: queued (with their app), then done (without it)."""
    lines = []
    for n in range(first, last + 1):
        lines.append({"ts": 1.8e9 + n, "run_id": "r1", "message": f"job j{n} queued", "app_name": "align"})
        lines.append({"ts": 1.8e9 + n + 0.5, "run_id": "r1", "message": f"job j{n} done"})
    return "".join(json.dumps(line) + "\n" for line in lines)


def named(store_path: Path) -> list[tuple]:
    with taskscope.open(str(store_path), read_only=True) as store:
        return store.con.execute(
            "SELECT task_id, task_state, app_name FROM events ORDER BY ts").fetchall()


@pytest.fixture
def files(tmp_path):
    rules, relations = tmp_path / "mine.toml", tmp_path / "mine_relations.toml"
    rules.write_text(RULES)
    relations.write_text(RELATIONS)
    return rules, relations


def test_later_ingests_read_with_the_rules_given_once(tmp_path, files):
    rules, relations = files
    log = tmp_path / "jobs.jsonl"
    log.write_text(records(1, 2))
    store = tmp_path / "jobs.duckdb"
    first = run_cli("ingest", str(log), "--rules", str(rules), "--relations", str(relations), "--store", str(store))
    assert first.returncode == 0, first.stderr
    rules.rename(tmp_path / "moved.toml")  # the store keeps the text, not the path
    log.write_text(records(1, 4))
    later = run_cli("ingest", str(log), "--store", str(store))
    assert later.returncode == 0, later.stderr
    assert "read with the rules and relations this store keeps (mine.toml, mine_relations.toml)" in later.stdout
    # the same as one ingest of the whole log with the files
    (tmp_path / "mine.toml").write_text(RULES)
    whole = tmp_path / "whole.duckdb"
    assert run_cli("ingest", str(log), "--rules", str(tmp_path / "mine.toml"), "--relations", str(relations),
                   "--store", str(whole)).returncode == 0
    assert named(store) == named(whole)
    assert named(store)[-2:] == [("j4", "pending", "align"), ("j4", "exec_done", "align")]


def test_forgotten_files_name_nothing_new_and_a_bad_file_is_not_kept(tmp_path, files):
    rules, _ = files
    log = tmp_path / "jobs.jsonl"
    log.write_text(records(1, 1))
    with taskscope.open(str(tmp_path / "jobs.duckdb")) as store:
        store.ingest(log, rules_files=[rules])
        bad = tmp_path / "bad.toml"
        bad.write_text('[[rule]]\nevent = "x"\npattern = "(unclosed"\n')
        with pytest.raises(RuleError):
            store.ingest(log, rules_files=[bad])
        assert store.forget_rules() == ["mine.toml"]
        log.write_text(records(1, 2))
        store.ingest(log)
        rows = store.con.execute("SELECT task_id FROM events ORDER BY ts").fetchall()
    assert rows == [("j1",), ("j1",), (None,), (None,)]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_live_dashboard_reads_new_lines_with_the_kept_rules(tmp_path, files):
    rules, relations = files
    folder = tmp_path / "logs"
    folder.mkdir()
    log = folder / "jobs.jsonl"
    log.write_text(records(1, 1))
    store = tmp_path / "live.duckdb"
    assert run_cli("ingest", str(folder), "--rules", str(rules), "--relations", str(relations),
                   "--store", str(store)).returncode == 0
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "taskscope.cli", "ui", str(folder), "--store", str(store),
                               "--port", str(port), "--interval", "0.5"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        with log.open("a") as grown:
            grown.write(records(2, 3)[:])
        deadline, states = time.monotonic() + 60, {}
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/runs/r1/tasks", timeout=5) as answer:
                    rows = json.load(answer)["rows"]
                states = {row["task_id"]: (row["final_state"], row["app_name"]) for row in rows}
            except OSError:
                pass
            if len(states) == 3:
                break
            time.sleep(0.3)
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert states == {f"j{n}": ("exec_done", "align") for n in (1, 2, 3)}


def test_the_cli_forgets_kept_files_and_says_what_a_users_rule_did_not_do(tmp_path, files):
    rules, relations = files
    log = tmp_path / "jobs.jsonl"
    log.write_text(records(1, 1))
    store = str(tmp_path / "jobs.duckdb")
    idle = tmp_path / "idle.toml"
    idle.write_text('[[rule]]\nevent = "job.retried"\npattern = \'^job (?P<task_id>\\S+) retried$\'\n')
    first = run_cli("ingest", str(log), "--rules", str(rules), "--rules", str(idle), "--store", store)
    assert first.returncode == 0, first.stderr
    assert f'note: rule 1 of {idle.resolve()} ("job.retried") named no event' in first.stderr, first.stderr
    log.write_text(records(1, 2))
    forgot = run_cli("ingest", str(log), "--forget-rules", "--store", store)
    assert forgot.returncode == 0, forgot.stderr
    assert "forgot the rules and relations files mine.toml, idle.toml" in forgot.stderr
    assert "this store keeps" not in forgot.stdout
    assert named(Path(store))[-2:] == [(None, None, "align"), (None, None, None)]
