"""The usage collector's storage: its tables, and the SQL that stores a batch of datagrams.

A batch (registered as `usage_batch`: `ts`, `record`, `payload`) is classified in SQL (size,
protocol byte, UTF-8, JSON object, correlator, as `taskscope.usage.protocol.decode` does): good
messages go into `events` (`source = 'usage'`, `event = 'usage.start' | 'usage.end'`, `run_id` =
correlator, `attrs` = the message), the rest into `usage_rejected` with the reason, and the batch
into `usage_spool_commits`. The caller holds the transaction (`taskscope.usage.collector`).

>>> con = duckdb.connect(); _ = con.execute("CREATE TABLE events (ts DOUBLE, source VARCHAR, file VARCHAR, "
...     "line BIGINT, event VARCHAR, run_id VARCHAR, attrs JSON)")
>>> create_usage_tables(con); stored_counts(con)["events"]
0
"""

from __future__ import annotations

import re
from collections import Counter

import duckdb

from taskscope._sql import connection_of, scalar
from taskscope.usage import protocol

#: bytes of a rejected datagram kept in `usage_rejected.head`
HEAD_BYTES = 200

_DDL = """
CREATE TABLE IF NOT EXISTS usage_spool_commits (
    segment VARCHAR,       -- spool segment file name
    first_record BIGINT,   -- the batch committed: records first_record..last_record of the segment
    last_record BIGINT,
    end_offset BIGINT,     -- offset just after last_record in the segment file
    parsed BIGINT,         -- of the batch, stored as events
    rejected BIGINT,       -- of the batch, rejected (see usage_rejected)
    committed_at DOUBLE
);
CREATE TABLE IF NOT EXISTS usage_rejected (
    ts DOUBLE, segment VARCHAR, record BIGINT, size BIGINT, reason VARCHAR, head BLOB
);
"""

# Per segment: how far the store holds it. Commits are made in spool order, so the last one
# says how far, and the records before it are all stored.
_SPOOL_VIEW = """
CREATE OR REPLACE VIEW usage_spool AS
SELECT segment, max(end_offset) AS bytes_parsed, max(last_record) AS records_parsed,
       sum(parsed) AS parsed, sum(rejected) AS rejected, max(committed_at) AS updated_at
FROM usage_spool_commits GROUP BY segment
"""

# a store written before commits were recorded one row each had `usage_spool` as a table
_MIGRATE_SPOOL_TABLE = """
INSERT INTO usage_spool_commits
SELECT segment, NULL, records_parsed, bytes_parsed, parsed, rejected, updated_at FROM usage_spool;
DROP TABLE usage_spool;
"""

