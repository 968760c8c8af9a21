"""Relations as data: each kind, declared in a user's TOML file, changes the events it should and
no other; conflicts are counted, not raised; bad files are one-line errors.

Each test ingests the same input twice into real DuckDB stores, with and without the user's
relations, and compares every stored column of every event.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest
from conftest import corpus_path, invoke

import taskscope
from taskscope.relations import RelationError, load_relations
from taskscope.relations.notes import user_relation_notes

COLUMNS = ["run_id", "task_id", "try_id", "app_name", "executor_label", "executor_task_id", "block_id",
           "manager_id", "worker_id", "host", "pid", "event", "template", "message", "attrs"]


# a generic stream's work intervals: its start and end are messages no rule names (their template)
WORK_ENCLOSES = """
[[relation]]
kind = "encloses"
start = "start work"
end = "end work"
key = ["task_id"]
within = ["host", "pid"]
"""


def write_stream(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return path


def write_relations(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def stored(tmp_path: Path, name: str, source: Path, relations: list[Path] | None = None):
    """(events by (file, line), ingest report) of `source` ingested into a new store file."""
    with taskscope.open(tmp_path / f"{name}.duckdb") as store:
        report = store.ingest(source, relations_files=relations)
        frame = store.sql(f"SELECT file, line, ts, {', '.join(COLUMNS)} FROM events")
    frame = frame.astype(object).where(frame.notna(), None)
    frame["attrs"] = frame["attrs"].map(lambda text: json.loads(text) if isinstance(text, str) else text)
    return {(row["file"], row["line"]): row for row in frame.to_dict("records")}, report


def differences(before: dict, after: dict) -> dict:
    """(file, line) -> {column: (before, after)} for every event that differs."""
    assert before.keys() == after.keys(), "relations must never add or drop events"
    changed = {}
    for key, row in before.items():
        columns = {name: (row[name], after[key][name]) for name in COLUMNS if not _same(row[name], after[key][name])}
        if "attrs" in columns:
            columns["attrs"] = _changed_keys(*columns["attrs"])
        if columns:
            changed[key] = columns
    return changed


def _changed_keys(before: dict | None, after: dict | None) -> tuple[dict, dict]:
    """The keys of two `attrs` whose values differ, as (before, after): a JSON record's attrs
    is the whole record as logged, so only what a relation changed is compared."""
    before, after = before or {}, after or {}
    keys = {k for k in before.keys() | after.keys() if before.get(k, _same) != after.get(k, _same)}
    return {k: before[k] for k in keys if k in before}, {k: after[k] for k in keys if k in after}


def _same(a, b) -> bool:
    if a is None or (isinstance(a, float) and pd.isna(a)):
        return b is None or (isinstance(b, float) and pd.isna(b))
    return a == b


def by_line(changes: dict) -> dict[int, dict]:
    return {line: columns for (_, line), columns in changes.items()}


# ---- hand-made streams -----------------------------------------------------------------------


def test_implies_copies_a_field_within_its_key_and_nowhere_else(tmp_path):
    stream = write_stream(tmp_path / "jobs.jsonl", [
        {"ts": 1, "message": "job queued", "run_id": "r1", "task_id": "sample-A"},
        {"ts": 2, "message": "job running", "run_id": "r1", "task_id": "sample-A", "queue": "gpu", "host": "n1"},
        {"ts": 3, "message": "job done", "run_id": "r1", "task_id": "sample-A"},
        {"ts": 4, "message": "job queued", "run_id": "r1", "task_id": "sample-B"},
        {"ts": 5, "message": "job done", "run_id": "r1", "task_id": "sample-B", "queue": "cpu"},
        {"ts": 6, "message": "unrelated", "run_id": "r1"},
        {"ts": 7, "message": "job done", "run_id": "r2", "task_id": "sample-A"},
    ])
    relations = write_relations(tmp_path / "mine.toml", """
