"""The fleet server's DuckDB store: accounts, tokens (hashed), batches and what they say.

Every batch is kept whole in `batches` (keyed by account and batch_id, so a resend stores
nothing new) and projected into one table per message kind in the same transaction. Every
read takes the caller's account and filters by it; every statement is parameterised.

>>> db = FleetDB(":memory:")
>>> db.create_account("physics")
True
>>> token = db.create_token("physics", "alice")
>>> db.account_for_token(token)
('physics', 'alice', False)
"""

from __future__ import annotations

import hashlib
import json
import math
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import duckdb
import pandas as pd

from taskscope.fleet.protocol import DEFAULT_PRICE_PER_CORE_HOUR, DEFAULT_PRICE_PER_GB_HOUR
from taskscope.store_format import check_store_file

#: every token starts with this, so a leaked one is recognisable in logs and secret scanners
TOKEN_PREFIX = "tsf_"

SCHEMA = """
CREATE TABLE IF NOT EXISTS accounts (account VARCHAR PRIMARY KEY, created DOUBLE);
CREATE TABLE IF NOT EXISTS users (account VARCHAR, user_name VARCHAR, created DOUBLE, PRIMARY KEY (account, user_name));
CREATE TABLE IF NOT EXISTS tokens (
    token_sha256 VARCHAR PRIMARY KEY, token_start VARCHAR, account VARCHAR, user_name VARCHAR,
    created DOUBLE, revoked DOUBLE, admin BOOLEAN DEFAULT false);
CREATE TABLE IF NOT EXISTS batches (
    account VARCHAR, batch_id VARCHAR, cluster_id VARCHAR, token_user VARCHAR, received DOUBLE,
    sent_at DOUBLE, n_messages BIGINT, body JSON, PRIMARY KEY (account, batch_id));
CREATE TABLE IF NOT EXISTS clusters (
    account VARCHAR, cluster_id VARCHAR, kind VARCHAR, name VARCHAR, user_name VARCHAR, host VARCHAR,
    address VARCHAR, scheduler_id VARCHAR, dashboard_link VARCHAR, started DOUBLE, stopped DOUBLE,
    first_seen DOUBLE, last_seen DOUBLE, python VARCHAR, platform VARCHAR, versions JSON, config JSON,
    price_per_core_hour DOUBLE, price_per_gb_hour DOUBLE, claimed_user VARCHAR, send_interval DOUBLE,
    PRIMARY KEY (account, cluster_id));
CREATE TABLE IF NOT EXISTS computations (
    account VARCHAR, cluster_id VARCHAR, computation_id VARCHAR, ts DOUBLE, start DOUBLE, stop DOUBLE,
    code JSON, span_name JSON, PRIMARY KEY (account, cluster_id, computation_id));
CREATE TABLE IF NOT EXISTS task_groups (
    account VARCHAR, cluster_id VARCHAR, computation_id VARCHAR, name VARCHAR, prefix VARCHAR,
    states JSON, n_tasks BIGINT, compute_s DOUBLE, transfer_s DOUBLE, disk_s DOUBLE, nbytes BIGINT,
    start DOUBLE, stop DOUBLE, dependencies JSON);
CREATE TABLE IF NOT EXISTS exceptions (
    account VARCHAR, cluster_id VARCHAR, ts DOUBLE, key VARCHAR, task_group VARCHAR,
    exception_text VARCHAR, traceback_text VARCHAR, worker VARCHAR, computation_id VARCHAR, allowed_failures BIGINT);
CREATE TABLE IF NOT EXISTS cluster_events (account VARCHAR, cluster_id VARCHAR, ts DOUBLE, topic VARCHAR, msg JSON);
CREATE TABLE IF NOT EXISTS worker_samples (
    account VARCHAR, cluster_id VARCHAR, ts DOUBLE, n_workers BIGINT, n_threads BIGINT,
    memory_used BIGINT, memory_total BIGINT, tasks_processing BIGINT, tasks_ready BIGINT);
CREATE TABLE IF NOT EXISTS worker_changes (
    account VARCHAR, cluster_id VARCHAR, ts DOUBLE, change VARCHAR, worker VARCHAR, name VARCHAR,
    host VARCHAR, nthreads BIGINT, memory_limit BIGINT, versions JSON, reason VARCHAR);
CREATE TABLE IF NOT EXISTS version_mismatches (
    account VARCHAR, cluster_id VARCHAR, ts DOUBLE, package VARCHAR, versions JSON);
CREATE TABLE IF NOT EXISTS idle_intervals (
    account VARCHAR, cluster_id VARCHAR, start DOUBLE, stop DOUBLE, PRIMARY KEY (account, cluster_id, start));
CREATE TABLE IF NOT EXISTS profiles (
    account VARCHAR, cluster_id VARCHAR, computation_id VARCHAR, start DOUBLE, stop DOUBLE, data JSON);
CREATE TABLE IF NOT EXISTS parsl_runs (
    account VARCHAR, cluster_id VARCHAR, run_id VARCHAR, workflow_name VARCHAR, start DOUBLE, stop DOUBLE,
    tasks BIGINT, tasks_failed BIGINT, apps JSON, failures JSON, workers BIGINT, cores BIGINT,
    wall_s DOUBLE, core_seconds DOUBLE, compute_s DOUBLE, cost DOUBLE, PRIMARY KEY (account, cluster_id));
CREATE TABLE IF NOT EXISTS rejected_batches (
    account VARCHAR, token_user VARCHAR, received DOUBLE, status INTEGER, reason VARCHAR, size BIGINT, body BLOB);
CREATE TABLE IF NOT EXISTS unknown_messages (account VARCHAR, cluster_id VARCHAR, ts DOUBLE, kind VARCHAR, body JSON);
"""