# One row per datagram of `{source}` with the reason it is rejected (NULL when it is a usage
# message). Checks run in the order of protocol.decode, each only on rows that passed the earlier ones.
# The body is parsed once, here: json_extract of the three fields needed and of the whole message
# ('$', which becomes `attrs`: already JSON, so the insert does not parse it again as a cast of the
# text would; it is the message minified, keys and values unchanged). Every other test works on
# the small extracts, because a filter gets the expressions it tests inlined, and a full parse
# inlined there runs again.
_CLASSIFY = f"""
WITH sized AS (
    SELECT ts, record, payload, octet_length(payload) AS size, payload[1:1] AS version FROM {{source}}
), bodies AS (
    SELECT *, CASE
        WHEN size = 0 THEN '{protocol.EMPTY}'
        WHEN size > $max_bytes THEN '{protocol.OVERSIZED}'
        WHEN version NOT IN ('1'::BLOB, '{{{{'::BLOB) THEN '{protocol.UNKNOWN_VERSION}' END AS framing_reason,
      CASE WHEN framing_reason IS NULL
           THEN try(decode(CASE WHEN version = '1'::BLOB THEN payload[2:] ELSE payload END)) END AS body
    FROM sized
), extracted AS (
    -- JSON values (SQL NULL when absent) of correlator, uuid (pre-2024 Parsl), end, the whole message
    SELECT *, try(json_extract(body, ['$.correlator', '$.uuid', '$.end', '$'])) AS fields FROM bodies
), checked AS (
    SELECT *, CASE
        WHEN framing_reason IS NOT NULL THEN framing_reason
        WHEN body IS NULL THEN '{protocol.NOT_UTF8}'
        WHEN fields IS NULL THEN '{protocol.BAD_JSON}'
        -- valid JSON whose first character is a brace is an object
        WHEN NOT starts_with(body, '{{{{')
             AND left(ltrim(body, chr(32) || chr(9) || chr(10) || chr(13)), 1) <> '{{{{' THEN '{protocol.NOT_OBJECT}'
      END AS shape_reason,
      -- as protocol.decode: `correlator` if present (whatever its type), else `uuid`; a JSON string
      coalesce(fields[1], fields[2]) AS correlator_json
    FROM extracted
), named AS (
    SELECT *, CASE WHEN shape_reason IS NULL AND starts_with(correlator_json, '"')
                   THEN json_extract_string(correlator_json, '$') END AS correlator
    FROM checked
)
SELECT ts, record, size, payload, fields[4] AS message, correlator, fields[3] IS NOT NULL AS is_end,
       coalesce(shape_reason, CASE WHEN correlator IS NULL OR length(correlator) NOT BETWEEN 1 AND
                                        {protocol.MAX_CORRELATOR_CHARS} THEN '{protocol.NO_CORRELATOR}' END) AS reason
FROM named
"""

# Good messages first, in one pass over the batch (no copy of it). `message` stays NULL: the
# message is `attrs` itself, and a second copy would double the store.
_INSERT_EVENTS = f"""
INSERT INTO events (ts, source, file, line, event, run_id, attrs)
SELECT ts, 'usage', $segment, record, CASE WHEN is_end THEN 'usage.end' ELSE 'usage.start' END, correlator, message
FROM ({_CLASSIFY.format(source="usage_batch")}) WHERE reason IS NULL
"""

_NOT_STORED = """(SELECT * FROM usage_batch ANTI JOIN (
    SELECT line FROM events WHERE source = 'usage' AND file = $segment AND line BETWEEN $first AND $last
) stored ON record = stored.line)"""

# Then the rest (usually none): classified again, only the rows that did not become events.
_INSERT_REJECTED = f"""
INSERT INTO usage_rejected
SELECT ts, $segment, record, size, reason, payload[1:{HEAD_BYTES}]
FROM ({_CLASSIFY.format(source=_NOT_STORED)}) ORDER BY record
"""

# one row per commit, never updated: two writers' transactions never touch the same row
_RECORD_PROGRESS = """
INSERT INTO usage_spool_commits VALUES ($segment, $first, $last, $end, $parsed, $rejected, $now)
"""


def create_usage_tables(con: duckdb.DuckDBPyConnection) -> None:
    """Create the collector's tables (`usage_spool_commits`, `usage_rejected`) and the view
    `usage_spool` if missing (idempotent); a store with the older `usage_spool` table keeps its
    progress, moved to `usage_spool_commits`."""
    con.execute(_DDL)
    kind = scalar(con, "SELECT table_type FROM information_schema.tables "
                       "WHERE table_name = 'usage_spool' AND table_schema = current_schema()")
    if kind == "BASE TABLE":
        con.execute("BEGIN TRANSACTION")
        try:
            con.execute(_MIGRATE_SPOOL_TABLE)
            con.execute(_SPOOL_VIEW)
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
    elif kind is None:
        con.execute(_SPOOL_VIEW)


