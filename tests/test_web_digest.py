"""Run digests: the run page's analyses stored at ingest equal the ones computed on demand,
are recomputed when the run's events change, and are never written for a run still going."""

from __future__ import annotations

import shutil

import pandas.testing as pdt

import taskscope
from conftest import corpus_path
from taskscope import digests


def stored(con, run_id: str) -> dict | None:
    """Every section stored for `run_id`, or None if any is missing or stale."""
    sections = {name: digests.stored_section(con, run_id, name) for name in digests.SECTIONS}
    return None if any(parts is None for parts in sections.values()) else sections


def computed(con, run_id: str) -> dict:
    return {name: compute(con, run_id) for name, compute in digests.SECTIONS.items()}


def assert_same_analyses(stored: dict, computed: dict) -> None:
    assert set(stored) == set(computed) == set(digests.SECTIONS)
    for name in computed:
        assert set(stored[name]) == set(computed[name])
        for part in computed[name]:
            pdt.assert_frame_equal(stored[name][part], computed[name][part], obj=f"{name}.{part}")


def test_stored_digest_equals_the_analyses_computed_now(corpus_run):
    store = taskscope.open(":memory:")
    store.ingest(corpus_run)
    (run_id,) = store.runs().run_id
    kept = stored(store.con, run_id)
    assert kept is not None, "ingest did not store the digest of an ended run"
    now = computed(store.con, run_id)
    assert_same_analyses(kept, now)
    assert now["run"]["totals"].tasks.iloc[0] == len(now["tasks"]["tasks"]) == len(store.tasks(run_id)) > 0
    pdt.assert_frame_equal(kept["row"]["row"], store.runs())  # the run's row of the runs table
    # the parts each page reads are stored (a page missing one would compute them all per ingest)
    from taskscope.web.pages.run import JSON_PARTS, PAGE_PARTS

    for parts in (PAGE_PARTS, JSON_PARTS):
        assert digests.stored_section(store.con, run_id, "run", parts) is not None


def test_digest_is_recomputed_when_an_ingest_adds_events_to_the_run(tmp_path):
    corpus = corpus_path("parsl-2025-textlog")
    store = taskscope.open(tmp_path / "s.duckdb")
    store.ingest(corpus / "000")  # the logs first: monitoring.db adds events to the same run later
    (run_id,) = store.runs().run_id
    first_fingerprint = digests.fingerprint(store.con, run_id)
    assert stored(store.con, run_id) is not None
    store.ingest(corpus / "monitoring.db")
    assert digests.fingerprint(store.con, run_id) != first_fingerprint
    assert store.sql("SELECT DISTINCT fingerprint FROM run_digests").fingerprint.tolist() == [
        digests.fingerprint(store.con, run_id)]
    after = stored(store.con, run_id)
    assert after is not None
    assert_same_analyses(after, computed(store.con, run_id))
    store.close()
    # a stale digest is not used: the read-only dashboard computes instead
    with taskscope.open(tmp_path / "s.duckdb") as writable:
        writable.con.execute("UPDATE run_digests SET fingerprint = 'stale', store_fingerprint = 'stale'")
    with taskscope.open(tmp_path / "s.duckdb", read_only=True) as read_only:
        assert stored(read_only.con, run_id) is None
        on_demand = {name: digests.section(read_only.con, run_id, name) for name in digests.SECTIONS}
        assert_same_analyses(on_demand, after)


def test_a_run_still_going_gets_no_digest_until_it_ends(tmp_path):
    corpus = corpus_path("parsl-2025-textlog")
    run_folder = tmp_path / "runinfo" / "000"
    shutil.copytree(corpus / "000", run_folder)
    log = run_folder / "parsl.log"
    lines = log.read_text().splitlines(keepends=True)
    log.write_text("".join(lines[: len(lines) // 2]))  # the run as it was half way through
    store = taskscope.open(":memory:")
    store.ingest(tmp_path / "runinfo")
    (run_id,) = store.runs().run_id
    assert store.runs().status.iloc[0] == "unfinished"
    assert stored(store.con, run_id) is None
    half = digests.section(store.con, run_id, "run")  # computed on demand
    with log.open("a") as appended:
        appended.write("".join(lines[len(lines) // 2:]))
    store.ingest(tmp_path / "runinfo")
    assert store.runs().status.iloc[0] == "failed"  # ended, with its one failed task
    kept = stored(store.con, run_id)
    assert kept is not None
    assert_same_analyses(kept, computed(store.con, run_id))
    assert kept["run"]["totals"].done.iloc[0] > half["totals"].done.iloc[0]


def test_ingesting_another_run_keeps_the_digest_of_the_first(tmp_path):
    store = taskscope.open(tmp_path / "s.duckdb")
    store.ingest(corpus_path("parsl-htex-jsonlog"))
    (first,) = store.runs().run_id
    frames_before = store.sql("SELECT section, part, frame FROM run_digests ORDER BY ALL")
    store.ingest(corpus_path("parsl-mixed-textlog"))
    assert len(store.runs()) == 2
    stamps = store.sql("SELECT DISTINCT fingerprint, store_fingerprint FROM run_digests WHERE run_id = ?", [first])
    # restamped with the store's new state, without recomputing: the run's own events did not change
    assert stamps.store_fingerprint.tolist() == [digests.store_fingerprint(store.con)]
    assert stamps.fingerprint.tolist() == [digests.fingerprint(store.con, first)]
    frames_after = store.sql("SELECT section, part, frame FROM run_digests WHERE run_id = ? ORDER BY ALL", [first])
    assert frames_after[["section", "part"]].equals(frames_before[["section", "part"]])
    assert_same_analyses(stored(store.con, first), computed(store.con, first))
    store.close()