[[relation]]
kind = "implies"
key = ["run_id", "task_id"]
fields = ["queue", "host"]
""")
    before, _ = stored(tmp_path, "before", stream)
    after, report = stored(tmp_path, "after", stream, [relations])
    assert by_line(differences(before, after)) == {
        1: {"host": (None, "n1"), "attrs": ({}, {"queue": "gpu"})},
        3: {"host": (None, "n1"), "attrs": ({}, {"queue": "gpu"})},
        4: {"attrs": ({}, {"queue": "cpu"})},
    }
    assert report.relate.conflicts == {}


def test_binds_gives_the_bound_fields_to_events_with_the_from_key_only(tmp_path):
    stream = write_stream(tmp_path / "sessions.jsonl", [
        {"ts": 1, "message": "session opened", "session": "s1"},
        {"ts": 2, "message": "session assigned", "session": "s1", "task_id": "sample-A", "try_id": 1},
        {"ts": 3, "message": "session heartbeat", "session": "s1"},
        {"ts": 4, "message": "session heartbeat", "session": "s2"},
        # carries both, but is not the binding event: binds nothing
        {"ts": 5, "message": "session note", "session": "s2", "task_id": "sample-C"},
        # says another task: contradicts the binding, so it is left as it is
        {"ts": 6, "message": "session heartbeat", "session": "s1", "task_id": "sample-Z"},
        {"ts": 7, "message": "no session here"},
    ])
    relations = write_relations(tmp_path / "mine.toml", """
[[relation]]
kind = "binds"
from = ["session"]
to = ["task_id", "try_id"]
on = "session assigned"
""")
    before, _ = stored(tmp_path, "before", stream)
    after, _ = stored(tmp_path, "after", stream, [relations])
    assert by_line(differences(before, after)) == {
        1: {"task_id": (None, "sample-A"), "try_id": (None, 1)},
        3: {"task_id": (None, "sample-A"), "try_id": (None, 1)},
    }


def test_encloses_ties_the_events_between_start_and_end_of_the_same_process(tmp_path):
    # the start and end are messages no rule names: matched by their template
    line = {"host": "h", "pid": 10}
    stream = write_stream(tmp_path / "work.jsonl", [
        {"ts": 1, "message": "start work", "task_id": "a", **line},
        {"ts": 2, "message": "step one", **line},
        {"ts": 3, "message": "step one", "host": "h", "pid": 11},  # another process
        {"ts": 4, "message": "end work", "task_id": "a", **line},
        {"ts": 5, "message": "idle", **line},  # after the end
        {"ts": 6, "message": "start work", "task_id": "b", **line},
        {"ts": 7, "message": "step two", **line},
        {"ts": 8, "message": "end work", "task_id": "a", **line},  # another key's end closes nothing
        {"ts": 9, "message": "step two", **line},
        {"ts": 10, "message": "start work", "task_id": "c", **line},  # a start ends b's interval
        {"ts": 11, "message": "step three", "task_id": "x", **line},  # has its own key
        {"ts": 12, "message": "step four", **line},  # c has no end: open to the last line
        {"ts": 13, "message": "step five"},  # no process
    ])
    relations = write_relations(tmp_path / "mine.toml", WORK_ENCLOSES)
    before, _ = stored(tmp_path, "before", stream)
    after, _ = stored(tmp_path, "after", stream, [relations])
    assert by_line(differences(before, after)) == {
        2: {"task_id": (None, "a")},
        7: {"task_id": (None, "b")},
        9: {"task_id": (None, "b")},
        12: {"task_id": (None, "c")},
    }


def test_an_end_carrying_part_of_the_key_closes_the_interval_it_agrees_with(tmp_path):
    line = {"run_id": "r", "worker": "w1"}
    stream = write_stream(tmp_path / "work.jsonl", [
        {"ts": 1, "message": "begin", "task_id": "t1", "try_id": 0, **line},
        {"ts": 2, "message": "working", **line},
        {"ts": 3, "message": "end", "task_id": "t1", **line},  # names the task, not the try: closes t1's
        {"ts": 4, "message": "idle heartbeat", **line},
        {"ts": 5, "message": "begin", "task_id": "t2", "try_id": 0, **line},
        {"ts": 6, "message": "end", "task_id": "t9", **line},  # another task's end closes nothing
        {"ts": 7, "message": "working", **line},
        {"ts": 8, "message": "end", "try_id": 0, **line},  # agrees on the one field it has: closes t2's
        {"ts": 9, "message": "idle heartbeat", **line},
        {"ts": 10, "message": "begin", "task_id": "t3", "try_id": 1, **line},
        {"ts": 11, "message": "end", **line},  # names no field of the key: closes nothing, is enclosed
        {"ts": 12, "message": "working", **line},
    ])
    relations = write_relations(tmp_path / "mine.toml", """
