"""A task's page lists every try of its task with the exception of each one that failed, for any
stream, as the analyses count them (`taskscope.analyses.tasks.FAILED_TRIES`): failures logged
without a try id, and a failed task whose last try nothing recorded (`unknown` when no event
names its exception).

The stream is a JSON-lines run written from a plan of what each try did (the plan is the truth),
with and without try ids; pages load in real Chromium from a real server on 127.0.0.1.
"""

from __future__ import annotations

import pytest
from test_analyses_time import FAILURE_PLAN, NO_TRY_IDS_PLAN, failure_stream
from test_web import Server, Watched, browser  # noqa: F401 (browser is a fixture)

import taskscope
from taskscope.web.dashboard import Dashboard


@pytest.mark.parametrize("try_ids", [True, False], ids=["tries-with-ids", "no-try-ids"])
def test_the_tries_table_shows_each_failed_try_of_any_stream(tmp_path, browser, try_ids):
    truth = failure_stream(tmp_path / "run.jsonl", FAILURE_PLAN if try_ids else NO_TRY_IDS_PLAN, try_ids)
    store = taskscope.open(":memory:")
    store.ingest(tmp_path / "run.jsonl")
    server = Server(Dashboard(store))
    watched = Watched(browser)
    try:
        for task_id, per_try in truth.items():
            expected = [(str(try_id), exception or "") for try_id, exception in enumerate(per_try)]
            watched.visit(f"{server.url}/runs/r-7/tasks/{task_id}")
            rows = [row.locator("td").all_inner_texts() for row in watched.page.locator("#tries tbody tr").all()]
            assert [(row[0], row[-1]) for row in rows] == expected, task_id
            tries = server.json(f"/api/runs/r-7/tasks/{task_id}")["tries"]
            assert [(str(t["try_id"]), t["exception_type"] or "") for t in tries] == expected, task_id
        assert not watched.problems
    finally:
        watched.close()
        server.stop()
        store.close()