#: (table, column, type) added after the tables' first release, in order (`_migrate` adds them to older stores)
_ADDED_COLUMNS = (("clusters", "claimed_user", "VARCHAR"), ("clusters", "send_interval", "DOUBLE"),
                  ("exceptions", "allowed_failures", "BIGINT"))

#: how much of a refused body is kept aside (enough to see what a broken sender sent)
MAX_REJECTED_BYTES = 64 * 1024

#: the fields kept of a parsl.run message's apps and failures (what the pages show)
_APP_FIELDS = ("app_name", "tasks", "failed", "mean_run_s", "mean_duration_s")
FAILURE_FIELDS = ("exception_type", "count", "tasks", "message")


class AccountError(ValueError):
    """An account, user or token operation that cannot be done (unknown account, empty name...)."""


class BatchRefused(ValueError):
    """A well-formed batch the store cannot take (nothing of it is stored): `status` is the HTTP answer,
    409 for a cluster of another user, 400 for figures that contradict what is stored (a stop before
    the start, a worker sample after the stop)."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status, self.reason = status, reason


def hash_token(token: str) -> str:
    """The SHA-256 hex digest under which a token is stored (tokens are random, so no salt is needed).

    >>> hash_token("tsf_x")[:12]
    'd99ba3da6df4'
    """
    return hashlib.sha256(token.encode()).hexdigest()


def _json(value) -> str | None:
    return None if value is None else json.dumps(value)


def _number(value) -> float | None:
    """A numeric field as a float; anything else, and a number no finite float holds (inf, NaN,
    10**400), as NULL. Times are checked by the protocol before they get here."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def _positive(value) -> float | None:
    number = _number(value)
    return number if number is not None and number > 0 else None


def _integer(value) -> int | None:
    number = _number(value)
    # beyond BIGINT is a sender's bug: stored as unknown rather than refusing the batch
    return int(number) if number is not None and abs(number) < 2**63 else None


def _valid_unicode(batch: dict) -> dict:
    """`batch` with lone surrogates (valid JSON escapes, invalid UTF-8) replaced by "?", which DuckDB requires."""
    text = json.dumps(batch, ensure_ascii=False)
    try:
        text.encode("utf-8")
        return batch
    except UnicodeEncodeError:
        return json.loads(text.encode("utf-8", "replace").decode("utf-8"))


