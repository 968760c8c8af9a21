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
from taskscope.rules import RuleError, load_rules, user_rule_notes
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
    ('[[rule]]\npattern = "a"\nset = { try_id = "first" }\n',
     "rule 1: `set.try_id` must be an integer (try_id is a column of integers), not 'first'"),
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


def test_also_reads_the_whole_message_of_a_record_of_several_lines(tmp_path):
    # Dask's worker logs a failed task as one record of several lines; its key is on the second
    log = tmp_path / "worker.log"
    log.write_text(
        "2026-03-01 10:00:00,000 - distributed.worker - ERROR - Compute Failed\n"
        "Key:       sample-5/boom\n"
        "Exception: 'ValueError(\"boom\")'\n"
        "2026-03-01 10:00:01,000 - distributed.worker - ERROR - Compute Failed Key: sample-6 Exception: 'KeyError()'\n"
        "2026-03-01 10:00:02,000 - distributed.worker - INFO - done sample-7\n"
        "Key:       sample-8\n"
    )
    rules = tmp_path / "dask.toml"
    rules.write_text("""
[[rule]]
event = "dask.compute_failed"
pattern = 'Compute Failed'
also = ['Key:\\s+(?P<task_id>\\S+)', '''Exception:\\s+'(?P<exception_type>\\w+)''']

[[rule]]
event = "dask.done"
pattern = 'done (?P<task_id>\\S+)$'
also = '(?m)^Key:\\s+(?P<key>\\S+)$'
""")
    with taskscope.open(tmp_path / "s.duckdb") as store:
        store.ingest(log, rules_files=[rules])
        rows = store.con.execute(
            "SELECT event, task_id, attrs->>'exception_type', attrs->>'key' FROM events ORDER BY line").fetchall()
    assert rows == [
        ("dask.compute_failed", "sample-5/boom", "ValueError", None),
        ("dask.compute_failed", "sample-6", "KeyError", None),
        # the pattern reads the first line (its `$` is that line's end); `also` the whole message
        ("dask.done", "sample-7", None, "sample-8"),
    ]


# ---- what a user's rules did ---------------------------------------------------------------


def test_rules_of_a_users_file_that_name_nothing_are_noted(tmp_path):
    stream = write_stream(tmp_path / "runner.jsonl", [
        {"ts": 1, "message": "task sample-A submitted", "logger": "app.runner"},
        {"ts": 2, "message": "task sample-B submitted", "logger": "app.runner"},
        {"ts": 3, "message": "task sample-A started"},
        {"ts": 4, "message": "Parsl task 3 try 0 launched on executor htex with executor id 4"},  # named by Parsl's rules
    ])
    rules = tmp_path / "mine.toml"
    rules.write_text("""
[[rule]]
event = "task.any"
pattern = '^task (?P<task_id>\\S+) (submitted|started)$'

[[rule]]
event = "task.submitted"
pattern = '^task (?P<task_id>\\S+) submitted$'

[[rule]]
event = "task.queued"
pattern = '^task queued now$'

[[rule]]
pattern = '^job (?P<job_id>\\S+)'

[[rule]]
event = "runner.started"
pattern = 'started$'
logger = "runner"

[[rule]]
event = "runner.submitted"
pattern = 'submitted$'
logger = "runner"
""")
    with taskscope.open(tmp_path / "s.duckdb") as store:
        store.ingest(stream, rules_files=[rules])
        notes = user_rule_notes(store.con, load_rules([rules]))
    assert notes == [
        (f'rule 2 of {rules} ("task.submitted") named no event: rule 1 of {rules} ("task.any") comes first and '
         "takes every message it matches (2)"),
        (f'rule 3 of {rules} ("task.queued") named no event: no message matched \'^task queued now$\' '
         "(a pattern reads a message's first line)"),
        f"rule 4 of {rules} read nothing: no message matched '^job (?P<job_id>\\\\S+)' (a pattern reads a message's first line)",
        (f'rule 5 of {rules} ("runner.started") named no event: its pattern matches 1 message, none from a logger '
         "starting with 'runner' (they have no logger)"),
        (f'rule 6 of {rules} ("runner.submitted") named no event: its pattern matches 2 messages, none from a logger '
         "starting with 'runner' (theirs: 'app.runner') (did you mean `app.runner`?)"),
    ]
    # the rule that named events, and the shipped ones (Parsl's name nothing here), have no note


def test_a_value_a_group_reads_that_does_not_fit_its_column_is_kept_in_attrs(tmp_path):
    stream = write_stream(tmp_path / "tries.jsonl", [
        {"ts": 1, "message": "abc try", "task_id": "t"},
        {"ts": 2, "message": "7 try", "task_id": "t"},
        {"ts": 3, "message": "def try", "task_id": "t", "try_id": 2},  # its own try is kept
        {"ts": 4, "message": "ghi try", "task_id": "t", "try_id": "x"},  # its own field is kept
    ])
    rules = tmp_path / "tries.toml"
    rules.write_text('[[rule]]\nevent = "x"\npattern = "^(?P<try_id>\\\\w+) try"\n')
    with taskscope.open(tmp_path / "s.duckdb") as store:
        store.ingest(stream, rules_files=[rules])
        rows = store.con.execute("SELECT try_id, attrs->>'try_id' FROM events ORDER BY line").fetchall()
        notes = user_rule_notes(store.con, load_rules([rules]))
    assert rows == [(None, "abc"), (7, None), (2, "2"), (None, "x")]
    kept = f"rule 1 of {rules} (\"x\") read a try_id that is no integer on 2 events (e.g. 'abc'): kept in attrs as try_id"
    assert notes == [kept]


def write_stream(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return path


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
