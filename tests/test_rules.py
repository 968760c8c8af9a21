"""Rules: the masks that make templates, rules given to an existing store (applied again to what
is stored), and Parsl's per-task lines that carry their task (the memo line, ad-hoc `Task N: ...`
lines of an investigation) in a real Parsl run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
from conftest import corpus_path, invoke, parsl_env

import taskscope
from taskscope.templates import template_of, with_template_sql


@pytest.mark.parametrize("message, template", [
    ("tags 'inc-c9b', 'inc-902'", "tags 'inc-c9b', 'inc-<num>'"),
    ("Manager b'5a3c' sent b'' and cb'x'", "Manager <bytes> sent <bytes> and cb'x'"),
    ("offset -3 and range 3-4", "offset <num> and range <num>-<num>"),
    ("Task 12 will not be memoized", "Task <num> will not be memoized"),
])
def test_masks_keep_words_whole_in_python_and_sql(message, template):
    assert template_of(message) == template
    sql = with_template_sql("SELECT ? AS message", "message", "template")
    assert duckdb.execute(sql, [message]).fetchall() == [(message, template)]


# ---- rules and relations given to a store that already holds events ----------------------


def summary_line(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


def test_rules_given_later_are_applied_to_the_stored_events(tmp_path):
    stream = tmp_path / "pipeline.jsonl"
    stream.write_text("".join(json.dumps(record) + "\n" for record in [
        {"ts": 1, "message": "sample sample-A entered stage align", "run_id": "r1"},
        {"ts": 2, "message": "sample sample-B entered stage align", "run_id": "r1"},
        {"ts": 3, "message": "pipeline idle", "run_id": "r1"},
    ]))
    store = tmp_path / "s.duckdb"
    first = summary_line(invoke("ingest", str(stream), "--store", str(store)))
    assert "applied again" not in first
    rules = tmp_path / "pipeline.toml"
    rules.write_text("""
[[rule]]
event = "sample.stage"
pattern = '^sample (?P<task_id>\\S+) entered stage (?P<stage>\\S+)'
""")
    again = summary_line(invoke("ingest", str(stream), "--rules", str(rules), "--store", str(store)))
    assert "1 unchanged" in again
    assert "rules and relations applied again to every stored event (2 events named or given ids by rules)" in again
    with taskscope.open(store, read_only=True) as opened:
        rows = opened.con.execute("SELECT line, event, task_id, attrs->>'stage' FROM events ORDER BY line").fetchall()
    assert rows == [
        (1, "sample.stage", "sample-A", "align"),
        (2, "sample.stage", "sample-B", "align"),
        (3, "pipeline idle", None, None),
    ]


def test_relations_given_later_relate_the_stored_events_again(tmp_path):
    store_path = tmp_path / "s.duckdb"
    run = corpus_path("parsl-htex-jsonlog")
    with taskscope.open(store_path) as store:
        store.ingest(run)
        unlabelled = int(store.sql("SELECT count(*) FROM events WHERE task_id IS NOT NULL AND executor_label IS NULL")
                         .iloc[0, 0])
    assert unlabelled > 100
    relations = tmp_path / "labels.toml"
    relations.write_text('[[relation]]\nkind = "implies"\nkey = ["run_id", "task_id"]\nfields = ["executor_label"]\n')
    again = summary_line(invoke("ingest", str(run), "--relations", str(relations), "--store", str(store_path)))
    assert "ingested 0 files" in again and "applied again to every stored event" in again
    with taskscope.open(store_path, read_only=True) as store:
        assert store.sql("SELECT count(*) FROM events WHERE task_id IS NOT NULL AND executor_label IS NULL"
                         ).iloc[0, 0] == 0


# ---- a real Parsl run with an investigation's ad-hoc lines ---------------------------------

# the report's technique: a debug line added inside the DFK, here around DataFlowKernel.launch_task
INSTRUMENTED_WORKFLOW = '''
import sys
import parsl
import parsl.dataflow.dflow as dflow
from parsl.config import Config
from parsl.executors.threads import ThreadPoolExecutor

original_launch_task = dflow.DataFlowKernel.launch_task


def launch_task(self, task_record):
    dflow.logger.debug("Task %s: TMP: before submitter lock", task_record["id"])
    try:
        return original_launch_task(self, task_record)
    finally:
        dflow.logger.debug("Task %s TMP after launch_task", task_record["id"])


dflow.DataFlowKernel.launch_task = launch_task


@parsl.python_app
def double(x):
    return 2 * x


with parsl.load(Config(executors=[ThreadPoolExecutor(label="threads")], run_dir=sys.argv[1])):
    print(sum(double(i).result() for i in range(5)))
'''


@pytest.fixture(scope="module")
def instrumented_run(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("instrumented")
    script = base / "workflow.py"
    script.write_text(INSTRUMENTED_WORKFLOW)
    done = subprocess.run([sys.executable, str(script), str(base / "runinfo")], capture_output=True, text=True,
                          timeout=300, env=parsl_env(), cwd=base, check=False)
    if done.returncode != 0:
        pytest.fail(f"instrumented Parsl run failed:\n{done.stdout}\n{done.stderr}")
    assert done.stdout.strip() == "20"
    return base / "runinfo"


def test_memo_and_ad_hoc_task_lines_carry_their_task(instrumented_run):
    with taskscope.open(":memory:") as store:
        store.ingest(instrumented_run)
        lines = store.sql("""
            SELECT event, task_id, count(*) AS n FROM events
            WHERE message LIKE 'Task % will not be memoized' OR message LIKE 'Task %TMP%'
            GROUP BY ALL ORDER BY event, task_id""")
        timeline = store.timeline("3")
    by_event: dict[str, list] = {}
    for event, task_id, n in lines.values.tolist():
        assert n == 1
        by_event.setdefault(event, []).append(task_id)
    tasks = ["0", "1", "2", "3", "4"]
    assert by_event == {
        "task.not_memoized": tasks,
        "Task <num> TMP after launch_task": tasks,
        "Task <num>: TMP: before submitter lock": tasks,
    }
    assert {"task.not_memoized", "Task <num>: TMP: before submitter lock"} <= set(timeline["event"])