def insert_batch(con: duckdb.DuckDBPyConnection, segment: str, first: int, last: int, end_offset: int,
                 max_bytes: int, now: float) -> tuple[int, dict[str, int]]:
    """Store the batch registered as `usage_batch` (records `first`..`last` of spool `segment`,
    ending at byte `end_offset`) inside the caller's transaction: its usage messages as events,
    the rest as rejected, and the commit's row in `usage_spool_commits`. Returns (messages stored,
    rejected per reason)."""
    parsed = scalar(con, _INSERT_EVENTS, {"max_bytes": max_bytes, "segment": segment})
    reasons: dict[str, int] = {}
    if parsed < last - first + 1:
        returned = con.execute(f"{_INSERT_REJECTED} RETURNING reason",
                               {"max_bytes": max_bytes, "segment": segment, "first": first, "last": last}).fetchall()
        reasons = dict(Counter(row[0] for row in returned))
    con.execute(_RECORD_PROGRESS, {"segment": segment, "first": first, "last": last, "end": end_offset,
                                   "parsed": parsed, "rejected": sum(reasons.values()), "now": now})
    return parsed, reasons


def spool_progress(con: duckdb.DuckDBPyConnection) -> dict[str, tuple[int, int]]:
    """Per spool segment, how far the store holds it: (bytes, records)."""
    return {row[0]: (row[1], row[2]) for row in con.execute(
        "SELECT segment, bytes_parsed, records_parsed FROM usage_spool").fetchall()}


def delete_usage_before(con: duckdb.DuckDBPyConnection, cutoff: float, releases=None) -> None:
    """Delete the usage events and rejected datagrams older than `cutoff` (epoch seconds), and
    derive again (under the release-date table `releases`) the runs that lost messages, in one
    transaction (`taskscope.usage.rollups`)."""
    from taskscope.usage import rollups  # (pandas: only for the collector's retention)

    con.execute("BEGIN TRANSACTION")
    try:
        gone = con.execute("DELETE FROM events WHERE source = 'usage' AND ts < ? RETURNING run_id", [cutoff]).fetchall()
        con.execute("DELETE FROM usage_rejected WHERE ts < ?", [cutoff])
        rollups.rederive(con, releases, sorted({row[0] for row in gone if row[0] is not None}))
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise


def storage_compression(con: duckdb.DuckDBPyConnection) -> str:
    """How the collector compresses what it stores: 'zstd' where the database file's format has
    ZSTD for text (DuckDB storage v1.2 and later: every store DuckDB 2 creates), else 'auto'.

    The messages' text is nearly all of a usage event. Measured in 122,880-row commits of
    470-byte Parsl messages: ZSTD 1.8-1.9 µs per row and 97 bytes on disk, DuckDB's automatic
    choice (dictionary/FSST) 3.8-4.1 µs and 163 bytes, no compression 2.2-2.3 µs and 587 bytes.
    An older file would silently store ZSTD-forced text uncompressed, hence the check.

    >>> storage_compression(duckdb.connect())
    'zstd'
    """
    tags = scalar(con, "SELECT tags['storage_version'] FROM duckdb_databases() WHERE database_name = current_database()")
    found = re.match(r"v(\d+)\.(\d+)", tags or "")
    # an in-memory database has no storage version: it takes the newest format
    newest = tags is None or (found is not None and (int(found[1]), int(found[2])) >= (1, 2))
    return "zstd" if newest else "auto"


def stored_counts(store) -> dict[str, int]:
    """How many usage events and rejected datagrams a store holds, and what its spool table says.

    >>> stored_counts(store)          # doctest: +SKIP
    {'events': 12, 'rejected': 3, 'spooled_parsed': 12, 'spooled_rejected': 3}
    """
    con = connection_of(store)
    create_usage_tables(con)
    return {
        "events": scalar(con, "SELECT count(*) FROM events WHERE source = 'usage'"),
        "rejected": scalar(con, "SELECT count(*) FROM usage_rejected"),
        "spooled_parsed": scalar(con, "SELECT coalesce(sum(parsed), 0) FROM usage_spool"),
        "spooled_rejected": scalar(con, "SELECT coalesce(sum(rejected), 0) FROM usage_spool"),
    }