def _text(value) -> str | None:
    return None if value is None else str(value)


def _mapping(value) -> str | None:
    """A JSON object field as JSON text; anything else (a sender's bug) as NULL, so pages can rely on it."""
    return json.dumps(value) if isinstance(value, dict) else None


def _names(value) -> str:
    """A list-of-names field as a JSON list of strings (empty when it is not a list)."""
    return json.dumps([str(item) for item in value] if isinstance(value, list) else [])


def _records_of(value, fields: tuple[str, ...]) -> str:
    """A list-of-objects field as a JSON list of objects with exactly `fields` (missing ones null)."""
    items = value if isinstance(value, list) else []
    return json.dumps([{field: item.get(field) for field in fields} for item in items if isinstance(item, dict)])


def _code_frames(value) -> str:
    """Calling-code frames as a JSON list of {filename, lineno, code, code_lineno}; anything else dropped."""
    frames = value if isinstance(value, list) else []
    return json.dumps([{"filename": _text(f.get("filename")), "lineno": _integer(f.get("lineno")),
                        "code": _text(f.get("code")), "code_lineno": _integer(f.get("code_lineno"))}
                       for f in frames if isinstance(f, dict)])


class FleetDB:
    """The server's store in one DuckDB file; safe to share between request threads.

    >>> db = FleetDB("fleet.duckdb")  # doctest: +SKIP
    >>> db.store_batch(token_account="physics", token_user="alice", batch=batch)  # doctest: +SKIP
    """

    def __init__(self, path: str):
        self.path = path
        check_store_file(path, "fleet store", sqlite_hint=None)  # before DuckDB, which would try to attach it
        self.con = duckdb.connect(path)
        self._lock = threading.Lock()
        self.con.execute(SCHEMA)
        self.con.execute("SET TimeZone = 'UTC'")
        self.con.execute("SET enable_progress_bar = false")  # DuckDB would draw it into the server's output
        _migrate(self.con)

    def close(self) -> None:
        """Checkpoint and close the file."""
        with self._lock:
            self.con.close()

    @contextmanager
    def _transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        with self._lock:
            self.con.execute("BEGIN TRANSACTION")
            try:
                yield self.con
            except BaseException:
                self.con.execute("ROLLBACK")
                raise
            self.con.execute("COMMIT")

    def query(self, sql: str, params: list | dict = ()) -> pd.DataFrame:
        """Run one parameterised SELECT (`?` with a list, `$name` with a dict) and return its rows."""
        with self._lock:
            return self.con.execute(sql, params if isinstance(params, dict) else list(params)).df()

    # accounts, users, tokens -------------------------------------------------------------

    def create_account(self, account: str) -> bool:
        """Create `account` (a team); False if it already existed."""
        if not account or not account.strip():
            raise AccountError("an account name must not be empty")
        with self._transaction() as con:
            if con.execute("SELECT 1 FROM accounts WHERE account = ?", [account]).fetchone():
                return False
            con.execute("INSERT INTO accounts VALUES (?, ?)", [account, time.time()])
            return True

    def create_token(self, account: str, user: str, admin: bool = False) -> str:
        """A new API token for `user` of `account` (which must exist); only its hash is stored.

        The token is returned once: nothing can show it again. An `admin` token may also create
        and revoke tokens of its own account through the server (`POST /api/v1/tokens`).
        """
        if not user or not user.strip():
            raise AccountError("a user name must not be empty")
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        now = time.time()
        with self._transaction() as con:
            if not con.execute("SELECT 1 FROM accounts WHERE account = ?", [account]).fetchone():
                raise AccountError(f"no account {account!r} (create it with `taskscope fleet account create {account}`)")
            con.execute("INSERT INTO users SELECT ?, ?, ? WHERE NOT EXISTS "
                        "(SELECT 1 FROM users WHERE account = ? AND user_name = ?)", [account, user, now, account, user])
            con.execute("INSERT INTO tokens VALUES (?, ?, ?, ?, ?, NULL, ?)",
                        [hash_token(token), token[:len(TOKEN_PREFIX) + 4], account, user, now, admin])
        return token

    def revoke_token(self, token: str, account: str | None = None) -> bool:
        """Revoke a token given in full (only one of `account`, if given); False if no such live token."""
        with self._transaction() as con:
            found = con.execute("SELECT 1 FROM tokens WHERE token_sha256 = ? AND revoked IS NULL "
                                "AND (? IS NULL OR account = ?)", [hash_token(token), account, account]).fetchone()
            if found:
                con.execute("UPDATE tokens SET revoked = ? WHERE token_sha256 = ?", [time.time(), hash_token(token)])
            return bool(found)

    def account_for_token(self, token: str | None) -> tuple[str, str, bool] | None:
        """(account, user, admin) of a live token, else None."""
        if not token:
            return None
        with self._lock:
            row = self.con.execute("SELECT account, user_name, admin FROM tokens WHERE token_sha256 = ? "
                                   "AND revoked IS NULL", [hash_token(token)]).fetchone()
        return (row[0], row[1], bool(row[2])) if row else None

    # ingest ------------------------------------------------------------------------------

    def store_rejected(self, account: str, token_user: str, status: int, reason: str, size: int,
                       body: bytes | None) -> None:
        """Keep aside a refused body (its first `MAX_REJECTED_BYTES`; none when it was too large)."""
        with self._transaction() as con:
            con.execute("INSERT INTO rejected_batches VALUES (?, ?, ?, ?, ?, ?, ?)",
                        [account, token_user, time.time(), status, reason, size,
                         None if body is None else body[:MAX_REJECTED_BYTES]])

    def store_batch(self, account: str, token_user: str, batch: dict) -> bool:
        """Store a validated batch for `account`, committed before this returns; False for a resend.

        `BatchRefused` (nothing stored) for a cluster that another user of the account sent first, or
        figures that contradict the cluster's (`_check_cluster_figures`).
        """
        batch = _valid_unicode(batch)
        cluster = batch["cluster"]
        cluster_id = cluster["cluster_id"]
        now = time.time()
        with self._transaction() as con:
            _check_owner(con, account, cluster_id, token_user)
            stored = con.execute("INSERT INTO batches VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING "
                                 "RETURNING batch_id",
                                 [account, batch["batch_id"], cluster_id, token_user, now,
                                  _number(batch.get("sent_at")), len(batch["messages"]), json.dumps(batch)]).fetchone()
            if stored is None:  # a resend: stored the first time
                return False
            _upsert_cluster(con, account, cluster, token_user, now)
            writer = _BatchWriter(con)
            for message in batch["messages"]:
                _PROJECTIONS.get(message["kind"], _store_unknown)(writer, account, cluster_id, message)
            writer.flush()
            _check_cluster_figures(con, account, cluster_id)
        return True


