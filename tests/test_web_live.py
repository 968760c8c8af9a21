"""A live dashboard's answers while its ingest runs beside them: each answer is one state of the
store, never a mix of two ingests.

The run is a corpus run's JSON logs replayed into a folder in time order, a slice at a time, so
the real live ingest (`taskscope ui PATH`'s thread) reads it as it grows, as it reads a running
Parsl run; requests come from threads polling a real server on 127.0.0.1.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb
import pytest
from conftest import corpus_path
from test_web import Server

import taskscope
from taskscope.web.dashboard import open_dashboard

#: the replayed run: HTEX, 27 tasks, 2 of them failing
REPLAYED = "parsl-htex-jsonlog"
#: slices the replay appends, one every `SLICE_PAUSE_S`
SLICES = 30
SLICE_PAUSE_S = 0.3


def log_lines(run: Path) -> dict[Path, list[tuple[float, bytes]]]:
    """Every JSON log line of `run`'s folder with its time, per file (relative path)."""
    lines = {}
    for path in sorted(run.glob("000/**/*.jsonlog")):
        rows = path.read_bytes().splitlines(keepends=True)
        lines[path.relative_to(run)] = [(json.loads(row)["created"], row) for row in rows]
    return lines


def replay(lines: dict[Path, list[tuple[float, bytes]]], runinfo: Path, stop: threading.Event,
           generation: Callable[[], int]) -> None:
    """Append each file's lines to its copy under `runinfo` in time order, as the run's processes
    wrote them: in `SLICES` slices of about as many lines each, the next `SLICE_PAUSE_S` after
    the live ingest stored the one before (`generation()` grew), so that the run goes through
    as many states however loaded the machine is."""
    times = sorted(ts for rows in lines.values() for ts, _ in rows)
    written = dict.fromkeys(lines, 0)
    for index in range(1, SLICES + 1):
        until = times[min(len(times), len(times) * index // SLICES) - 1]
        for name, rows in lines.items():
            upto = next((i for i, (ts, _) in enumerate(rows) if ts > until), len(rows))
            if upto > written[name]:
                target = runinfo / name
                target.parent.mkdir(parents=True, exist_ok=True)
                with target.open("ab") as out:
                    out.write(b"".join(row for _, row in rows[written[name]:upto]))
                written[name] = upto
        before, deadline = generation(), time.time() + 60
        while generation() == before and time.time() < deadline:
            if stop.wait(0.02):
                return
        if stop.wait(SLICE_PAUSE_S):
            return


def answer(url: str) -> dict | None:
    """The JSON at `url`, or None while it is 404 (the run is not in the store yet)."""
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as error:
        if error.code == 404:
            return None
        raise


def mixed(run_json: dict) -> list[str]:
    """What disagrees inside one `/api/runs/RUN` answer: the run's row, its totals and its apps
    count the same tasks, and its status says whether any of them failed."""
    run, totals, apps = run_json["run"], run_json["totals"], run_json["apps"]
    failed = sum(app["failed"] + app["dep_fail"] for app in apps)
    done = sum(app["exec_done"] + app["memo_done"] for app in apps)
    counts = {"tasks": (run["tasks"], sum(app["tasks"] for app in apps)),
              "done": (run["tasks_done"], done), "failed or dep_fail": (run["tasks_failed"], failed)}
    if totals:
        counts = {name: (*pair, totals[0][key]) for (name, pair), key in zip(counts.items(), ("tasks", "done", "failed"))}
    problems = [f"{name}: run, apps(, totals) say {values}" for name, values in counts.items() if len(set(values)) > 1]
    if (run["status"] == "failed") != (failed > 0) and run["status"] in ("failed", "completed"):
        problems.append(f"status {run['status']} with {failed} tasks failed or dep_fail in the apps")
    return problems


@contextmanager
def polled(url: str, threads: int = 3) -> Iterator[list[dict]]:
    """Poll `url` from `threads` threads until the block ends; yields the answers (not 404) so far."""
    answers: list[dict] = []
    errors: list[BaseException] = []
    done = threading.Event()

    def poll() -> None:
        while not done.is_set():
            try:
                got = answer(url)
            except BaseException as exc:  # noqa: BLE001 - reported by the test
                errors.append(exc)
                return
            if got is not None:
                answers.append(got)

    pollers = [threading.Thread(target=poll, daemon=True) for _ in range(threads)]
    for poller in pollers:
        poller.start()
    try:
        yield answers
    finally:
        done.set()
        for poller in pollers:
            poller.join(60)
    assert not errors, errors


def test_every_answer_during_a_live_ingest_is_one_state_of_the_store(tmp_path):
    source = corpus_path(REPLAYED)
    lines = log_lines(source)
    truth = taskscope.open(":memory:")
    truth.ingest(*(source / name for name in lines))
    expected = truth.runs().iloc[0]
    runinfo = tmp_path / "runinfo"
    runinfo.mkdir()
    dashboard = open_dashboard(str(tmp_path / "live.duckdb"), [str(runinfo)], interval_s=0.02)
    server = Server(dashboard)
    stop = threading.Event()
    try:
        # more requests at once than the server has worker threads (40): a reader waiting for
        # the view another reader has must hold none of them
        with polled(f"{server.url}/api/runs/{expected.run_id}") as answers, polled(f"{server.url}/api/runs", 45):
            replay(lines, runinfo, stop, lambda: dashboard.live.generation)
            deadline = time.time() + 60  # until the dashboard has read the whole run
            while not answers or answers[-1]["run"]["tasks_failed"] != expected.tasks_failed \
                    or answers[-1]["run"]["events"] != expected.events:
                assert time.time() < deadline, "the live dashboard never showed the whole run"
                time.sleep(0.1)
    finally:
        stop.set()
        server.stop()
        dashboard.store.close()
    assert len(answers) > 10, f"only {len(answers)} answers while the run grew"
    assert len({a["run"]["events"] for a in answers}) > 5, "the answers saw too few states of the run"
    mixes = [(a["run"]["events"], problem) for a in answers for problem in mixed(a)]
    assert not mixes, f"{len(mixes)} answers of {len(answers)} mixed two states: {mixes[:5]}"
    final = answers[-1]["run"]
    assert (final["status"], final["tasks"], final["tasks_done"], final["tasks_failed"]) == \
        (expected.status, expected.tasks, expected.tasks_done, expected.tasks_failed)


def test_a_held_view_whose_query_failed_is_given_to_no_other_reader(tmp_path):
    """DuckDB refuses every query of a transaction after one failed: a held connection in that
    state is closed, not handed to the next reader; the others go on serving the held state."""
    from taskscope.web.live import HeldView

    with taskscope.open(tmp_path / "s.duckdb") as store:
        store.ingest(corpus_path(REPLAYED))
        held = HeldView(store, generation=1, readers=2)
        with held.try_enter() as view:
            with held.try_enter() as beside:  # a second reader at once, on a connection of its own
                assert beside.con is not view.con
                assert held.try_enter() is None, "three readers on two connections"
            assert view.con.execute("SELECT count(*) FROM events").fetchone()[0] > 0
        with held.try_enter() as view, pytest.raises(duckdb.Error):
            view.con.execute("SELECT * FROM no_such_table")
        assert not held.broken and not held.closed
        with held.try_enter() as other:  # the one left
            assert other.con is not view.con and other.con.execute("SELECT count(*) FROM events").fetchone()[0] > 0
            with pytest.raises(duckdb.Error):
                other.con.execute("SELECT * FROM no_such_table")
        assert held.broken and held.closed and held.try_enter() is None
        held.retire()


def test_readers_of_a_held_view_see_its_state_side_by_side_while_an_ingest_commits(tmp_path):
    """Every connection of a held view was begun before the ingest: each reads the state from
    before it, whatever the ingest commits meanwhile."""
    from taskscope.web.live import HeldView

    with taskscope.open(tmp_path / "s.duckdb") as store:
        store.ingest(corpus_path("parsl-htex-jsonlog"))
        before = store.con.execute("SELECT count(*) FROM events").fetchone()[0]
        held = HeldView(store, generation=1, readers=3)
        store.ingest(corpus_path("parsl-mixed-textlog"))
        after = store.con.execute("SELECT count(*) FROM events").fetchone()[0]
        views = [held.try_enter() for _ in range(3)]
        assert after > before and all(views) and len({id(v.con) for v in views}) == 3
        assert [v.con.execute("SELECT count(*) FROM events").fetchone()[0] for v in views] == [before] * 3
        for view in views:
            view.close()
        held.retire()
        assert held.closed


def test_a_view_beside_the_usage_collector_has_the_generation_of_the_commits_it_sees(tmp_path):
    """Beside the usage collector a page is cached under the count of its commits. The count is
    read inside the page's own transaction: read before it began, a commit landing in between
    left the page showing the state before that commit, cached as the state after it (until
    the next commit, or for good on a collector that had nothing more to store)."""
    from taskscope.usage.storage import create_usage_tables
    from taskscope.web.dashboard import Dashboard
    from taskscope.web.server import committed_batches

    store = taskscope.open(str(tmp_path / "usage.duckdb"))
    create_usage_tables(store.con)
    collector = store.con.cursor()

    def a_commit_lands_as_the_count_is_read(con):
        seen = committed_batches(con)
        collector.execute("INSERT INTO usage_spool_commits (segment, parsed) VALUES ('s', 1)")  # committed
        return seen

    dashboard = Dashboard(store, committed=a_commit_lands_as_the_count_is_read)
    for expected in range(3):
        with dashboard.reader() as con:
            assert dashboard.generation_of(con) == committed_batches(con) == expected
    with dashboard.reader() as con:  # each commit is seen by the next view, under its own count
        assert committed_batches(con) == 3
    store.close()