[[relation]]
kind = "encloses"
start = "begin"
end = "end"
key = ["task_id", "try_id"]
within = ["run_id", "worker"]
""")
    before, _ = stored(tmp_path, "before", stream)
    after, _ = stored(tmp_path, "after", stream, [relations])
    assert by_line(differences(before, after)) == {
        2: {"task_id": (None, "t1"), "try_id": (None, 0)},
        7: {"task_id": (None, "t2"), "try_id": (None, 0)},
        11: {"task_id": (None, "t3"), "try_id": (None, 1)},
        12: {"task_id": (None, "t3"), "try_id": (None, 1)},
    }


def test_conflicts_are_counted_and_leave_their_group_unchanged(tmp_path):
    stream = write_stream(tmp_path / "conflicts.jsonl", [
        {"ts": 1, "message": "job queued", "run_id": "r1", "task_id": "A", "queue": "gpu"},
        {"ts": 2, "message": "job moved", "run_id": "r1", "task_id": "A", "queue": "cpu"},
        {"ts": 3, "message": "job done", "run_id": "r1", "task_id": "A"},
        {"ts": 4, "message": "job done", "run_id": "r1", "task_id": "B"},
        {"ts": 5, "message": "job queued", "run_id": "r1", "task_id": "B", "queue": "cpu"},
        {"ts": 6, "message": "session assigned", "session": "s1", "task_id": "A"},
        {"ts": 7, "message": "session assigned", "session": "s1", "task_id": "B"},
        {"ts": 8, "message": "session heartbeat", "session": "s1"},
    ])
    relations = write_relations(tmp_path / "mine.toml", """
[[relation]]
name = "queue of a job"
kind = "implies"
key = ["run_id", "task_id"]
fields = ["queue"]

[[relation]]
name = "session to task"
kind = "binds"
from = ["session"]
to = ["task_id"]
on = "session assigned"
""")
    before, _ = stored(tmp_path, "before", stream)
    after, report = stored(tmp_path, "after", stream, [relations])
    assert by_line(differences(before, after)) == {4: {"attrs": ({}, {"queue": "cpu"})}}
    assert report.relate.conflicts == {"queue of a job": 1, "session to task": 1}


def test_a_relations_file_given_to_the_cli_is_used_and_a_bad_one_is_one_line(tmp_path):
    stream = write_stream(tmp_path / "work.jsonl", [
        {"ts": 1, "message": "start work", "task_id": "a", "host": "h", "pid": 1},
        {"ts": 2, "message": "step", "host": "h", "pid": 1},
    ])
    good = write_relations(tmp_path / "good.toml", WORK_ENCLOSES)
    store = tmp_path / "s.duckdb"
    done = invoke("ingest", str(stream), "--relations", str(good), "--store", str(store))
    assert done.returncode == 0, done.stderr
    with taskscope.open(store, read_only=True) as opened:
        assert opened.sql("SELECT task_id FROM events ORDER BY line")["task_id"].tolist() == ["a", "a"]

    for text, words in [
        ('[[relation]]\nkind = "widens"\nkey = ["a"]\n', "`kind` must be one of implies, binds, encloses"),
        ('[[relation]]\nkind = "implies"\nkey = ["run_id"]\n', "lacks ['fields']"),
        ('[[relation]]\nkind = "implies"\nkeys = ["run_id"]\nfields = ["b"]\n', "unknown key `keys` (did you mean `key`?)"),
        ('[[relation]]\nkind = "binds"\nfrom = ["a"]\nto = ["b"]\nwhen = "x"\n', "unknown key `when`"),
        ('[[relation]]\nkind = "binds"\nfrom = ["a"]\nto = ["b"]\nom = "x"\n', "unknown key `om` (did you mean `from`?)"),
        ('[[relation]]\nkind = "implies"\nkey = [1]\nfields = ["b"]\n',
         "relation 1: `key` must be a non-empty list of field names (strings), not [1]"),
        ('[[relation]]\nkind = ["implies"]\n', "relation 1: `kind` must be one of implies, binds, encloses"),
        ('[[relation]]\nname = 5\nkind = "implies"\nkey = ["a"]\nfields = ["b"]\n', "`name` must be a string"),
        ('[[relation]]\nkind = "binds"\nfrom = ["a"]\nto = ["b"]\non = 5\n', "`on` must be an event name (a string)"),
        ("relation = [1]\n", "relation 1 must be a table ([[relation]] with keys), not an integer"),
        ('[[rule]]\npattern = "a"\n', "[[rule]] belongs in a rules file (give it to --rules)"),
        ('[[relations]]\nkind = "implies"\n', "unknown top-level key `relations` (did you mean `relation`?)"),
        ("", "has no [[relation]] entries"),
        ("[[relation]\n", "is not valid TOML"),
        ('[[relation]]\nkind = "implies"\nkey = ["task_id"]\nfields = ["event"]\n', "cannot change: ['event']"),
    ]:
        bad = write_relations(tmp_path / "bad.toml", text)
        with pytest.raises(RelationError, match=re.escape(words)):
            load_relations([bad])
        done = invoke("ingest", str(stream), "--relations", str(bad), "--store", str(tmp_path / "other.duckdb"))
        assert done.returncode == 2
        assert "Traceback" not in done.stderr and words in done.stderr and len(done.stderr.strip().splitlines()) == 1
        assert str(bad) in done.stderr
    assert not (tmp_path / "other.duckdb").exists()


# ---- what a user's relations did ---------------------------------------------------------------

NOTED_STREAM = [
    {"ts": 1, "message": "task queued", "run_id": "r", "task_id": "A"},
    {"ts": 2, "message": "task dispatched", "run_id": "r", "task_id": "A", "try_id": 0, "job": "j-1"},
    {"ts": 3, "message": "job started", "run_id": "r", "job": "j-1", "worker": "w1"},
    {"ts": 4, "message": "job finished", "run_id": "r", "job": "j-1", "worker": "w1", "status": "ok"},
    {"ts": 5, "message": "task moved", "run_id": "r", "task_id": "A", "queue": "gpu"},
    {"ts": 6, "message": "task moved", "run_id": "r", "task_id": "A", "queue": "cpu"},
]

NOTED_RELATIONS = """
[[relation]]
name = "job to task"
kind = "binds"
from = ["run_id", "job"]
to = ["task_id", "try_id"]
on = "task dispatched"

