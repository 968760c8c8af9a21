"""Aggregates over usage messages in a store, for the usage dashboard, reports and notebooks.

Every function takes a `taskscope.Store` or a DuckDB connection (filled by `taskscope usage
collect`), an optional `product` ("parsl", or the `product` a `UsageTracker` names) and an
optional `since` (epoch seconds: only runs seen from then on; a version's "first seen" still
counts every run), and returns a pandas DataFrame. A *run* is one correlator: its start message
(levels 1-3) and, at level 3, its end message; either may be missing (UDP loses datagrams).
Parsl's messages have no `product` field: a `parsl_v` field (or any `<name>_v` besides
`python_v`) names it.

>>> import taskscope
>>> from taskscope.usage import reports
>>> reports.leaderboard(taskscope.open("usage.duckdb"))      # doctest: +SKIP
"""

from __future__ import annotations

import pandas as pd

from taskscope._sql import connection_of, scalar
from taskscope.time_bounds import epoch_since

#: the periods `runs_over_time` counts by
PERIODS = ("hour", "day", "week", "month", "quarter", "year")

# One row per run (correlator). Later queries select from `usage_runs`.
_RUNS = r"""
WITH messages AS (
    SELECT ts, event, run_id AS correlator, attrs FROM events
    WHERE source = 'usage' AND run_id IS NOT NULL AND event IN ('usage.start', 'usage.end')
), starts AS (
    SELECT correlator, arg_min(attrs, ts) AS s, min(ts) AS start_ts FROM messages
    WHERE event = 'usage.start' GROUP BY correlator
), ends AS (
    SELECT correlator, arg_max(attrs, ts) AS e, max(ts) AS end_ts FROM messages
    WHERE event = 'usage.end' GROUP BY correlator
), joined AS (
    SELECT coalesce(starts.correlator, ends.correlator) AS correlator, s, e, start_ts, end_ts,
           list_filter(json_keys(s), lambda k: k LIKE '%\_v' ESCAPE '\' AND k <> 'python_v')[1] AS version_key
    FROM starts FULL OUTER JOIN ends USING (correlator)
), described AS (
    SELECT correlator, coalesce(start_ts, end_ts) AS ts, start_ts, end_ts,
        coalesce(s->>'product', e->>'product', regexp_extract(version_key, '^(.*)_v$', 1),
                 split_part(json_extract_string(e, '$.components[0].c'), '.', 1)) AS product,
        s, e
    FROM joined
)
SELECT correlator, ts, start_ts, end_ts, product,
    s->>(product || '_v') AS version,
    s->>'python_v' AS python_version,
    regexp_extract(s->>'python_v', '^(\d+\.\d+)') AS python_minor,
    coalesce(s->>'$."platform.system"', s->>'os') AS platform,
    coalesce(TRY_CAST(s->>'tracking_level' AS INTEGER), CASE WHEN e IS NOT NULL THEN 3 END) AS tracking_level,
    coalesce(s->>'project_name', e->>'project_name') AS project_name,
    -- from the end message when the start was lost, less its first entry (the task counts)
    coalesce(json_extract(s, '$.components[*]'),
             list_filter(json_extract(e, '$.components[*]'), lambda c: NOT json_exists(c, '$.app_count')))
        AS components,
    TRY_CAST(coalesce(e->>'execution_time', e->>'c_time') AS DOUBLE) AS execution_time,
    TRY_CAST(coalesce(list_filter(json_extract(e, '$.components[*]'),
                                  lambda c: json_exists(c, '$.app_count'))[1]->>'app_count', e->>'t_apps') AS BIGINT)
        AS task_count,
    TRY_CAST(coalesce(list_filter(json_extract(e, '$.components[*]'),
                                  lambda c: json_exists(c, '$.app_fails'))[1]->>'app_fails', e->>'failed') AS BIGINT)
        AS failures,
    s IS NOT NULL AS has_start, e IS NOT NULL AS has_end
FROM described
"""


def _query(store, sql: str, product: str | None, since: float | None = None, **params) -> pd.DataFrame:
    con = connection_of(store)
    # product_runs: every run of the product (for "first seen"); usage_runs: those seen since `since`
    runs_cte = (f"WITH product_runs AS (SELECT * FROM ({_RUNS}) WHERE $product IS NULL OR product = $product), "
                "usage_runs AS (SELECT * FROM product_runs WHERE $since IS NULL OR ts >= $since)")
    sql = sql.strip()
    # a query with its own CTEs continues the WITH list
    text = f"{runs_cte}, {sql[5:]}" if sql.startswith("WITH ") else f"{runs_cte} {sql}"
    return con.execute(text, {"product": product, "since": since, **params}).df()


