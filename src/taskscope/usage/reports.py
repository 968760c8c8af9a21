"""Aggregates over usage messages in a store, for the usage dashboard, reports and notebooks.

Every function takes a `taskscope.Store` or a DuckDB connection (filled by `taskscope usage
collect`), an optional `product` ("parsl", or the `product` a `UsageTracker` names) and
optional `since` and `until` (epoch seconds: only runs dated from `since` and before `until`; a
version's "first seen" still counts every run), and returns a pandas DataFrame. A *run* is one
correlator: its start message (levels 1-3) and, at level 3, its end message; either may be
missing (UDP loses datagrams). A run is dated by its start message's `start`, else its end
message's `end` (epoch seconds, as Parsl sends), else by when it arrived; a time more than a
day after its arrival, or before its version's release (or the product's first), is flagged
and not used. Every field is checked against the protocol (levels 1-3 as integers, versions
that parse, counts as non-negative integers, ...): an invalid value is no value on any report
and is counted, with its reason, by `invalid_fields`. A message with a key twice is read by its
first value (as DuckDB and `taskscope.usage.protocol.decode` do) and flagged "duplicate key".
Parsl's messages have no `product` field: a `parsl_v` field (or any `<name>_v` besides
`python_v`) names it.

>>> import taskscope
>>> from taskscope.usage import reports
>>> reports.leaderboard(taskscope.open("usage.duckdb"))      # doctest: +SKIP
"""

from __future__ import annotations

import re

import orjson
import pandas as pd

from taskscope._sql import connection_of, scalar
from taskscope.usage import rollups
from taskscope.usage.derivation import (  # noqa: F401 - part of this module's interface, as before
    _INTERNAL_COLUMNS,
    _RUNS,
    PARSL_BORN,
    PYTHON_PATTERN,
    RELEASES_VARIABLE,
    RUNS_SCOPE,
    RUNS_TABLE_SOURCE,
    TIME_TOLERANCE_SECONDS,
    VERSION_PATTERN,
    _release_params,
    parse_since,
    release_dates,
)

#: the periods `runs_over_time` counts by
PERIODS = ("hour", "day", "week", "month", "quarter", "year")


def _query(store, sql: str, product: str | None, since: float | None = None, until: float | None = None,
           releases: pd.DataFrame | None = None, **params) -> pd.DataFrame:
    con = connection_of(store)
    release_params = _release_params(releases)
    with snapshot(con):  # the runs table's state and the query: one view of the store
        return _query_in(con, rollups.runs_source(con, release_params), sql, product, since, until, release_params,
                         **params)


class snapshot:
    """A read transaction on `con` for the `with` block, unless one is open already (the caller's):
    reports made inside one see the same store, and check only once that the runs table is current.

    >>> with snapshot(con):                            # doctest: +SKIP
    ...     runs, totals = report(con, "over-time"), report(con, "totals")
    """

    def __init__(self, con) -> None:
        self.con, self.began = con, False

    def __enter__(self) -> None:
        # inside a transaction, two statements share its id; outside, each is a transaction of its
        # own (a BEGIN inside a transaction would fail, and abort the caller's transaction)
        ids = [scalar(self.con, "SELECT txid_current()") for _ in range(2)]
        if ids[0] != ids[1]:
            self.con.execute("BEGIN TRANSACTION")
            self.began = True

    def __exit__(self, *exc_info) -> None:
        if self.began:
            self.con.execute("ROLLBACK")  # it only read


