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
        "kind": "dask",                 # "dask" | "parsl"
        "name": "Scheduler-<uuid>",     # Dask scheduler id, or the Parsl run id
        "user": "alice",                # who created it (plugin arg, else getpass.getuser())
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
                       price_per_core_hour, price_per_gb_hour
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
``exception``          key, task_group, exception_text, traceback_text, worker, computation_id
``event``              topic, msg (JSON-safe; only topics allowed by events.allow)
``idle``               start, stop (an interval with no task processing; stop null while idle)
``profile``            computation_id (optional), start, stop, data (Dask profile tree, bounded)
``parsl.run``          (kind "parsl" clusters) run_id, workflow_name, start, stop, tasks, tasks_failed,
                       apps: [{app_name, tasks, failed, mean_duration_s}], failures: [{exception_type, count}],
                       workers, cores, wall_s, core_seconds, cost,
                       compute_s (added by the server side: the tasks' run times summed, like a Dask
                       cluster's task-group compute_s)

Cost: the server estimates cluster cost as
``core_seconds/3600 * price_per_core_hour + gb_seconds/3600 * price_per_gb_hour``, integrating the
``workers`` samples over time (step function), with the prices from ``cluster.start``
(defaults `DEFAULT_PRICE_PER_CORE_HOUR`, `DEFAULT_PRICE_PER_GB_HOUR`).
"""

from __future__ import annotations

PROTOCOL_VERSION = 1
INGEST_PATH = "/api/v1/ingest"
#: the server refuses bodies above this (after decompression); senders split batches below it
MAX_BATCH_BYTES = 4 * 1024 * 1024
#: a single message above this is cut down by the sender (tracebacks, code, profiles are truncated)
MAX_MESSAGE_BYTES = 256 * 1024
#: seconds between two sends of the Dask plugin
DEFAULT_SEND_INTERVAL_S = 10.0
DEFAULT_PRICE_PER_CORE_HOUR = 0.05
DEFAULT_PRICE_PER_GB_HOUR = 0.005

MESSAGE_KINDS = frozenset({
    "cluster.start", "cluster.stop", "workers", "worker.add", "worker.remove", "versions.mismatch",
    "computation", "exception", "event", "idle", "profile", "parsl.run",
})
CLUSTER_KINDS = frozenset({"dask", "parsl"})


class ProtocolError(ValueError):
    """A batch that does not follow this protocol (the server answers 400 with the message)."""


def validate_batch(batch: object) -> dict:
    """Check the envelope of a decoded batch and return it; raise `ProtocolError` if it is not one.

    Messages of an unknown kind are kept (a newer plugin may send them); a message without
    ``kind`` or a numeric ``ts`` is an error.

    >>> validate_batch({"protocol": 1, "batch_id": "ab", "cluster": {"cluster_id": "c1", "kind": "dask"},
    ...                 "messages": [{"kind": "workers", "ts": 1.0, "n_workers": 2}]})["batch_id"]
    'ab'
    """
    if not isinstance(batch, dict):
        raise ProtocolError("the body must be a JSON object")
    if batch.get("protocol") != PROTOCOL_VERSION:
        raise ProtocolError(f"unsupported protocol {batch.get('protocol')!r} (this server speaks {PROTOCOL_VERSION})")
    if not isinstance(batch.get("batch_id"), str) or not batch["batch_id"]:
        raise ProtocolError("batch_id must be a non-empty string")
    cluster = batch.get("cluster")
    if not isinstance(cluster, dict) or not isinstance(cluster.get("cluster_id"), str) or not cluster["cluster_id"]:
        raise ProtocolError("cluster.cluster_id must be a non-empty string")
    if cluster.get("kind") not in CLUSTER_KINDS:
        raise ProtocolError(f"cluster.kind must be one of {sorted(CLUSTER_KINDS)}")
    messages = batch.get("messages")
    if not isinstance(messages, list):
        raise ProtocolError("messages must be a list")
    for position, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("kind"), str):
            raise ProtocolError(f"messages[{position}] has no kind")
        if not isinstance(message.get("ts"), (int, float)) or isinstance(message.get("ts"), bool):
            raise ProtocolError(f"messages[{position}] has no numeric ts")
    return batch