def parse_since(text: str) -> float:
    """A `since` filter as epoch seconds, from a UTC date, an ISO date and time, or epoch seconds.

    >>> parse_since("2026-01-01")
    1767225600.0
    """
    return epoch_since(text, "a date (2026-01-31), a date and time or epoch seconds")


def usage_runs(store, product: str | None = None, since: float | None = None) -> pd.DataFrame:
    """One row per run: correlator, when seen, product, version, Python, platform, level,
    project_name, components, execution_time, task_count, failures, has_start, has_end.

    >>> usage_runs(store, product="parsl")[["version", "tracking_level"]]   # doctest: +SKIP
    """
    return _query(store, "SELECT * FROM usage_runs ORDER BY ts, correlator", product, since)


def runs_over_time(store, product: str | None = None, period: str = "day", since: float | None = None) -> pd.DataFrame:
    """Runs per `period` (hour, day, week, month, quarter, year) and product, oldest first.

    >>> runs_over_time(store, period="week")                   # doctest: +SKIP
    """
    if period not in PERIODS:
        raise ValueError(f"period must be one of {', '.join(PERIODS)}, not {period!r}")
    return _query(store, """
        SELECT date_trunc($period, to_timestamp(ts)) AS period, product, count(*) AS runs
        FROM usage_runs GROUP BY ALL ORDER BY period, product""", product, since, period=period)


def _shares(store, column: str, product: str | None, name: str, since: float | None) -> pd.DataFrame:
    # `column` is one of this module's fixed expressions, never user text
    return _query(store, f"""
        SELECT {column} AS {name}, count(*) AS runs, count(*) / sum(count(*)) OVER () AS share
        FROM usage_runs WHERE {column} IS NOT NULL GROUP BY ALL ORDER BY runs DESC, {name}""", product, since)


def python_versions(store, product: str | None = None, since: float | None = None) -> pd.DataFrame:
    """Runs per Python version (major.minor), most used first, with their share (of runs whose
    start message arrived: the same holds for platforms).

    >>> python_versions(store)                                 # doctest: +SKIP
    """
    return _shares(store, "python_minor", product, "python_version", since)


def platforms(store, product: str | None = None, since: float | None = None) -> pd.DataFrame:
    """Runs per platform (`platform.system()`: Linux, Darwin, Windows), with their share.

    >>> platforms(store)                                       # doctest: +SKIP
    """
    return _shares(store, "platform", product, "platform", since)


def levels(store, product: str | None = None, since: float | None = None) -> pd.DataFrame:
    """Runs per tracking level (an end message without its start counts as level 3).

    >>> levels(store)                                          # doctest: +SKIP
    """
    return _shares(store, "tracking_level", product, "tracking_level", since)


def product_versions(store, product: str | None = None, since: float | None = None) -> pd.DataFrame:
    """Runs per product version, with its share of that product's runs and when first/last seen
    (runs whose start message was lost have no version and are left out).

    >>> product_versions(store, product="parsl")               # doctest: +SKIP
    """
    return _query(store, """
        SELECT product, version, count(*) AS runs,
               count(*) / sum(count(*)) OVER (PARTITION BY product) AS share,
               to_timestamp(min(ts)) AS first_seen, to_timestamp(max(ts)) AS last_seen
        FROM usage_runs WHERE version IS NOT NULL GROUP BY product, version ORDER BY product, runs DESC, version""",
        product, since)