def _query_in(con, source: str, sql: str, product: str | None, since: float | None, until: float | None,
              release_params: dict, **params) -> pd.DataFrame:
    # product_runs: every run of the product (for "first seen"); usage_runs: those dated in [since, until)
    # over the runs table, each use of a CTE reads the table itself (only the columns it needs),
    # rather than a materialised copy of every column; a derivation is made once
    inline = "NOT MATERIALIZED " if source == RUNS_TABLE_SOURCE else ""
    bounds = [clause for clause, value in (("ts >= $since", since), ("ts < $until", until)) if value is not None]
    runs_cte = (f"WITH product_runs AS {inline}(SELECT * FROM ({source})"
                + (" WHERE product = $product" if product is not None else "") + "), "
                f"usage_runs AS {inline}(SELECT * FROM product_runs"
                + (f" WHERE {' AND '.join(bounds)}" if bounds else "") + ")")
    sql = sql.strip()
    # a query with its own CTEs continues the WITH list
    text = f"{runs_cte}, {sql[5:]}" if sql.startswith("WITH ") else f"{runs_cte} {sql}"
    given = {"product": product, "since": since, "until": until, "tolerance": TIME_TOLERANCE_SECONDS,
             "parsl_born": PARSL_BORN, **release_params, **params}
    # the runs table's source uses none of the derivation's parameters, and DuckDB refuses unused ones
    return con.execute(text, {key: value for key, value in given.items()
                              if re.search(rf"\${key}\b", text)}).df()