class _BatchWriter:
    """The connection of one batch's transaction, with appends gathered per table and written as
    multi-row INSERTs at the end (one statement per table, not per message: a batch of a hundred
    exceptions costs one round through DuckDB's statement overhead, not a hundred)."""

    #: rows per INSERT statement (DuckDB binds at most a few thousand parameters comfortably)
    ROWS_PER_STATEMENT = 200

    def __init__(self, con: duckdb.DuckDBPyConnection):
        self.con = con
        self.pending: dict[str, list[list]] = {}

    def execute(self, sql: str, params: list) -> None:
        self.con.execute(sql, params)

    def append(self, table: str, row: list) -> None:
        self.pending.setdefault(table, []).append(row)

    def discard(self, table: str, keep: Callable[[list], bool]) -> None:
        self.pending[table] = [row for row in self.pending.get(table, []) if keep(row)]

    def flush(self) -> None:
        for table, rows in self.pending.items():
            for first in range(0, len(rows), self.ROWS_PER_STATEMENT):
                chunk = rows[first:first + self.ROWS_PER_STATEMENT]
                one_row = "(" + ", ".join("?" * len(chunk[0])) + ")"
                # `table` is one of this module's table names, never input
                self.con.execute(f"INSERT INTO {table} VALUES " + ", ".join([one_row] * len(chunk)),
                                 [value for row in chunk for value in row])
        self.pending.clear()


