"""The fleet wire protocol: what a plugin (or `taskscope fleet upload`) POSTs to the server.

This module is the contract between the sender side (`taskscope.fleet.dask`, the Parsl uploader)
and the server (`taskscope.fleet.server`). It is plain data: no Dask, no FastAPI.

Transport
---------
``POST {server}/api/v1/ingest`` with header ``Authorization: Bearer <token>`` and a JSON body
(``Content-Type: application/json``, optionally ``Content-Encoding: gzip``)::

    {
      "protocol": 1,
      "batch_id": "<uuid4 hex>",        # idempotency key: the server stores a batch once
      "sent_at": 1764547200.123,        # sender clock, epoch seconds
      "cluster": {                      # identity, repeated on every batch
        "cluster_id": "<uuid4 hex>",    # chosen by the sender, stable for one scheduler lifetime
                                        # (1-128 of A-Z a-z 0-9 . _ : ~ -: it is part of a URL)
        "kind": "dask",                 # "dask" | "parsl" | "workflow" (a run of another system's logs)
        "name": "Scheduler-<uuid>",     # Dask scheduler id, or the run id
        "user": "alice",                # a claim only (plugin arg, else getpass.getuser()): the server
                                        # attributes the cluster to the token's user, keeps this as claimed_user
        "host": "node01",
        "address": "tcp://10.0.0.1:8786"   # optional
      },
      "messages": [ {"kind": "...", "ts": <epoch s>, ...}, ... ]
    }

The server answers ``200 {"accepted": <n messages>, "batch_id": ...}`` only after the batch is
durably committed (so a sender may delete it from its spool), ``401`` for a missing or unknown
token, ``400`` with ``{"error": ...}`` for a body that is not this protocol, ``413`` above
`MAX_BATCH_BYTES`. A batch whose ``batch_id`` was already stored is answered 200 again and stores
nothing new (resends after a lost reply are harmless). The account is the token's: a sender never
names an account.

Message kinds (every message has ``kind`` and ``ts``; other fields may be absent)
---------------------------------------------------------------------------------
``cluster.start``      scheduler_id, address, dashboard_link, started (epoch), python, platform,
                       versions: {package: version} of the scheduler, config: {privacy settings in force},
                       price_per_core_hour, price_per_gb_hour (per GiB-hour of memory; both in the
                       server's currency), interval (seconds between two sends: a cluster silent for
                       more than `LOST_AFTER_INTERVALS` of them is shown as lost)
``cluster.stop``       stopped (epoch)
``workers``            a sample: n_workers, n_threads, memory_used (bytes), memory_total (bytes),
                       tasks_processing, tasks_ready
``worker.add``         worker (address), name, host, nthreads, memory_limit, versions: {package: version}
``worker.remove``      worker, reason
``versions.mismatch``  package, versions: {"scheduler": v, "<worker addr>": v, "client": v}
``computation``        computation_id (stable; resend replaces), start, stop (or null while running),
                       code: [{"filename", "lineno", "code", "code_lineno"}] (empty unless
                       code.transmit; code_lineno: the calling line within code, from 1, optional),
                       span_name (list of str, optional),
                       groups: [ {name, prefix, states: {state: n}, n_tasks, compute_s, transfer_s,
                                  disk_s, nbytes, start, stop, dependencies: [group names]} ]
                       ``states`` count each of the group's tasks once (they sum to n_tasks), by
                       outcome, also after Dask has released or forgotten the tasks:
                       ``memory`` finished (its result may have been released since), ``erred``
                       failed or depended on a failure, ``waiting``/``queued``/``processing``/
                       ``no-worker`` not finished yet (as Dask has them), ``released`` ended without
                       running (cancelled, or finished before the plugin was installed). States with
                       0 tasks are left out. A finished computation's group is ``{"memory": n_tasks}``.
``exception``          key, task_group, exception_text (the exception's repr; for an error the scheduler
                       raises itself, such as ``KilledWorker``, its repr there), traceback_text, worker,
                       computation_id, allowed_failures (the scheduler's ``allowed-failures``)
``event``              topic, msg (JSON-safe; only topics allowed by events.allow)
``idle``               start, stop (an interval with no task processing; stop null while idle)
``profile``            computation_id (optional), start, stop, data (Dask profile tree, bounded)
``parsl.run``          (kind "parsl" and "workflow" clusters: a run's summary) run_id, workflow_name, start, stop, tasks, tasks_failed,
                       apps: [{app_name, tasks, failed, mean_run_s (on a worker, else from launch, to
                       the end), mean_duration_s (from submit to end)}], failures: [{exception_type, count}],
                       workers, cores, wall_s, core_seconds, cost,
                       compute_s (added by the server side: the tasks' run times summed, like a Dask
                       cluster's task-group compute_s)

Times (``ts``, ``sent_at``, a cluster's ``started``/``stopped``, the ``start``/``stop`` of computations,
their groups, idle intervals, profiles and Parsl runs) are epoch seconds within years 1-9999
(`EARLIEST_TIME` to `LATEST_TIME`): a batch with a time outside, infinite or NaN is refused (400), as
is one nesting objects and lists more than `MAX_NESTING` levels deep (the envelope takes three).
A count, size, duration or price of `NON_NEGATIVE_FIELDS` (and a group's `GROUP_NON_NEGATIVE_FIELDS`)
that is negative, NaN or above `MAX_FIGURE` (a price: above `MAX_PRICE`) is refused (400), and so
is a ``stop`` before its ``start`` in a computation, idle interval, profile or Parsl run. The server
also refuses a batch after which the cluster would stop before it started, or hold a ``workers``
sample before its start or after its stop (400), and a batch for a cluster_id
that another user of the account sent first (409: each cluster belongs to one token's user).

Cost: the server estimates cluster cost as
``core_seconds/3600 * price_per_core_hour + gb_seconds/3600 * price_per_gb_hour``, integrating the
``workers`` samples over time (step function), with the prices from ``cluster.start``
(defaults `DEFAULT_PRICE_PER_CORE_HOUR`, `DEFAULT_PRICE_PER_GB_HOUR`).
"""