[[relation]]
kind = "binds"
from = ["run_id", "jobb"]
to = ["task_id", "try_id"]

[[relation]]
kind = "implies"
key = ["run_id", "task_idd"]
fields = ["stauts"]

[[relation]]
name = "tie jobs"
kind = "binds"
from = ["run_id", "job"]
to = ["task_id"]
on = "task dispached"

[[relation]]
kind = "encloses"
start = "job startd"
end = "job finished"
key = ["task_id"]
within = ["run_id", "worker"]

[[relation]]
name = "queue"
kind = "implies"
key = ["run_id", "task_id"]
fields = ["queue"]

[[relation]]
name = "status of a worker"
kind = "binds"
from = ["run_id", "worker"]
to = ["status"]
on = "job started"

[[relation]]
name = "job of a worker"
kind = "implies"
key = ["run_id", "worker"]
fields = ["job"]

[[relation]]
name = "job spans"
kind = "encloses"
start = "job started"
end = "job finishd"
key = ["job"]
within = ["run_id"]
"""


def test_relations_of_a_users_file_that_change_nothing_are_noted(tmp_path):
    stream = write_stream(tmp_path / "jobs.jsonl", NOTED_STREAM)
    mine = write_relations(tmp_path / "mine.toml", NOTED_RELATIONS)
    with taskscope.open(tmp_path / "s.duckdb") as store:
        report = store.ingest(stream, relations_files=[mine])
        notes = user_relation_notes(store.con, load_relations([mine]), report.relate)
        assert store.sql("SELECT count(*) FROM events WHERE task_id = 'A'").iloc[0, 0] == 6  # "job to task" tied
        again = store.ingest(stream, relations_files=[mine])
        notes_again = user_relation_notes(store.con, load_relations([mine]), again.relate)
    assert notes == [
        (f'relation 2 of {mine} ("(run_id,jobb) binds (task_id,try_id)", binds) names fields that no event has: '
         "jobb (did you mean `job`?)"),
        (f'relation 3 of {mine} ("(run_id,task_idd) implies stauts", implies) names fields that no event has: '
         "task_idd (did you mean `task_id`?), stauts (did you mean `status`?)"),
        (f'relation 4 of {mine} ("tie jobs", binds) tied nothing: no event is named \'task dispached\' '
         "(did you mean `task dispatched`?)"),
        (f'relation 5 of {mine} ("job startd .. job finished encloses task_id", encloses) enclosed nothing: '
         "no event is named 'job startd' (did you mean `job started`?)"),
        f'relation 6 of {mine} ("queue", implies) copied nothing: each group it found holds two values (1 left unchanged)',
        (f'relation 7 of {mine} ("status of a worker", binds) tied nothing: no \'job started\' event has both '
         "(run_id, worker) and (status)"),
        # it enclosed the task's moves, as its intervals never end
        (f'relation 9 of {mine} ("job spans", encloses) closes no interval: no event is named \'job finishd\' '
         "(did you mean `job finished`?), so each runs to the next start"),
    ]
    # given again, "job to task" finds its work done: that is no mistake, and says nothing
    assert notes_again == notes


# ---- a real run ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def json_run_baseline(tmp_path_factory):
    """The corpus JSON-log run as the shipped relations relate it (events by (file, line))."""
    folder = tmp_path_factory.mktemp("baseline")
    return stored(folder, "before", corpus_path("parsl-htex-jsonlog"))[0]


def test_implies_on_a_real_run(tmp_path, json_run_baseline):
    relations = write_relations(tmp_path / "mine.toml", """