def _migrate(con: duckdb.DuckDBPyConnection) -> None:
    """Bring a store written by an older server to this schema, in place (columns are only added).

    Stores from before ``claimed_user`` kept the sender's claimed ``user`` as the cluster's user:
    that claim moves to ``claimed_user`` and the user becomes the token's (of the cluster's first batch).
    """
    columns = set(con.execute("SELECT table_name, column_name FROM information_schema.columns").fetchall())
    missing = [(table, name, kind) for table, name, kind in _ADDED_COLUMNS if (table, name) not in columns]
    if not missing:
        return
    con.execute("BEGIN TRANSACTION")
    for table, name, kind in missing:  # names and types from `_ADDED_COLUMNS`, never input
        con.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")
    if ("clusters", "claimed_user") not in columns:
        con.execute("UPDATE clusters SET claimed_user = user_name, user_name = coalesce(("
                    "SELECT arg_min(b.token_user, b.received) FROM batches b WHERE b.account = clusters.account "
                    "AND b.cluster_id = clusters.cluster_id), user_name)")
    con.execute("COMMIT")


def _check_owner(con: duckdb.DuckDBPyConnection, account: str, cluster_id: str, token_user: str) -> None:
    """Refuse (409) a batch for a cluster that another user of the account sent first: a member's token
    must not rename, re-attribute or add samples to a colleague's cluster."""
    row = con.execute("SELECT user_name FROM clusters WHERE account = ? AND cluster_id = ?",
                      [account, cluster_id]).fetchone()
    if row is not None and row[0] is not None and row[0] != token_user:
        raise BatchRefused(409, f"cluster {cluster_id} belongs to {row[0]}, not to this token's user {token_user}: "
                                "a sender picks a new cluster_id for each cluster")


def _check_cluster_figures(con: duckdb.DuckDBPyConnection, account: str, cluster_id: str) -> None:
    """Refuse (400) a batch after which the cluster would stop before it started, or hold a worker
    sample before its start or after its stop: its duration or core time would be negative, or
    count time the cluster did not run."""
    started, stopped, early, late = con.execute(
        "SELECT c.started, c.stopped, "
        "(SELECT min(s.ts) FROM worker_samples s WHERE s.account = c.account "
        "AND s.cluster_id = c.cluster_id AND s.ts < c.started), "
        "(SELECT max(s.ts) FROM worker_samples s WHERE s.account = c.account "
        "AND s.cluster_id = c.cluster_id AND s.ts > c.stopped) FROM clusters c "
        "WHERE c.account = ? AND c.cluster_id = ?", [account, cluster_id]).fetchone()
    if started is not None and stopped is not None and stopped < started:
        raise BatchRefused(400, f"the cluster would stop ({stopped}) before it started ({started})")
    if early is not None:
        raise BatchRefused(400, f"a workers sample at {early} is before the cluster's start ({started})")
    if late is not None:
        raise BatchRefused(400, f"a workers sample at {late} is after the cluster's stop ({stopped})")


