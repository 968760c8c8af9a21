"""Between two events: how many tasks (or tries) have passed event A but not yet event B,
at every moment. These are the implicit queues of a run, which no component logs as such:
tasks waiting in the DFK for launch, tasks queued in the interchange, tasks running on workers.

An entity enters the queue at an A and leaves it at the next B; a second A while it is inside
changes nothing, and a B with no A before it is ignored, so counts are never negative and a
task retried through the same stage enters it once per try.
"""

from __future__ import annotations

import pandas as pd

from taskscope._sql import connection_of, of_run
from taskscope.analyses.runs import resolve_run
from taskscope.analyses.selectors import Selector, parse_selector, task_events_sql

#: the queues a Parsl run with HTEX has: name -> (event entering it, event leaving it).
#: A task leaves the DFK's queue when launched, or when it ends there without a launch (its
#: dependency failed, its result was memoized).
STANDARD_QUEUES: dict[str, tuple[str, str]] = {
    "waiting in DFK": ("state:pending", "task.launched | state:dep_fail | state:failed | state:memo_done"),
    "queued in interchange": ("htex.interchange.queued", "htex.interchange.sent"),
    "running on worker": ("htex.worker.received", "htex.worker.finished"),
}
#: why a standard queue's events may be missing from a run, for the note that it was left out
WHY_MISSING: dict[str, str] = {
    "waiting in DFK": "the DFK's log (parsl.log) has no state changes or launches for it",
    "queued in interchange": "the interchange logs each task it queues only at DEBUG level, which "
                             "Parsl's default text log leaves out (JSONLogging keeps it)",
    "running on worker": "no HTEX worker logs (another executor, or the worker logs were not ingested)",
}
#: why a queue is missing when the run has no log at all of the process that holds it
WHY_NO_LOG: dict[str, tuple[str, str]] = {
    "queued in interchange": ("interchange", "the run has no interchange log (an executor other than HTEX, "
                                             "or the interchange's log was not ingested)"),
}


def _selectors(event_a: str | Selector, event_b: str | Selector) -> dict[str, Selector]:
    def parsed(selector: str | Selector, name: str) -> Selector:
        return parse_selector(selector.text if isinstance(selector, Selector) else selector, name)

    return {"a": parsed(event_a, "a"), "b": parsed(event_b, "b")}


def tagged_events_sql(con, event_a: str | Selector, event_b: str | Selector, run_id: str | None,
                      per: str) -> tuple[str, dict]:
    """SQL (and its parameters) for the task events matching A (tag 'a') or B (tag 'b'), an event
    matching both counted as A; raises `SelectorError` if a selector matches no event of the run.

    The common first step of `between` and `latency.latency`.
    """
    selectors = _selectors(event_a, event_b)
    for selector in selectors.values():
        selector.require_matches(con, run_id)
    tagged, params = task_events_sql(selectors, per)
    return _a_wins(tagged), params


def crossings_sql(per: str = "task") -> str:
    """SQL (over a CTE `tagged` holding `task_events_sql` rows tagged 'a' and 'b'): the events
    where an entity enters (`change` +1) or leaves (-1) the stretch between A and B.

    Shared with `latency`, which pairs each entry with the exit that follows it.
    """
    entity = "run_id, task_id" + (", try_id" if per == "try" else "")
    return f"""
    ordered AS (
        SELECT *, lag(tag) OVER (PARTITION BY {entity} ORDER BY ts, file_id, line, tag) AS previous_tag
        FROM tagged
    ),
    crossings AS (
        SELECT *, CASE WHEN tag = 'a' THEN 1 ELSE -1 END AS change
        FROM ordered
        WHERE (tag = 'a' AND previous_tag IS DISTINCT FROM 'a') OR (tag = 'b' AND previous_tag = 'a')
    )"""