from __future__ import annotations

import re

from taskscope.time_bounds import EARLIEST_TIME, LATEST_TIME

PROTOCOL_VERSION = 1
INGEST_PATH = "/api/v1/ingest"
#: the server refuses bodies above this (after decompression); senders split batches below it
MAX_BATCH_BYTES = 4 * 1024 * 1024
#: a single message above this is cut down by the sender (tracebacks, code, profiles are truncated)
MAX_MESSAGE_BYTES = 256 * 1024
#: seconds between two sends of the Dask plugin
DEFAULT_SEND_INTERVAL_S = 10.0
#: a Dask cluster that has sent nothing for more than this many send intervals, and has not
#: stopped, is shown as lost (its scheduler was killed or cut off); its next batch brings it back
LOST_AFTER_INTERVALS = 3
#: how far back the reads look unless told otherwise: `taskscope.fleet.api`'s list calls, the JSON API's
#: ``since`` (``/api/v1/clusters``, ``/api/v1/exceptions``) and the pages' (``/``, ``/clusters``) alike
DEFAULT_SINCE = "90 days"
DEFAULT_PRICE_PER_CORE_HOUR = 0.05
DEFAULT_PRICE_PER_GB_HOUR = 0.005

#: at most this many levels of nested objects and lists in a batch: the read API's JSON encoder
#: stops at 255, and Python's decoder at its recursion limit (5,000 ``[`` would end as a 500)
MAX_NESTING = 200
#: the time fields of each message kind besides ``ts`` (a computation's groups have ``start``/``stop`` too)
TIME_FIELDS = {"cluster.start": ("started",), "cluster.stop": ("stopped",), "computation": ("start", "stop"),
               "idle": ("start", "stop"), "profile": ("start", "stop"), "parsl.run": ("start", "stop")}