def components(store, product: str | None = None, since: float | None = None) -> pd.DataFrame:
    """Runs using each component (executor, provider, launcher, ...), from level 2 and 3 messages.

    `kind` comes from the class's module path (`parsl.executors.*` is an executor); `share` is
    the part of runs that reported components.

    >>> components(store).query("kind == 'executor'")          # doctest: +SKIP
    """
    return _query(store, """
        WITH used AS (
            SELECT DISTINCT correlator,
                   coalesce(CASE WHEN json_type(c) = 'OBJECT' THEN c->>'c' END, c->>'$') AS component
            FROM (SELECT correlator, unnest(components) AS c FROM usage_runs)
        ), reporting AS (SELECT count(DISTINCT correlator) AS n FROM used)
        SELECT component,
               CASE WHEN component LIKE '%.executors.%' THEN 'executor'
                    WHEN component LIKE '%.providers.%' THEN 'provider'
                    WHEN component LIKE '%.launchers.%' THEN 'launcher'
                    WHEN component LIKE '%.monitoring.%' THEN 'monitoring'
                    WHEN component LIKE '%.channels.%' THEN 'channel'
                    ELSE 'other' END AS kind,
               count(*) AS runs, count(*) / any_value(reporting.n) AS share
        FROM used, reporting WHERE component IS NOT NULL
        GROUP BY ALL ORDER BY runs DESC, component""", product, since)


_EXECUTION_BUCKETS = [(0, "< 1 s"), (1, "1-10 s"), (10, "10 s-1 min"), (60, "1-10 min"), (600, "10 min-1 h"),
                      (3600, "1-6 h"), (6 * 3600, "6-24 h"), (86400, ">= 1 day")]


def execution_times(store, product: str | None = None, since: float | None = None) -> pd.DataFrame:
    """How many level-3 runs took how long (execution_time of the end message), in fixed buckets.

    Every bucket is listed, empty ones with 0 runs.

    >>> execution_times(store)                                 # doctest: +SKIP
    """
    bounds = [low for low, _ in _EXECUTION_BUCKETS]
    labels = [label for _, label in _EXECUTION_BUCKETS]
    return _query(store, """
        WITH buckets AS (SELECT unnest($bounds) AS lower_seconds, unnest($labels) AS bucket,
                                generate_subscripts($bounds, 1) AS position),
        timed AS (SELECT execution_time FROM usage_runs WHERE execution_time IS NOT NULL)
        SELECT bucket, lower_seconds,
               (SELECT count(*) FROM timed WHERE execution_time >= b.lower_seconds
                  AND (next_lower IS NULL OR execution_time < next_lower)) AS runs
        FROM (SELECT *, lead(lower_seconds) OVER (ORDER BY position) AS next_lower FROM buckets) b
        ORDER BY position""", product, since, bounds=bounds, labels=labels)


def task_counts(store, product: str | None = None, since: float | None = None) -> pd.DataFrame:
    """How many level-3 runs ran how many tasks, in powers of ten (0, 1-9, 10-99, ...).

    >>> task_counts(store)                                     # doctest: +SKIP
    """
    return _query(store, """
        WITH counted AS (
            SELECT CASE WHEN task_count <= 0 THEN -1 ELSE floor(log10(task_count))::INTEGER END AS magnitude
            FROM usage_runs WHERE task_count IS NOT NULL
        )
        SELECT CASE WHEN magnitude < 0 THEN '0'
                    ELSE format('{:,}-{:,}', (10 ** magnitude)::BIGINT, (10 ** (magnitude + 1))::BIGINT - 1) END
                   AS bucket,
               CASE WHEN magnitude < 0 THEN 0 ELSE (10 ** magnitude)::BIGINT END AS lower_tasks,
               count(*) AS runs
        FROM counted GROUP BY ALL ORDER BY lower_tasks""", product, since)


def failure_rates(store, product: str | None = None, since: float | None = None) -> pd.DataFrame:
    """Per product version, over level-3 runs: tasks, failed tasks, their rate, and runs with any failure.

    >>> failure_rates(store, product="parsl")                  # doctest: +SKIP
    """
    return _query(store, """
        SELECT product, version, count(*) AS runs, sum(task_count)::BIGINT AS tasks, sum(failures)::BIGINT AS failures,
               sum(failures) / nullif(sum(task_count), 0) AS failure_rate,
               count(*) FILTER (WHERE failures > 0) AS runs_with_failures,
               count(*) FILTER (WHERE failures > 0) / count(*) AS share_runs_with_failures
        FROM usage_runs WHERE task_count IS NOT NULL
        GROUP BY ALL ORDER BY product, version""", product, since)


