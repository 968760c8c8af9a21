"""The derivation of usage runs from their messages: the SQL (`_RUNS`), its checks and constants,
and the release-date table it dates versions with. `taskscope.usage.reports` aggregates what it
gives; `taskscope.usage.rollups` keeps it in the store.

>>> parse_since("2026-01-01")
1767225600.0
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import pandas as pd

from taskscope.time_bounds import epoch_since

# Field checks: a JSON value's type, and text that must be a version. An integer written out
# (no fraction, no exponent) beyond BIGINT is "out of range", not "not an integer" (DuckDB types it DOUBLE).
_INTEGER = "(json_type({0}) IN ('UBIGINT', 'BIGINT') AND TRY_CAST({0}->>'$' AS BIGINT) IS NOT NULL)"
_INTEGER_TEXT = "regexp_full_match({0}::VARCHAR, '-?[0-9]+')"


def _count_check(value: str) -> str:
    """The SQL saying why the JSON count `value` is invalid (NULL when it is fine or absent)."""
    return (f"CASE WHEN {value} IS NULL THEN NULL "
            f"WHEN NOT {_INTEGER.format(value)} AND {_INTEGER_TEXT.format(value)} THEN 'out of range' "
            f"WHEN NOT {_INTEGER.format(value)} THEN 'not an integer' "
            f"WHEN ({value}->>'$')::HUGEINT < 0 THEN 'negative' END")

_NUMBER = "(json_type({0}) IN ('UBIGINT', 'BIGINT', 'DOUBLE') AND isfinite(TRY_CAST({0}->>'$' AS DOUBLE)))"
#: what a product version must look like (PEP 440-like: 1.3.0-dev, 2025.06.02, 0.9.0rc1)
VERSION_PATTERN = r"\d+(\.\d+)+([.+-]?[0-9A-Za-z][0-9A-Za-z.+-]*)?"
#: what a Python version must look like (3.12.2, 3.13.0rc1, 3.14t)
PYTHON_PATTERN = r"\d\.\d{1,2}(\.\d{1,3})?[0-9A-Za-z.+]*"
#: a time this much after its message arrived, or before its version's release, is flagged (clock skew, time zones)
TIME_TOLERANCE_SECONDS = 86400
#: what a `since` or `until` filter takes, as a refusal names it
SINCE_FORMS = "a date (2026-01-31), a date and time or epoch seconds (0 or more)"
#: no Parsl run predates this (2016-01-01, before Parsl's first release): earlier times are flagged
PARSL_BORN = 1451606400.0
#: an execution_time may exceed its run's end - start by this much (both are whole seconds in Parsl)
EXECUTION_TOLERANCE_SECONDS = 60

# One row per run (correlator), every field checked against the protocol: a value that breaks
# it is NULL in the row and named in `invalid` (a list of {field, reason}), so it is counted
# (report "invalid") but never shown as a value. A run is dated (`ts`) by its start message's
# `start`, else its end message's `end` (epoch seconds, as Parsl sends), else when it arrived;
# `dated_by` says which. Later queries select from `usage_runs`.
_RUNS = r"""
WITH messages AS (
    SELECT ts, event, run_id AS correlator, attrs FROM events
    WHERE source = 'usage' AND run_id IS NOT NULL AND event IN ('usage.start', 'usage.end') /*RUNS_SCOPE*/
), starts AS (
    SELECT correlator, arg_min(attrs, ts) AS s, min(ts) AS start_arrived FROM messages
    WHERE event = 'usage.start' GROUP BY correlator
), ends AS (
    SELECT correlator, arg_max(attrs, ts) AS e, max(ts) AS end_arrived FROM messages
    WHERE event = 'usage.end' GROUP BY correlator
), joined AS (
    -- each message parsed once: its keys, and the fields read below as one list of JSON values
    SELECT coalesce(starts.correlator, ends.correlator) AS correlator, s, e, start_arrived, end_arrived,
           json_keys(s) AS s_keys, json_keys(e) AS e_keys,
           json_extract(s, ['$.product', '$.tracking_level', '$.python_v', '$."platform.system"', '$.os',
                            '$.project_name', '$.start', '$.components']) AS sf,
           json_extract(e, ['$.product', '$.project_name', '$.end', '$.execution_time', '$.c_time', '$.t_apps',
                            '$.failed', '$.components']) AS ef
    FROM starts FULL OUTER JOIN ends USING (correlator)
), described AS (
    SELECT *,
        list_filter(s_keys, lambda k: k LIKE '%\_v' ESCAPE '\' AND k <> 'python_v')[1] AS version_key,
        json_extract(ef[8], '$[*]') AS end_components,
        list_filter(json_extract(ef[8], '$[*]'), lambda c: json_exists(c, '$.app_count'))[1] AS counts
    FROM joined
), raw AS (
    -- the messages themselves are not carried further: every later step works on the extracts
    SELECT * EXCLUDE (s, e, s_keys, e_keys, sf, ef), s IS NOT NULL AS has_start, e IS NOT NULL AS has_end,
        len(s_keys) > len(list_distinct(s_keys)) OR len(e_keys) > len(list_distinct(e_keys)) AS duplicated,
        sf[8] AS start_components, s->(product || '_v') AS version_j, sf[2] AS level_j, sf[3] AS python_j,
        coalesce(sf[4], sf[5]) AS platform_j, coalesce(sf[6], ef[2]) AS project_j, sf[7] AS start_j, ef[3] AS end_j,
        coalesce(ef[4], ef[5]) AS time_j, coalesce(counts->'app_count', ef[6]) AS tasks_j,
        coalesce(counts->'app_fails', ef[7]) AS fails_j
    FROM (SELECT *, coalesce(sf[1]->>'$', ef[1]->>'$', regexp_extract(version_key, '^(.*)_v$', 1),
                             split_part(end_components[1]->>'c', '.', 1)) AS product FROM described)
), release_table AS (
    SELECT unnest($release_products::VARCHAR[]) AS product, unnest($release_versions::VARCHAR[]) AS version,
           unnest($release_dates::DOUBLE[]) AS released
), born AS (
    SELECT product, min(released) AS product_born FROM release_table GROUP BY product
), released AS MATERIALIZED (
    -- the version's release date: Parsl's versions are dates (YYYY.MM.DD), other products' come from the table
    SELECT raw.*, coalesce(
        CASE WHEN raw.product = 'parsl' THEN epoch(try(make_date(
            TRY_CAST(regexp_extract(version_j->>'$', '^(\d{4})\.(\d{1,2})\.(\d{1,2})', 1) AS INTEGER),
            TRY_CAST(regexp_extract(version_j->>'$', '^(\d{4})\.(\d{1,2})\.(\d{1,2})', 2) AS INTEGER),
            TRY_CAST(regexp_extract(version_j->>'$', '^(\d{4})\.(\d{1,2})\.(\d{1,2})', 3) AS INTEGER)))) END,
        t.released) AS version_released,
        coalesce(born.product_born, CASE WHEN raw.product = 'parsl' THEN $parsl_born END) AS product_born
    FROM raw LEFT JOIN release_table t ON t.product = raw.product AND t.version = version_j->>'$'
             LEFT JOIN born ON born.product = raw.product
), checked AS (
    SELECT *,
        CASE WHEN has_start AND level_j IS NULL THEN 'missing'
             WHEN level_j IS NULL THEN NULL
             WHEN """ + _INTEGER_TEXT.format("level_j") + r""" AND TRY_CAST(level_j->>'$' AS HUGEINT) BETWEEN 1 AND 3
                  THEN NULL
             WHEN """ + _INTEGER_TEXT.format("level_j") + r""" THEN 'not 1, 2 or 3'
             WHEN NOT """ + _INTEGER.format("level_j") + r""" THEN 'not an integer' END AS level_bad,
        CASE WHEN version_j IS NULL THEN NULL WHEN json_type(version_j) <> 'VARCHAR' THEN 'not a string'
             WHEN NOT regexp_full_match(version_j->>'$', '""" + VERSION_PATTERN + r"""') THEN 'not a version'
             WHEN product = 'parsl' AND regexp_matches(version_j->>'$', '^\d{4}\.') AND version_released IS NULL
                  THEN 'not a release date' END AS version_bad,
        CASE WHEN python_j IS NULL THEN NULL WHEN json_type(python_j) <> 'VARCHAR' THEN 'not a string'
             WHEN NOT regexp_full_match(python_j->>'$', '""" + PYTHON_PATTERN + r"""') THEN 'not a version' END AS python_bad,
        CASE WHEN platform_j IS NOT NULL AND json_type(platform_j) <> 'VARCHAR' THEN 'not a string' END AS platform_bad,
        CASE WHEN project_j IS NOT NULL AND json_type(project_j) <> 'VARCHAR' THEN 'not a string' END AS project_bad,
        CASE WHEN time_j IS NULL THEN NULL WHEN NOT """ + _NUMBER.format("time_j") + r""" THEN 'not a number'
             WHEN (time_j->>'$')::DOUBLE < 0 THEN 'negative' END AS time_bad,
        """ + _count_check("tasks_j") + r""" AS tasks_bad,
        """ + _count_check("fails_j") + r""" AS fails_bad,
        CASE WHEN duplicated THEN 'duplicate key' END AS keys_bad
    FROM released
), timed AS (
    SELECT *, """ + "\n".join(
    f"""CASE WHEN {j} IS NULL THEN NULL WHEN NOT {_NUMBER.format(j)} THEN 'not a number'
             WHEN ({j}->>'$')::DOUBLE > {arrived} + $tolerance THEN 'more than a day in the future'
             WHEN ({j}->>'$')::DOUBLE < product_born - $tolerance THEN 'before the product existed'
             WHEN version_bad IS NULL AND ({j}->>'$')::DOUBLE < version_released - $tolerance
                  THEN 'before its version was released' END AS {name},"""
    for j, arrived, name in [("start_j", "start_arrived", "start_bad"), ("end_j", "end_arrived", "end_bad")]) + r"""
    FROM checked
), spanned AS (
    SELECT * REPLACE (coalesce(time_bad, CASE
        -- a run lasts at most from its start to its end, and never longer than its product has existed
        WHEN time_j IS NULL THEN NULL
        WHEN start_bad IS NULL AND end_bad IS NULL AND start_j IS NOT NULL AND end_j IS NOT NULL
             AND (time_j->>'$')::DOUBLE > (end_j->>'$')::DOUBLE - (start_j->>'$')::DOUBLE
                                          + """ + str(EXECUTION_TOLERANCE_SECONDS) + r"""
             THEN 'longer than from start to end'
        WHEN (time_j->>'$')::DOUBLE > coalesce(end_arrived, start_arrived) - coalesce(product_born, $parsl_born)
                                      + $tolerance
             THEN 'longer than the product has existed' END) AS time_bad)
    FROM timed
), kept AS (
    SELECT *,
        CASE WHEN start_bad IS NULL THEN (start_j->>'$')::DOUBLE END AS sent_start,
        CASE WHEN end_bad IS NULL THEN (end_j->>'$')::DOUBLE END AS sent_end
    FROM spanned
)
SELECT correlator, coalesce(sent_start, sent_end, start_arrived, end_arrived) AS ts,
    CASE WHEN sent_start IS NOT NULL THEN 'start' WHEN sent_end IS NOT NULL THEN 'end' ELSE 'arrival' END AS dated_by,
    sent_start AS start_ts, sent_end AS end_ts, coalesce(start_arrived, end_arrived) AS arrived, product,
    CASE WHEN version_bad IS NULL THEN version_j->>'$' END AS version,
    CASE WHEN version_bad IS NULL THEN version_released END AS version_released,
    CASE WHEN python_bad IS NULL THEN python_j->>'$' END AS python_version,
    CASE WHEN python_bad IS NULL THEN regexp_extract(python_j->>'$', '^(\d+\.\d+)') END AS python_minor,
    CASE WHEN platform_bad IS NULL THEN platform_j->>'$' END AS platform,
    CASE WHEN level_bad IS NOT NULL THEN NULL WHEN level_j IS NOT NULL THEN (level_j->>'$')::INTEGER
         WHEN has_end THEN 3 END AS tracking_level,
    CASE WHEN project_bad IS NULL THEN project_j->>'$' END AS project_name,
    -- from the end message when the start was lost, less its first entry (the task counts)
    coalesce(json_extract(start_components, '$[*]'), list_filter(end_components, lambda c: NOT json_exists(c, '$.app_count')))
        AS components,
    CASE WHEN time_bad IS NULL THEN (time_j->>'$')::DOUBLE END AS execution_time,
    CASE WHEN tasks_bad IS NULL THEN (tasks_j->>'$')::BIGINT END AS task_count,
    CASE WHEN fails_bad IS NULL THEN (fails_j->>'$')::BIGINT END AS failures,
    has_start, has_end,
    list_filter([""" + ", ".join(
    f"{{'field': '{field}', 'reason': {column}}}" for field, column in [
        ("tracking_level", "level_bad"), ("version", "version_bad"), ("python_v", "python_bad"),
        ("platform.system", "platform_bad"), ("project_name", "project_bad"), ("start", "start_bad"),
        ("end", "end_bad"), ("execution_time", "time_bad"), ("app_count", "tasks_bad"),
        ("app_fails", "fails_bad"), ("message", "keys_bad")]) + r"""], lambda f: f.reason IS NOT NULL) AS invalid,
    -- for the components report (not in the run list): the run's component names, each once
    list_distinct(list_filter(list_transform(components, lambda c: coalesce(CASE WHEN json_type(c) = 'OBJECT' THEN c->>'c' END,
                                                                      c->>'$')), lambda name: name IS NOT NULL))
        AS component_names,
    coalesce(len(components) > 0, false) AS reports_components
FROM kept
"""


#: columns of `_RUNS` that only reports use (not in `usage_runs`)
_INTERNAL_COLUMNS = ("component_names", "reports_components")

#: the runs source that is the runs table alone (`taskscope.usage.rollups.runs_source`)
RUNS_TABLE_SOURCE = "SELECT * FROM usage_run_facts"

#: where `taskscope.usage.rollups` narrows `_RUNS` to some runs
RUNS_SCOPE = "/*RUNS_SCOPE*/"


def _release_params(releases: pd.DataFrame | None) -> dict:
    if releases is None:  # the file the setting names, read again only when it changes
        path = os.environ.get(RELEASES_VARIABLE) or None
        if path is None:
            return {"release_products": [], "release_versions": [], "release_dates": []}
        try:
            stat = os.stat(path)
        except OSError:
            return _table_params(release_dates(path))  # (which says why it cannot be read)
        return dict(_file_params(path, stat.st_mtime_ns, stat.st_size))
    return _table_params(releases)


@functools.lru_cache(maxsize=8)
def _file_params(path: str, mtime_ns: int, size: int) -> tuple:
    return tuple(_table_params(release_dates(path)).items())


def _table_params(table: pd.DataFrame) -> dict:
    return {"release_products": table["product"].astype(str).tolist(),
            "release_versions": table["version"].astype(str).tolist(),
            "release_dates": table["released"].astype(float).tolist()}


#: environment variable naming the release-date table (`release_dates`)
RELEASES_VARIABLE = "TASKSCOPE_USAGE_RELEASES"


def release_dates(path: str | Path | None = None) -> pd.DataFrame:
    """The maintainer's release-date table: a CSV file with columns `product`, `version`,
    `released` (a UTC date, 2025-06-02, or epoch seconds), read from `path`, else from the file
    the environment variable TASKSCOPE_USAGE_RELEASES names, else empty. Parsl needs none: its
    versions are their release dates. Returns columns product, version, released (epoch seconds).

    >>> release_dates().columns.tolist()
    ['product', 'version', 'released']
    """
    path = path or os.environ.get(RELEASES_VARIABLE) or None
    if path is None:
        return pd.DataFrame({"product": [], "version": [], "released": []})
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read the release-date table {path}: {exc}") from None
    missing = {"product", "version", "released"} - set(table.columns)
    if missing:
        raise ValueError(f"the release-date table {path} lacks the column(s) {', '.join(sorted(missing))}")
    try:
        released = [parse_since(text.strip(), "released") for text in table["released"]]
    except ValueError as exc:
        raise ValueError(f"the release-date table {path}: {exc}") from None
    return pd.DataFrame({"product": table["product"].str.strip(), "version": table["version"].str.strip(),
                         "released": released})


def parse_since(text: str, name: str = "since") -> float:
    """A `since` filter (or the bound `name`) as epoch seconds, from a UTC date, an ISO date and time,
    or epoch seconds (0 or more); anything else, NaN and infinities included, raises ValueError naming
    `name` and the forms it takes (a report must refuse it, never cover another period instead).

    >>> parse_since("2026-01-01")
    1767225600.0
    >>> parse_since("nan", "until")
    Traceback (most recent call last):
    ...
    ValueError: until must be a date (2026-01-31), a date and time or epoch seconds (0 or more), not 'nan'
    """
    return epoch_since(text, SINCE_FORMS, name)