#: the fields of each message kind that count or price something: a negative number is refused
NON_NEGATIVE_FIELDS = {
    "workers": ("n_workers", "n_threads", "memory_used", "memory_total", "tasks_processing", "tasks_ready"),
    "worker.add": ("nthreads", "memory_limit"),
    "cluster.start": ("price_per_core_hour", "price_per_gb_hour", "interval"),
    "parsl.run": ("tasks", "tasks_failed", "workers", "cores", "wall_s", "core_seconds", "compute_s", "cost"),
}
GROUP_NON_NEGATIVE_FIELDS = ("n_tasks", "compute_s", "transfer_s", "disk_s", "nbytes")
#: the largest count, size or duration taken (a BIGINT's range: a cost summed from such figures stays finite)
MAX_FIGURE = 9e18
#: the largest price per core-hour or per GiB-hour taken: a price of 1e308 made every cost infinite
MAX_PRICE = 1e6
PRICE_FIELDS = ("price_per_core_hour", "price_per_gb_hour")
#: message kinds whose ``stop`` may not come before their ``start`` (their durations are shown and summed)
SPANNING_KINDS = frozenset({"computation", "idle", "profile", "parsl.run"})
TOO_DEEP = f"objects and lists may nest at most {MAX_NESTING} levels deep"
#: what JSON numbers decode to (bool, a subclass of int, is not one)
_NUMBER_TYPES = (int, float)

MESSAGE_KINDS = frozenset({
    "cluster.start", "cluster.stop", "workers", "worker.add", "worker.remove", "versions.mismatch",
    "computation", "exception", "event", "idle", "profile", "parsl.run",
})
#: "workflow": a run uploaded from the logs of a system other than Parsl (Academy, generic JSON lines)
CLUSTER_KINDS = frozenset({"dask", "parsl", "workflow"})
#: what a cluster_id may hold: it is a segment of the cluster's URL (a "/" made a cluster no page could reach)
CLUSTER_ID = re.compile(r"[A-Za-z0-9._:~-]{1,128}")


class ProtocolError(ValueError):
    """A batch that does not follow this protocol (the server answers 400 with the message)."""


def validate_batch(batch: object) -> dict:
    """Check a decoded batch and return it; raise `ProtocolError` if it is not one.

    Messages of an unknown kind are kept (a newer plugin may send them); a message without
    ``kind`` or a numeric ``ts``, a time outside years 1-9999 (`TIME_FIELDS`) or a body nested
    deeper than `MAX_NESTING` is an error.

    >>> validate_batch({"protocol": 1, "batch_id": "ab", "cluster": {"cluster_id": "c1", "kind": "dask"},
    ...                 "messages": [{"kind": "workers", "ts": 1.0, "n_workers": 2}]})["batch_id"]
    'ab'
    >>> try:
    ...     validate_batch({"protocol": 1, "batch_id": "ab", "cluster": {"cluster_id": "c1", "kind": "dask"},
    ...                     "messages": [{"kind": "idle", "ts": 1.0, "start": 1e20}]})
    ... except ProtocolError as exc:
    ...     print(exc)
    messages[0].start must be epoch seconds within years 1-9999, not 1e+20
    """
    if not isinstance(batch, dict):
        raise ProtocolError("the body must be a JSON object")
    _check_envelope(batch)
    for position, message in enumerate(batch["messages"]):
        _check_message(message, position)
    if nesting_depth(batch) > MAX_NESTING:
        raise ProtocolError(TOO_DEEP)
    return batch