def usage_runs(store, product: str | None = None, since: float | None = None,
        until: float | None = None,
        releases: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per run: correlator, when seen, product, version, Python, platform, level,
    project_name, components, execution_time, task_count, failures, has_start, has_end.

    `components` holds each run's components as the message gave them (JSON values) and
    `invalid` its invalid fields: both lists, JSON in a CSV cell.

    >>> usage_runs(store, product="parsl")[["version", "tracking_level"]]   # doctest: +SKIP
    """
    frame = _query(store, f"SELECT * EXCLUDE ({', '.join(_INTERNAL_COLUMNS)}) FROM usage_runs ORDER BY ts, correlator",
                   product, since, until, releases)
    # DuckDB hands a JSON[] over as texts: decoded, the run list's JSON and CSV hold the values themselves
    frame["components"] = frame["components"].map(lambda items: [orjson.loads(item) for item in items],
                                                  na_action="ignore")
    frame["invalid"] = frame["invalid"].map(list, na_action="ignore")
    return frame


def runs_over_time(store, product: str | None = None, period: str = "day", since: float | None = None,
        until: float | None = None,
        releases: pd.DataFrame | None = None) -> pd.DataFrame:
    """Runs per `period` (hour, day, week, month, quarter, year) and product, oldest first.

    >>> runs_over_time(store, period="week")                   # doctest: +SKIP
    """
    if period not in PERIODS:
        raise ValueError(f"period must be one of {', '.join(PERIODS)}, not {period!r}")
    return _query(store, """
        WITH quarters AS (  -- counted per quarter-hour first: every time zone's periods are whole quarter-hours
            SELECT floor(ts / 900) AS quarter, product, count(*) AS runs FROM usage_runs GROUP BY ALL
        )
        SELECT date_trunc($period, to_timestamp(quarter * 900)) AS period, product, sum(runs)::BIGINT AS runs
        FROM quarters GROUP BY ALL ORDER BY period, product""", product, since, until, releases, period=period)


def _shares(store, column: str, product: str | None, name: str, since: float | None,
            until: float | None, releases: pd.DataFrame | None) -> pd.DataFrame:
    # `column` is one of this module's fixed expressions, never user text
    return _query(store, f"""
        SELECT {column} AS {name}, count(*) AS runs, count(*) / sum(count(*)) OVER () AS share
        FROM usage_runs WHERE {column} IS NOT NULL GROUP BY ALL ORDER BY runs DESC, {name}""", product, since, until, releases)


def python_versions(store, product: str | None = None, since: float | None = None,
        until: float | None = None,
        releases: pd.DataFrame | None = None) -> pd.DataFrame:
    """Runs per Python version (major.minor), most used first, with their share (of runs whose
    start message arrived: the same holds for platforms).

    >>> python_versions(store)                                 # doctest: +SKIP
    """
    return _shares(store, "python_minor", product, "python_version", since, until, releases)


def platforms(store, product: str | None = None, since: float | None = None,
        until: float | None = None,
        releases: pd.DataFrame | None = None) -> pd.DataFrame:
    """Runs per platform (`platform.system()`: Linux, Darwin, Windows), with their share.

    >>> platforms(store)                                       # doctest: +SKIP
    """
    return _shares(store, "platform", product, "platform", since, until, releases)


def levels(store, product: str | None = None, since: float | None = None,
        until: float | None = None,
        releases: pd.DataFrame | None = None) -> pd.DataFrame:
    """Runs per tracking level (an end message without its start counts as level 3).

    >>> levels(store)                                          # doctest: +SKIP
    """
    return _shares(store, "tracking_level", product, "tracking_level", since, until, releases)


def product_versions(store, product: str | None = None, since: float | None = None,
        until: float | None = None,
        releases: pd.DataFrame | None = None) -> pd.DataFrame:
    """Runs per product version, with its share of that product's runs and when first/last seen
    (runs whose start message was lost have no version and are left out).

    >>> product_versions(store, product="parsl")               # doctest: +SKIP
    """
    return _query(store, """
        SELECT product, version, count(*) AS runs,
               count(*) / sum(count(*)) OVER (PARTITION BY product) AS share,
               to_timestamp(min(ts)) AS first_seen, to_timestamp(max(ts)) AS last_seen
        FROM usage_runs WHERE version IS NOT NULL GROUP BY product, version ORDER BY product, runs DESC, version""",
        product, since, until, releases)


def components(store, product: str | None = None, since: float | None = None,
        until: float | None = None,
        releases: pd.DataFrame | None = None) -> pd.DataFrame:
    """Runs using each component (executor, provider, launcher, ...), from level 2 and 3 messages.

    `kind` comes from the class's module path (`parsl.executors.*` is an executor); `share` is
    the part of runs that reported components.

    >>> components(store).query("kind == 'executor'")          # doctest: +SKIP
    """
    return _query(store, """
        WITH used AS (SELECT unnest(component_names) AS component FROM usage_runs),
        reporting AS (SELECT count(*) FILTER (WHERE reports_components) AS n FROM usage_runs)
        SELECT component,
               CASE WHEN component LIKE '%.executors.%' THEN 'executor'
                    WHEN component LIKE '%.providers.%' THEN 'provider'
                    WHEN component LIKE '%.launchers.%' THEN 'launcher'
                    WHEN component LIKE '%.monitoring.%' THEN 'monitoring'
                    WHEN component LIKE '%.channels.%' THEN 'channel'
                    ELSE 'other' END AS kind,
               count(*) AS runs, count(*) / any_value(reporting.n) AS share
        FROM used, reporting GROUP BY ALL ORDER BY runs DESC, component""", product, since, until, releases)


_EXECUTION_BUCKETS = [(0, "< 1 s"), (1, "1-10 s"), (10, "10 s-1 min"), (60, "1-10 min"), (600, "10 min-1 h"),
                      (3600, "1-6 h"), (6 * 3600, "6-24 h"), (86400, ">= 1 day")]


def execution_times(store, product: str | None = None, since: float | None = None,
        until: float | None = None,
        releases: pd.DataFrame | None = None) -> pd.DataFrame:
    """How many level-3 runs took how long (execution_time of the end message), in fixed buckets.

    Every bucket is listed, empty ones with 0 runs.

    >>> execution_times(store)                                 # doctest: +SKIP
    """
    bounds = [low for low, _ in _EXECUTION_BUCKETS]
    labels = [label for _, label in _EXECUTION_BUCKETS]
    return _query(store, f"""
        WITH buckets AS (SELECT unnest($bounds) AS lower_seconds, unnest($labels) AS bucket,
                                generate_subscripts($bounds, 1) AS position),
        counted AS (SELECT {_bucket_position("execution_time", bounds)} AS position, count(*) AS runs
                    FROM usage_runs WHERE execution_time >= 0 GROUP BY ALL)
        SELECT bucket, lower_seconds, coalesce(counted.runs, 0) AS runs
        FROM buckets LEFT JOIN counted USING (position) ORDER BY position""", product, since, until, releases,
        bounds=bounds, labels=labels)


def _bucket_position(value: str, bounds: list) -> str:
    """SQL giving the 1-based position of the last of `bounds` (ascending numbers, this module's
    constants) at or below `value` (an expression of this module, never user text)."""
    cases = " ".join(f"WHEN {value} >= {float(low)!r} THEN {position}"
                     for position, low in reversed(list(enumerate(bounds, 1))))
    return f"CASE {cases} END"


def task_counts(store, product: str | None = None, since: float | None = None,
        until: float | None = None,
        releases: pd.DataFrame | None = None) -> pd.DataFrame:
    """How many level-3 runs ran how many tasks, in powers of ten (0, 1-9, 10-99, ...).

    >>> task_counts(store)                                     # doctest: +SKIP
    """
    return _query(store, """
        WITH counted AS (
            SELECT CASE WHEN task_count <= 0 THEN -1 ELSE floor(log10(task_count))::INTEGER END AS magnitude,
                   count(*) AS runs
            FROM usage_runs WHERE task_count IS NOT NULL GROUP BY ALL
        )
        SELECT CASE WHEN magnitude < 0 THEN '0'
                    ELSE format('{:,}-{:,}', (10 ** magnitude)::BIGINT, (10 ** (magnitude + 1))::BIGINT - 1) END
                   AS bucket,
               CASE WHEN magnitude < 0 THEN 0 ELSE (10 ** magnitude)::BIGINT END AS lower_tasks,
               sum(runs)::BIGINT AS runs
        FROM counted GROUP BY ALL ORDER BY lower_tasks""", product, since, until, releases)


def failure_rates(store, product: str | None = None, since: float | None = None,
        until: float | None = None,
        releases: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per product version, over level-3 runs: tasks, failed tasks, their rate, and runs with any failure.

    >>> failure_rates(store, product="parsl")                  # doctest: +SKIP
    """
    return _query(store, """
        SELECT product, version, count(*) AS runs, sum(task_count)::BIGINT AS tasks, sum(failures)::BIGINT AS failures,
               sum(failures) / nullif(sum(task_count), 0) AS failure_rate,
               count(*) FILTER (WHERE failures > 0) AS runs_with_failures,
               count(*) FILTER (WHERE failures > 0) / count(*) AS share_runs_with_failures
        FROM usage_runs WHERE task_count IS NOT NULL
        GROUP BY ALL ORDER BY product, version""", product, since, until, releases)


def leaderboard(store, product: str | None = None, since: float | None = None,
        until: float | None = None,
        releases: pd.DataFrame | None = None) -> pd.DataFrame:
    """Projects (`project_name`) by points: 1 per level 1 or 2 run, 2 per level 3 run (Parsl's rule).

    Runs without a project name are anonymous and not listed.

    >>> leaderboard(store).head(10)                            # doctest: +SKIP
    """
    return _query(store, """
        SELECT rank() OVER (ORDER BY points DESC) AS rank, * FROM (
            SELECT project_name, count(*) AS runs, count(*) FILTER (WHERE tracking_level = 3) AS level3_runs,
                   sum(CASE WHEN tracking_level = 3 THEN 2 ELSE 1 END)::BIGINT AS points
            FROM usage_runs WHERE project_name IS NOT NULL AND tracking_level BETWEEN 1 AND 3
            GROUP BY project_name)
        ORDER BY rank, project_name""", product, since, until, releases)


_AGE_BUCKETS = [(0, "< 1 week"), (7, "1-4 weeks"), (28, "1-3 months"), (91, "3-6 months"), (182, "6-12 months"),
                (365, "1-2 years"), (730, ">= 2 years")]


def installation_age(store, product: str | None = None, since: float | None = None,
        until: float | None = None, releases: pd.DataFrame | None = None) -> pd.DataFrame:
    """How old installations are: per run, its time minus its version's release date, bucketed.

    Parsl's versions are their release dates (YYYY.MM.DD); other products' come from `releases`
    (`release_dates()`: the maintainer's table, by default the file TASKSCOPE_USAGE_RELEASES
    names). A version with no release date falls back to when it was first seen in this store
    (retention moves that later): `runs_first_seen` says how many of a bucket's runs were aged so.
    Every bucket is listed; runs without a valid version are left out.

    >>> installation_age(store, product="parsl")               # doctest: +SKIP
    """
    bounds = [low for low, _ in _AGE_BUCKETS]
    return _query(store, f"""
        WITH aged AS (
            SELECT greatest(ts - coalesce(version_released, first_seen), 0) / 86400 AS age_days,
                   version_released IS NULL AS by_first_seen
            FROM usage_runs JOIN (SELECT product, version, min(ts) AS first_seen FROM product_runs
                                  WHERE version IS NOT NULL GROUP BY ALL) USING (product, version)
        ), buckets AS (SELECT unnest($bounds) AS lower_days, unnest($labels) AS bucket,
                              generate_subscripts($bounds, 1) AS position),
        tallied AS (
            SELECT {_bucket_position("age_days", bounds)} AS position, count(*) AS runs,
                   count(*) FILTER (WHERE by_first_seen) AS runs_first_seen
            FROM aged GROUP BY ALL),
        counted AS (
            SELECT position, bucket, lower_days, coalesce(t.runs, 0) AS runs, coalesce(t.runs_first_seen, 0) AS runs_first_seen
            FROM buckets LEFT JOIN tallied t USING (position))
        SELECT bucket, lower_days, runs, runs / nullif(sum(runs) OVER (), 0) AS share, runs_first_seen
        FROM counted ORDER BY position""", product, since, until, releases,
        bounds=bounds, labels=[label for _, label in _AGE_BUCKETS])


def totals(store, product: str | None = None, since: float | None = None,
           until: float | None = None,
        releases: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row of totals: runs, level-3 runs, those of them that started but never ended, tasks,
    failures, execution hours (of level-3 runs), distinct projects, runs with an invalid field.

    >>> totals(store, since=parse_since("2026-01-01")).iloc[0].runs   # doctest: +SKIP
    """
    return _query(store, """
        SELECT count(*) AS runs, count(*) FILTER (WHERE tracking_level = 3) AS level3_runs,
               count(*) FILTER (WHERE tracking_level = 3 AND has_start AND NOT has_end) AS level3_unfinished,
               coalesce(sum(task_count), 0)::BIGINT AS tasks, coalesce(sum(failures), 0)::BIGINT AS failures,
               coalesce(sum(execution_time), 0) / 3600 AS execution_hours,
               -- (a DISTINCT beside the other aggregates would make them all slow)
               (SELECT count(DISTINCT project_name) FROM usage_runs) AS projects,
               count(*) FILTER (WHERE len(invalid) > 0) AS runs_with_invalid_fields
        FROM usage_runs""", product, since, until, releases)


def unfinished_runs(store, product: str | None = None, since: float | None = None,
                    until: float | None = None,
        releases: pd.DataFrame | None = None) -> pd.DataFrame:
    """Level-3 runs whose start message arrived but whose end message never did (a crash, a kill,
    a lost datagram, or still running), oldest first.

    >>> unfinished_runs(store, product="parsl")                # doctest: +SKIP
    """
    return _query(store, """
        SELECT correlator, to_timestamp(ts) AS started, product, version, project_name
        FROM usage_runs WHERE tracking_level = 3 AND has_start AND NOT has_end
        ORDER BY ts, correlator""", product, since, until, releases)


def invalid_fields(store, product: str | None = None, since: float | None = None,
                   until: float | None = None,
        releases: pd.DataFrame | None = None) -> pd.DataFrame:
    """Fields that break the protocol, per field and reason, with how many runs had one. Such a
    value is never a value on any report (its column is empty for that run); the run still counts.

    >>> invalid_fields(store)                                  # doctest: +SKIP
    """
    return _query(store, """
        SELECT problem.field AS field, problem.reason AS reason, count(*) AS runs
        FROM (SELECT unnest(invalid) AS problem FROM usage_runs)
        GROUP BY ALL ORDER BY runs DESC, field, reason""", product, since, until, releases)


def version_adoption(store, product: str | None = None, weeks: int = 12, since: float | None = None,
        until: float | None = None,
        releases: pd.DataFrame | None = None) -> pd.DataFrame:
    """How fast each version is taken up: for each of the first `weeks` weeks after a version was
    first seen, its share of all that product's runs in that week.

    >>> version_adoption(store, product="parsl", weeks=8)      # doctest: +SKIP
    """
    return _query(store, """
        WITH versions AS (
            SELECT product, version, min(ts) AS first_seen FROM product_runs
            WHERE version IS NOT NULL GROUP BY ALL HAVING $since IS NULL OR min(ts) >= $since
        ), windows AS (
            SELECT v.product, v.version, v.first_seen, week, v.first_seen + week * 604800 AS week_start
            FROM versions v, range($weeks) AS w(week)
        ), version_buckets AS (
            -- the epoch weeks (buckets) a version's first $weeks weeks overlap
            SELECT product, version, first_seen, bucket
            FROM versions, range(floor(first_seen / 604800)::BIGINT,
                                 floor(first_seen / 604800)::BIGINT + $weeks + 1) AS b(bucket)
        ), placed AS (
            -- each run in the week of each version of its product it falls in: week k holds
            -- first_seen + k * 604800 <= ts < first_seen + (k + 1) * 604800, computed as written.
            -- Joined on the bucket too, so a version meets only the runs of its weeks, not every
            -- run of the product (49M pairs at 1M runs of 49 releases)
            SELECT v.product, v.version, r.version AS run_version,
                   floor((r.ts - v.first_seen) / 604800)::BIGINT AS guess, r.ts, v.first_seen
            FROM version_buckets v JOIN product_runs r
              ON r.product = v.product AND floor(r.ts / 604800)::BIGINT = v.bucket
        ), weekly AS (
            SELECT product, version, week, count(*) FILTER (WHERE run_version = version) AS runs, count(*) AS product_runs
            FROM (SELECT *, CASE WHEN ts < first_seen + guess * 604800 THEN guess - 1
                                 WHEN ts >= first_seen + (guess + 1) * 604800 THEN guess + 1 ELSE guess END AS week
                  FROM placed WHERE ts >= first_seen AND ts < first_seen + $weeks * 604800)
            WHERE week BETWEEN 0 AND $weeks - 1 GROUP BY ALL
        )
        SELECT w.product, w.version, to_timestamp(w.first_seen) AS first_seen, w.week,
               coalesce(k.runs, 0) AS runs, coalesce(k.product_runs, 0) AS product_runs,
               coalesce(k.runs, 0) / nullif(coalesce(k.product_runs, 0), 0) AS share
        FROM windows w LEFT JOIN weekly k USING (product, version, week)
        WHERE w.week_start <= (SELECT max(ts) FROM product_runs)
        ORDER BY w.product, first_seen, w.version, w.week""", product, since, until, releases, weeks=weeks)


#: the shares of runs `adoption_summary` gives the weeks to
ADOPTION_SHARES = (0.25, 0.5, 0.75)


def adoption_summary(store, product: str | None = None, since: float | None = None,
                     until: float | None = None, releases: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per release: weeks from its release until 25, 50 and 75 % of the product's runs in a week
    used it or a newer release (week 0 is the release's first seven days; empty when never reached).

    A release's date is its version's (Parsl: the version itself; others: the release-date table),
    else when it was first seen (`released_by` says which); "newer" means released later.

    >>> adoption_summary(store, product="parsl")             # doctest: +SKIP
    """
    return _query(store, """
        WITH versions AS (
            SELECT product, version, coalesce(any_value(version_released), min(ts)) AS released,
                   CASE WHEN any_value(version_released) IS NULL THEN 'first seen' ELSE 'release date' END AS released_by
            FROM product_runs WHERE version IS NOT NULL GROUP BY product, version
        ), dated AS (
            SELECT r.product, r.ts, v.released AS run_released
            FROM usage_runs r JOIN versions v USING (product, version)
        ), daily AS (
            -- runs per day and release: a release dated at a UTC midnight (every Parsl release)
            -- puts a whole day in one of its weeks, so it needs only these counts, not every run
            SELECT product, floor(ts / 86400)::BIGINT AS day, run_released, count(*) AS runs
            FROM dated GROUP BY ALL
        ), placed AS (
            SELECT v.product, v.version, (d.day - floor(v.released / 86400)::BIGINT) // 7 AS week,
                   d.run_released >= v.released AS newer, d.runs
            FROM versions v JOIN daily d ON d.product = v.product
            WHERE v.released % 86400 = 0 AND d.day >= floor(v.released / 86400)::BIGINT
            UNION ALL
            -- a release known only by when it was first seen: its weeks start at any second
            SELECT v.product, v.version, floor((d.ts - v.released) / 604800)::BIGINT AS week,
                   d.run_released >= v.released AS newer, 1 AS runs
            FROM versions v JOIN dated d ON d.product = v.product
            WHERE v.released % 86400 <> 0 AND d.ts >= v.released
        ), weekly AS (
            SELECT product, version, week, coalesce(sum(runs) FILTER (WHERE newer), 0) / sum(runs) AS share
            FROM placed GROUP BY ALL
        )
        SELECT v.product, v.version, to_timestamp(v.released) AS released, v.released_by,
               min(w.week) FILTER (WHERE w.share >= $share_1) AS weeks_to_25,
               min(w.week) FILTER (WHERE w.share >= $share_2) AS weeks_to_50,
               min(w.week) FILTER (WHERE w.share >= $share_3) AS weeks_to_75
        FROM versions v LEFT JOIN weekly w USING (product, version)
        GROUP BY v.product, v.version, v.released, v.released_by
        ORDER BY v.product, v.released, v.version""", product, since, until, releases,
        share_1=ADOPTION_SHARES[0], share_2=ADOPTION_SHARES[1], share_3=ADOPTION_SHARES[2])


#: report name (as `taskscope usage report` and the `/api/usage/{name}` endpoints call it) -> function
REPORTS = {
    "runs": usage_runs, "over-time": runs_over_time, "python": python_versions, "versions": product_versions,
    "platforms": platforms, "components": components, "levels": levels, "execution-times": execution_times,
    "task-counts": task_counts, "failures": failure_rates, "leaderboard": leaderboard,
    "installation-age": installation_age, "adoption": version_adoption, "adoption-summary": adoption_summary,
    "totals": totals,
    "unfinished": unfinished_runs, "invalid": invalid_fields,
}



def report(store, name: str, product: str | None = None, since: float | None = None, period: str = "day",
           weeks: int = 12, until: float | None = None, releases: pd.DataFrame | None = None) -> pd.DataFrame:
    """The report `name` of `REPORTS` over runs dated in [`since`, `until`) (`period` is for
    over-time, `weeks` for adoption; `releases` is the release-date table, `release_dates()`
    when None: it dates versions for installation ages and for flagging impossible times).

    >>> report(store, "over-time", product="parsl", period="week")   # doctest: +SKIP
    """
    if name not in REPORTS:
        raise LookupError(f"no usage report {name!r}: one of {', '.join(REPORTS)}")
    options = {"period": period} if name == "over-time" else {"weeks": weeks} if name == "adoption" else {}
    return REPORTS[name](store, product=product, since=since, until=until, releases=releases, **options)


__all__ = [
    "PERIODS",
    "REPORTS",
    "adoption_summary",
    "components",
    "execution_times",
    "failure_rates",
    "installation_age",
    "invalid_fields",
    "leaderboard",
    "levels",
    "parse_since",
    "platforms",
    "product_versions",
    "python_versions",
    "release_dates",
    "report",
    "runs_over_time",
    "stored_messages",
    "task_counts",
    "totals",
    "unfinished_runs",
    "usage_runs",
    "version_adoption",
]


def stored_messages(store) -> dict:
    """How many usage messages the store holds (`messages`) and how many datagrams the collector
    rejected (`rejected`; None when no collector wrote the store).

    >>> stored_messages(taskscope.open("usage.duckdb"))      # doctest: +SKIP
    {'messages': 12, 'rejected': 3}
    """
    con = connection_of(store)
    has_rejected = scalar(con, "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'usage_rejected'")
    return {"messages": scalar(con, "SELECT count(*) FROM events WHERE source = 'usage'"),
            "rejected": scalar(con, "SELECT count(*) FROM usage_rejected") if has_rejected else None}
