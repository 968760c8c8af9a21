"""Rules: the masks that make templates, rules given to an existing store (applied again to what
is stored), and Parsl's per-task lines that carry their task (the memo line, ad-hoc `Task N: ...`
lines of an investigation) in a real Parsl run."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
from conftest import corpus_path, invoke, parsl_env

import taskscope
from taskscope.rules import RuleError, load_rules
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


# ---- rules files that cannot be used ------------------------------------------------------

GOOD_RULE = '[[rule]]\nevent = "a.one"\npattern = "^one"\n\n'


@pytest.mark.parametrize("text, words", [
    ('[[rule]]\npattern = ["a"]\n', "rule 1: `pattern` must be a regex (a string), not a list"),
    ('[[rule]]\npattern = "a"\nset = "task_state"\n', "rule 1: `set` must be a table of column = value"),
    ('[[rule]]\npattern = "a"\nset = { task_state = ["failed"] }\n', "`set.task_state` must be a string or an integer"),
    ('[[rule]]\npattern = "a"\nset = { state = "failed" }\n', "a column a rule cannot fill: 'state' (did you mean `task_state`?)"),
    ("rule = 5\n", "`rule` must be an array of tables ([[rule]]), not an integer"),
    ("rule = [5]\n", "rule 1 must be a table ([[rule]] with keys), not an integer"),
    ('[[rule]]\npattern = "a"\nlogger = 5\n', "rule 1: `logger` must be a logger name (a string), not an integer"),
    ('[[rule]]\npattern = "a"\nevent = 5\n', "rule 1: `event` must be an event name (a string), not an integer"),
    ('[[rule]]\npattern = "a"\nalso = 5\n', "rule 1: `also` must be a list of regexes, not an integer"),
    (GOOD_RULE + '[[rule]]\nevent = "b.two"\npattern = "(?<=a)b"\n',
     "rule 2 (event 'b.two'): `pattern`: bad regex '(?<=a)b': RE2 (DuckDB's regex engine) rejects it"),
    ('[[rule]]\npattern = "a"\nalso = ["(?P<task_id>x)", "(a)\\\\1"]\n', "rule 1: `also[1]`: bad regex '(a)\\\\1': RE2"),
    ('[[rule]]\nevent = "x"\npattern = "a("\n', "rule 1 (event 'x'): `pattern`: bad regex 'a('"),
    ('[[rule]]\nevent = "x"\n', "rule 1 (event 'x') lacks `pattern`"),
    ('[[rules]]\npattern = "a"\n', "unknown top-level key `rules` (did you mean `rule`?)"),
    ('[[relation]]\nkind = "implies"\nkey = ["a"]\nfields = ["b"]\n',
     "[[relation]] belongs in a relations file (give it to --relations)"),
    ('[[rule]]\npattern = "a"\nloger = "x"\n', "rule 1: unknown key `loger` (did you mean `logger`?)"),
    ("", "has no [[rule]] entries"),
    ("# my rules, to be written\n", "has no [[rule]] entries"),
])
def test_a_bad_rules_file_is_one_line_naming_file_rule_and_key_before_the_store(tmp_path, text, words):
    rules = tmp_path / "mine.toml"
    rules.write_text(text)
    with pytest.raises(RuleError, match=re.escape(f"{rules}")) as raised:
        load_rules([rules])
    assert words in str(raised.value)
    store = tmp_path / "s.duckdb"
    done = invoke("ingest", str(corpus_path("parsl-htex-jsonlog")), "--rules", str(rules), "--store", str(store))
    assert done.returncode == 2
    assert done.stderr.startswith("error:") and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert str(rules) in done.stderr and words in done.stderr
    assert not store.exists()


def test_also_may_be_one_regex_written_without_its_list(tmp_path):
    stream = tmp_path / "pipeline.jsonl"
    stream.write_text(json.dumps({"ts": 1, "message": "sample A entered stage align", "run_id": "r1"}) + "\n")
    rules = tmp_path / "pipeline.toml"
    rules.write_text('[[rule]]\nevent = "sample.stage"\npattern = "^sample "\nalso = "stage (?P<stage>\\\\S+)"\n')
    assert load_rules([rules])[0].also == ("stage (?P<stage>\\S+)",)
    store = tmp_path / "s.duckdb"
    summary_line(invoke("ingest", str(stream), "--rules", str(rules), "--store", str(store)))
    with taskscope.open(store, read_only=True) as opened:
        assert opened.con.execute("SELECT event, attrs->>'stage' FROM events").fetchall() == [("sample.stage", "align")]


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