def _check_envelope(batch: dict) -> None:
    if batch.get("protocol") != PROTOCOL_VERSION:
        raise ProtocolError(f"unsupported protocol {batch.get('protocol')!r} (this server speaks {PROTOCOL_VERSION})")
    if not isinstance(batch.get("batch_id"), str) or not batch["batch_id"]:
        raise ProtocolError("batch_id must be a non-empty string")
    cluster = batch.get("cluster")
    if not isinstance(cluster, dict) or not isinstance(cluster.get("cluster_id"), str) or not cluster["cluster_id"]:
        raise ProtocolError("cluster.cluster_id must be a non-empty string")
    if not CLUSTER_ID.fullmatch(cluster["cluster_id"]):
        raise ProtocolError("cluster.cluster_id must be 1 to 128 letters, digits and ._:~- (it is part of the "
                            f"cluster's URL), not {cluster['cluster_id'][:60]!r}")
    if cluster.get("kind") not in CLUSTER_KINDS:
        raise ProtocolError(f"cluster.kind must be one of {sorted(CLUSTER_KINDS)}")
    if not isinstance(batch.get("messages"), list):
        raise ProtocolError("messages must be a list")
    _check_time(batch.get("sent_at"), "sent_at")


def _check_message(message: object, position: int) -> None:
    if not isinstance(message, dict) or not isinstance(message.get("kind"), str):
        raise ProtocolError(f"messages[{position}] has no kind")
    if type(message.get("ts")) not in _NUMBER_TYPES:
        raise ProtocolError(f"messages[{position}] has no numeric ts")
    for field in ("ts", *TIME_FIELDS.get(message["kind"], ())):
        _check_time(message.get(field), "messages[{}].{}", position, field)
    _check_figures(message, NON_NEGATIVE_FIELDS.get(message["kind"], ()), f"messages[{position}]")
    if message["kind"] in SPANNING_KINDS:
        _check_span(message, f"messages[{position}]")
    groups = message.get("groups") if message["kind"] == "computation" else None
    for index, group in enumerate(groups if isinstance(groups, list) else []):
        if isinstance(group, dict):
            _check_time(group.get("start"), "messages[{}].groups[{}].start", position, index)
            _check_time(group.get("stop"), "messages[{}].groups[{}].stop", position, index)
            _check_figures(group, GROUP_NON_NEGATIVE_FIELDS, f"messages[{position}].groups[{index}]")


def _check_figures(record: dict, names: tuple[str, ...], where: str) -> None:
    # a value that is not a number is left to the store, which keeps it as unknown; NaN compares false
    for name in names:
        value = record.get(name)
        if type(value) not in _NUMBER_TYPES:
            continue
        highest = MAX_PRICE if name in PRICE_FIELDS else MAX_FIGURE
        if not 0 <= value <= highest:
            raise ProtocolError(f"{where}.{name} must be a number from 0 to {highest:g}, not {repr(value)[:40]}")


def _check_span(message: dict, where: str) -> None:
    start, stop = message.get("start"), message.get("stop")
    if type(start) in _NUMBER_TYPES and type(stop) in _NUMBER_TYPES and stop < start:
        raise ProtocolError(f"{where}.stop ({stop!r}) is before its start ({start!r})")


def _check_time(value: object, where: str, *place: object) -> None:
    # `where` is formatted only on an error: a big batch has tens of thousands of times to check.
    # Comparing keeps Python's big integers exact (float(10**400) would raise); NaN compares false.
    # A time that is not a number is left to the store, which keeps it as unknown.
    if type(value) in _NUMBER_TYPES and not EARLIEST_TIME <= value <= LATEST_TIME:
        shown = repr(value)[:40]
        raise ProtocolError(f"{where.format(*place)} must be epoch seconds within years 1-9999, not {shown}")


def nesting_depth(value: object) -> int:
    """How many levels of objects and lists `value` nests (0 for a scalar), without recursing,
    and counting at most one level past `MAX_NESTING`.

    >>> nesting_depth({"a": [1, {"b": []}]}), nesting_depth("x")
    (4, 0)
    """
    depth, level = 0, [value] if isinstance(value, (dict, list)) else []
    while level and depth <= MAX_NESTING:
        depth += 1
        level = [child for node in level for child in (node.values() if isinstance(node, dict) else node)
                 if isinstance(child, (dict, list))]
    return depth