[[relation]]
kind = "implies"
key = ["run_id", "task_id"]
fields = ["executor_label"]
""")
    after, report = stored(tmp_path, "after", corpus_path("parsl-htex-jsonlog"), [relations])
    labels: dict[tuple, set] = {}
    for row in json_run_baseline.values():
        if row["run_id"] and row["task_id"] and row["executor_label"]:
            labels.setdefault((row["run_id"], row["task_id"]), set()).add(row["executor_label"])
    expected = {
        key: {"executor_label": (None, next(iter(labels[(row["run_id"], row["task_id"])])))}
        for key, row in json_run_baseline.items()
        if row["executor_label"] is None and len(labels.get((row["run_id"], row["task_id"]), ())) == 1
    }
    assert len(expected) > 100  # the DFK's own lines about a task name no executor
    assert differences(json_run_baseline, after) == expected
    assert report.relate.joined_share == 1.0


def test_binds_into_attrs_on_a_real_run(tmp_path, json_run_baseline):
    relations = write_relations(tmp_path / "mine.toml", """
[[relation]]
kind = "binds"
from = ["run_id", "task_id"]
to = ["dependencies"]
on = "task.submitted"
""")
    after, _ = stored(tmp_path, "after", corpus_path("parsl-htex-jsonlog"), [relations])
    bound = {(row["run_id"], row["task_id"]): row["attrs"]["dependencies"]
             for row in json_run_baseline.values() if row["event"] == "task.submitted"}
    expected = {
        key: {"attrs": ({}, {"dependencies": bound[(row["run_id"], row["task_id"])]})}
        for key, row in json_run_baseline.items()
        if (row["run_id"], row["task_id"]) in bound and "dependencies" not in (row["attrs"] or {})
    }
    assert len(expected) > 100
    assert differences(json_run_baseline, after) == expected


def test_encloses_on_a_real_run(tmp_path, json_run_baseline):
    # the interchange's lines after it removes a task from a manager, up to the next such line
    # (an end that names another task closes nothing; one that names none is enclosed itself)
    relations = write_relations(tmp_path / "mine.toml", """
[[relation]]
kind = "encloses"
start = "htex.interchange.removed"
end = "Sent result on results_outgoing"
key = ["executor_task_id"]
within = ["run_id", "file"]
""")
    after, _ = stored(tmp_path, "after", corpus_path("parsl-htex-jsonlog"), [relations])
    enclosed = reference_encloses(json_run_baseline, "htex.interchange.removed", "Sent result on results_outgoing")
    assert len(enclosed) > 20
    changes = differences(json_run_baseline, after)
    assert changes.keys() == enclosed.keys()
    launched = {(row["run_id"], row["executor_label"], row["executor_task_id"]): (row["task_id"], row["try_id"])
                for row in json_run_baseline.values() if row["event"] == "task.launched"}
    for key, executor_task_id in enclosed.items():
        row = after[key]
        assert row["executor_task_id"] == executor_task_id
        # ... and, through the shipped binding, the task and try that executor task ran
        assert (row["task_id"], row["try_id"]) == launched[(row["run_id"], row["executor_label"], executor_task_id)]


def reference_encloses(events: dict, start: str, end: str) -> dict:
    """(file, line) -> executor task id, by the definition, in Python: within one (run, file),
    in time order, an event lacking the key after a start, up to the first end with its key."""
    groups: dict[tuple, list] = {}
    for key, row in events.items():
        if row["run_id"] is not None:
            groups.setdefault((row["run_id"], key[0]), []).append(((row["ts"], key[1]), key, row))
    enclosed = {}
    for members in groups.values():
        open_key, closed = None, False
        for _, key, row in sorted(members, key=lambda member: member[0]):
            if row["event"] == start:
                open_key, closed = row["executor_task_id"], False
                continue
            if open_key is not None and not closed and row["executor_task_id"] is None:
                enclosed[key] = open_key
            if row["event"] == end and row["executor_task_id"] == open_key:
                closed = True
    return enclosed