def leaderboard(store, product: str | None = None, since: float | None = None) -> pd.DataFrame:
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
        ORDER BY rank, project_name""", product, since)


_AGE_BUCKETS = [(0, "< 1 week"), (7, "1-4 weeks"), (28, "1-3 months"), (91, "3-6 months"), (182, "6-12 months"),
                (365, "1-2 years"), (730, ">= 2 years")]


def installation_age(store, product: str | None = None, since: float | None = None) -> pd.DataFrame:
    """How old installations are: per run, days since its version was first seen by any run, bucketed.

    (First seen in this store: retention moves it later.) Every bucket is listed.

    >>> installation_age(store, product="parsl")               # doctest: +SKIP
    """
    return _query(store, """
        WITH aged AS (
            SELECT (ts - first_seen) / 86400 AS age_days
            FROM usage_runs JOIN (SELECT product, version, min(ts) AS first_seen FROM product_runs GROUP BY ALL)
                 USING (product, version)
        ), buckets AS (SELECT unnest($bounds) AS lower_days, unnest($labels) AS bucket,
                              generate_subscripts($bounds, 1) AS position),
        ranged AS (SELECT *, lead(lower_days) OVER (ORDER BY position) AS next_lower FROM buckets)
        SELECT bucket, lower_days, runs, runs / nullif(sum(runs) OVER (), 0) AS share FROM (
            SELECT position, bucket, lower_days,
                   (SELECT count(*) FROM aged WHERE age_days >= r.lower_days
                      AND (next_lower IS NULL OR age_days < next_lower)) AS runs
            FROM ranged r)
        ORDER BY position""", product, since,
        bounds=[low for low, _ in _AGE_BUCKETS], labels=[label for _, label in _AGE_BUCKETS])


def version_adoption(store, product: str | None = None, weeks: int = 12, since: float | None = None) -> pd.DataFrame:
    """How fast each version is taken up: for each of the first `weeks` weeks after a version was
    first seen, its share of all that product's runs in that week.

    >>> version_adoption(store, product="parsl", weeks=8)      # doctest: +SKIP
    """
    return _query(store, """
        WITH versions AS (
            SELECT product, version, min(ts) AS first_seen FROM product_runs
            WHERE version IS NOT NULL GROUP BY ALL HAVING $since IS NULL OR min(ts) >= $since
        ), windows AS (
            SELECT v.product, v.version, v.first_seen, week,
                   v.first_seen + week * 604800 AS week_start, v.first_seen + (week + 1) * 604800 AS week_end
            FROM versions v, range($weeks) AS w(week)
        )
        SELECT w.product, w.version, to_timestamp(w.first_seen) AS first_seen, w.week,
               count(r.correlator) FILTER (WHERE r.version = w.version) AS runs,
               count(r.correlator) AS product_runs,
               count(r.correlator) FILTER (WHERE r.version = w.version) / nullif(count(r.correlator), 0) AS share
        FROM windows w LEFT JOIN product_runs r
          ON r.product = w.product AND r.ts >= w.week_start AND r.ts < w.week_end
        WHERE w.week_start <= (SELECT max(ts) FROM product_runs)
        GROUP BY ALL ORDER BY w.product, first_seen, w.version, w.week""", product, since, weeks=weeks)


#: report name (as `taskscope usage report` and the `/api/usage/{name}` endpoints call it) -> function
REPORTS = {
    "runs": usage_runs, "over-time": runs_over_time, "python": python_versions, "versions": product_versions,
    "platforms": platforms, "components": components, "levels": levels, "execution-times": execution_times,
    "task-counts": task_counts, "failures": failure_rates, "leaderboard": leaderboard,
    "installation-age": installation_age, "adoption": version_adoption,
}



def report(store, name: str, product: str | None = None, since: float | None = None, period: str = "day",
           weeks: int = 12) -> pd.DataFrame:
    """The report `name` of `REPORTS` (`period` is for over-time, `weeks` for adoption).

    >>> report(store, "over-time", product="parsl", period="week")   # doctest: +SKIP
    """
    if name not in REPORTS:
        raise LookupError(f"no usage report {name!r}: one of {', '.join(REPORTS)}")
    options = {"period": period} if name == "over-time" else {"weeks": weeks} if name == "adoption" else {}
    return REPORTS[name](store, product=product, since=since, **options)


__all__ = ["REPORTS", "PERIODS", "report", "parse_since", "usage_runs", "runs_over_time", "python_versions", "product_versions", "platforms", "components",
           "levels", "execution_times", "task_counts", "failure_rates", "leaderboard", "installation_age",
           "version_adoption"]


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