def _upsert_cluster(con: duckdb.DuckDBPyConnection, account: str, cluster: dict, token_user: str, now: float) -> None:
    """Insert or refresh a cluster's identity. Its user is the token's user of its first batch; the
    ``user`` a sender claims is kept only as ``claimed_user`` (shown, never used to attribute or group)."""
    identity = [_text(cluster.get("kind")), _text(cluster.get("name")), token_user, _text(cluster.get("user")),
                _text(cluster.get("host")), _text(cluster.get("address"))]
    con.execute("INSERT INTO clusters (account, cluster_id, kind, name, user_name, claimed_user, host, address, "
                "first_seen, last_seen, price_per_core_hour, price_per_gb_hour) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT DO UPDATE SET kind = excluded.kind, name = coalesce(excluded.name, clusters.name), "
                "claimed_user = coalesce(excluded.claimed_user, clusters.claimed_user), "
                "host = coalesce(excluded.host, clusters.host), "
                "address = coalesce(excluded.address, clusters.address), "
                "last_seen = greatest(clusters.last_seen, excluded.last_seen)",
                [account, cluster["cluster_id"], *identity, now, now, DEFAULT_PRICE_PER_CORE_HOUR,
                 DEFAULT_PRICE_PER_GB_HOUR])


def _store_cluster_start(con: "_BatchWriter", account: str, cluster_id: str, m: dict) -> None:
    con.execute(
        "UPDATE clusters SET scheduler_id = coalesce(?, scheduler_id), address = coalesce(?, address), "
        "dashboard_link = coalesce(?, dashboard_link), started = ?, python = ?, platform = ?, versions = ?, "
        "config = ?, price_per_core_hour = coalesce(?, price_per_core_hour), "
        "price_per_gb_hour = coalesce(?, price_per_gb_hour), send_interval = coalesce(?, send_interval) "
        "WHERE account = ? AND cluster_id = ?",
        [_text(m.get("scheduler_id")), _text(m.get("address")), _text(m.get("dashboard_link")),
         _number(m.get("started")) or m["ts"], _text(m.get("python")), _text(m.get("platform")),
         _mapping(m.get("versions")), _mapping(m.get("config")), _number(m.get("price_per_core_hour")),
         _number(m.get("price_per_gb_hour")), _positive(m.get("interval")), account, cluster_id])


def _store_cluster_stop(con: "_BatchWriter", account: str, cluster_id: str, m: dict) -> None:
    con.execute("UPDATE clusters SET stopped = ? WHERE account = ? AND cluster_id = ?",
                [_number(m.get("stopped")) or m["ts"], account, cluster_id])


def _store_workers(con: "_BatchWriter", account: str, cluster_id: str, m: dict) -> None:
    con.append("worker_samples",
               [account, cluster_id, m["ts"], *(_integer(m.get(k)) for k in (
                   "n_workers", "n_threads", "memory_used", "memory_total", "tasks_processing", "tasks_ready"))])


def _store_worker_change(con: "_BatchWriter", account: str, cluster_id: str, m: dict) -> None:
    con.append("worker_changes",
               [account, cluster_id, m["ts"], m["kind"].removeprefix("worker."), _text(m.get("worker")),
                _text(m.get("name")), _text(m.get("host")), _integer(m.get("nthreads")),
                _integer(m.get("memory_limit")), _mapping(m.get("versions")), _text(m.get("reason"))])


def _store_mismatch(con: "_BatchWriter", account: str, cluster_id: str, m: dict) -> None:
    con.append("version_mismatches",
               [account, cluster_id, m["ts"], _text(m.get("package")), _mapping(m.get("versions")) or "{}"])


def _store_computation(con: "_BatchWriter", account: str, cluster_id: str, m: dict) -> None:
    computation_id = _text(m.get("computation_id")) or f"at-{m['ts']}"
    key = [account, cluster_id, computation_id]
    # a resend of a running computation replaces what was known of it
    con.execute("DELETE FROM computations WHERE account = ? AND cluster_id = ? AND computation_id = ?", key)
    con.execute("DELETE FROM task_groups WHERE account = ? AND cluster_id = ? AND computation_id = ?", key)
    con.execute("INSERT INTO computations VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [*key, m["ts"], _number(m.get("start")), _number(m.get("stop")), _code_frames(m.get("code")),
                 _names(m.get("span_name")) if m.get("span_name") is not None else None])
    # the same computation earlier in this batch: its groups are not written yet
    con.discard("task_groups", lambda row: row[:3] != key)
    for g in m.get("groups") if isinstance(m.get("groups"), list) else []:
        if isinstance(g, dict):
            con.append("task_groups", [
                *key, _text(g.get("name")), _text(g.get("prefix")), _mapping(g.get("states")) or "{}",
                _integer(g.get("n_tasks")), _number(g.get("compute_s")), _number(g.get("transfer_s")),
                _number(g.get("disk_s")), _integer(g.get("nbytes")), _number(g.get("start")), _number(g.get("stop")),
                _names(g.get("dependencies"))])