def between(store, event_a: str | Selector, event_b: str | Selector, run: str | None = None,
            per: str = "task") -> pd.DataFrame:
    """Number of tasks (`per="task"`) or tries (`per="try"`) that have passed `event_a` but not
    yet `event_b`, after every change: columns `run_id`, `ts`, `count`.

    Exact: one row per time at which the count changes (changes at the same instant are
    summed). Events are selectors (see `taskscope.analyses.selectors`). An event matching both
    selectors counts as A. Raises `SelectorError` if a selector matches no event.

    >>> between(store, "htex.interchange.queued", "htex.interchange.sent", run="000")  # doctest: +SKIP
    >>> between(store, "state:running@monitoring", "state:running_ended@monitoring", per="try")  # doctest: +SKIP
    """
    con = connection_of(store)
    run_id = resolve_run(con, run)
    tagged, params = tagged_events_sql(con, event_a, event_b, run_id, per)
    return con.execute(
        f"""
        WITH tagged AS ({tagged}), {crossings_sql(per)},
        per_instant AS (SELECT run_id, ts, sum(change) AS change FROM crossings GROUP BY run_id, ts)
        SELECT run_id, ts,
               CAST(sum(change) OVER (PARTITION BY run_id ORDER BY ts
                                      ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS BIGINT) AS count
        FROM per_instant
        ORDER BY run_id, ts
        """,
        {**params, "run": run_id},
    ).df()


def _a_wins(tagged: str) -> str:
    """Drop the 'b' copy of an event that both selectors match."""
    return f"""
        SELECT * FROM ({tagged}) t
        QUALIFY NOT (tag = 'b' AND bool_or(tag = 'a') OVER (PARTITION BY run_id, task_id, try_id, file_id, line))"""


def standard_queues(store, run: str | None = None, per: str = "task") -> pd.DataFrame:
    """The three queues of a Parsl run with HTEX, in one long frame: `run_id`, `queue`, `ts`,
    `count`. Queues whose events the run does not have (no HTEX, no interchange logs) are
    left out rather than failing.

    - waiting in DFK: `state:pending` to `task.launched` (or a final state reached unlaunched)
    - queued in interchange: `htex.interchange.queued` to `htex.interchange.sent`
    - running on worker: `htex.worker.received` to `htex.worker.finished`

    >>> standard_queues(store, run="000").groupby("queue")["count"].max()   # doctest: +SKIP
    """
    con = connection_of(store)
    run_id = resolve_run(con, run)
    absent = _absent_events(con, run_id)
    frames = [between(con, event_a, event_b, run_id, per).assign(queue=queue)
              for queue, (event_a, event_b) in STANDARD_QUEUES.items() if queue not in absent]
    if not frames:
        return pd.DataFrame({"run_id": pd.Series(dtype="str"), "queue": pd.Series(dtype="str"),
                             "ts": pd.Series(dtype="float64"), "count": pd.Series(dtype="int64")})
    return pd.concat(frames, ignore_index=True)[["run_id", "queue", "ts", "count"]]


def missing_queues(store, run: str | None = None) -> dict[str, str]:
    """The standard queues `standard_queues` leaves out, each with why: which of its events the
    run (or, without `run`, the store) lacks, and what usually causes that.

    >>> missing_queues(store, run="000")   # doctest: +SKIP
    {'queued in interchange': 'no htex.interchange.queued events: the interchange logs ...'}
    """
    con = connection_of(store)
    run_id = resolve_run(con, run)
    return {queue: f"no {' nor '.join(events)} events: {_why_missing(con, run_id, queue)}"
            for queue, events in _absent_events(con, run_id).items()}


def _absent_events(con, run_id: str | None) -> dict[str, list[str]]:
    """The standard queues whose events the run lacks, each with the selectors of those events."""
    absent = {}
    for queue, (event_a, event_b) in STANDARD_QUEUES.items():
        events = [selector.text for selector in _selectors(event_a, event_b).values() if not selector.count(con, run_id)]
        if events:
            absent[queue] = events
    return absent


def _why_missing(con, run_id: str | None, queue: str) -> str:
    if queue in WHY_NO_LOG:
        source, why = WHY_NO_LOG[queue]
        logged = con.execute(f"SELECT count(*) FROM events WHERE source = $source AND {of_run()}",
                             {"source": source, "run": run_id}).fetchall()[0][0]
        if not logged:
            return why
    return WHY_MISSING[queue]