def _store_exception(con: "_BatchWriter", account: str, cluster_id: str, m: dict) -> None:
    con.append("exceptions",
               [account, cluster_id, m["ts"], *(_text(m.get(k)) for k in (
                   "key", "task_group", "exception_text", "traceback_text", "worker", "computation_id")),
                _integer(m.get("allowed_failures"))])


def _store_event(con: "_BatchWriter", account: str, cluster_id: str, m: dict) -> None:
    con.append("cluster_events",
               [account, cluster_id, m["ts"], _text(m.get("topic")), _json(m.get("msg"))])


def _store_idle(con: "_BatchWriter", account: str, cluster_id: str, m: dict) -> None:
    start = _number(m.get("start")) or m["ts"]
    # an open interval is sent again once it closes: same start, now with a stop
    con.execute("DELETE FROM idle_intervals WHERE account = ? AND cluster_id = ? AND start = ?",
                [account, cluster_id, start])
    con.execute("INSERT INTO idle_intervals VALUES (?, ?, ?, ?)", [account, cluster_id, start, _number(m.get("stop"))])


def _store_profile(con: "_BatchWriter", account: str, cluster_id: str, m: dict) -> None:
    con.append("profiles",
               [account, cluster_id, _text(m.get("computation_id")), _number(m.get("start")),
                _number(m.get("stop")), _json(m.get("data"))])


def _store_parsl_run(con: "_BatchWriter", account: str, cluster_id: str, m: dict) -> None:
    start, stop = _number(m.get("start")), _number(m.get("stop"))
    con.execute("DELETE FROM parsl_runs WHERE account = ? AND cluster_id = ?", [account, cluster_id])
    # the run's failed tries follow it in the same batch: an upload again replaces them too
    con.execute("DELETE FROM exceptions WHERE account = ? AND cluster_id = ?", [account, cluster_id])
    con.execute("INSERT INTO parsl_runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [account, cluster_id, _text(m.get("run_id")), _text(m.get("workflow_name")), start, stop,
                 _integer(m.get("tasks")), _integer(m.get("tasks_failed")), _records_of(m.get("apps"), _APP_FIELDS),
                 _records_of(m.get("failures"), FAILURE_FIELDS), _integer(m.get("workers")), _integer(m.get("cores")),
                 _number(m.get("wall_s")), _number(m.get("core_seconds")), _number(m.get("compute_s")),
                 _number(m.get("cost"))])
    # a Parsl run is its own cluster: its start and stop are the run's
    con.execute("UPDATE clusters SET started = coalesce(?, started), stopped = coalesce(?, stopped) "
                "WHERE account = ? AND cluster_id = ?", [start, stop, account, cluster_id])


def _store_unknown(con: "_BatchWriter", account: str, cluster_id: str, m: dict) -> None:
    # a newer sender's message kind: kept aside whole, never dropped
    con.append("unknown_messages",
               [account, cluster_id, m["ts"], m["kind"], json.dumps(m)])


_PROJECTIONS: dict[str, Callable] = {
    "cluster.start": _store_cluster_start, "cluster.stop": _store_cluster_stop, "workers": _store_workers,
    "worker.add": _store_worker_change, "worker.remove": _store_worker_change,
    "versions.mismatch": _store_mismatch, "computation": _store_computation, "exception": _store_exception,
    "event": _store_event, "idle": _store_idle, "profile": _store_profile, "parsl.run": _store_parsl_run,
}
