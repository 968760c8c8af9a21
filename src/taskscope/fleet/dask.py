"""The Dask scheduler plugin: records a cluster's life and sends it to a taskscope fleet server.

Install it on a running cluster from a client::

    from taskscope.fleet.dask import register
    register(client, server="http://fleet.example.org:8090", token="...")

or when starting a scheduler::

    dask scheduler --preload taskscope.fleet.dask --fleet-server http://... --fleet-token ...
    # or DASK_TASKSCOPE__FLEET__SERVER / DASK_TASKSCOPE__FLEET__TOKEN in the environment

What it sends (message kinds of `taskscope.fleet.protocol`): ``cluster.start``/``cluster.stop``,
``workers`` samples, ``worker.add``/``worker.remove`` with versions, ``versions.mismatch``,
``computation`` (task groups, code when ``taskscope.fleet.code.transmit``), ``exception``,
``event`` (allow-listed topics), ``idle`` intervals and, when ``taskscope.fleet.profile.transmit``,
``profile``. Never a task's input or result: only keys, group names, counts, durations and sizes.

The hot path is `FleetPlugin.transition`: it returns after two comparisons except on the ``-> memory``
and ``-> erred`` edges, where it adds one to its group's count of finished or erred tasks (Dask's
own ``TaskGroup.states`` says ``released``/``forgotten`` once results are gathered, not how the
tasks ended), and on ``processing -> erred``, which also records the exception. Everything else is
read every ``interval`` seconds (see `outcome_states` for what a group's ``states`` then say).
"""

from __future__ import annotations

import asyncio
import json
import logging
import platform
import socket
import sys
import time
import uuid
from collections import Counter, defaultdict

import click
import dask.config
from distributed import get_client
from distributed.diagnostics.plugin import SchedulerPlugin
from distributed.protocol import pickle
from distributed.versions import get_versions
from tornado.ioloop import PeriodicCallback

from taskscope.fleet.protocol import MAX_NESTING
from taskscope.fleet.sender import Sender, check_server_url, encoded_size, tls_verification
from taskscope.fleet.settings import DEFAULTS, FleetSettings

logger = logging.getLogger(__name__)
dask.config.update_defaults(DEFAULTS)

PLUGIN_NAME = "taskscope-fleet"
#: exceptions sent per task group; more are counted in ``cluster.stop`` (one failing map could send 100k)
MAX_EXCEPTIONS_PER_GROUP = 100
#: call-stack frames kept of a profile tree: each takes two levels of nesting (node, children), and
#: the server refuses a batch nested deeper than `MAX_NESTING` (the message around it takes ~6)
MAX_PROFILE_FRAMES = (MAX_NESTING - 10) // 2
#: scheduler actions (published on topic "all") that an allow-list entry may name instead of a topic
ACTION_TOPIC = "all"
#: what a ``nframes`` of 0 becomes on the client when code is transmitted (Coiled uses 2 as well)
CODE_FRAMES = 2
#: seconds after a computation's stop before its profile is asked for: workers file their samples
#: once per ``distributed.worker.profile.cycle`` (1 s by default)
PROFILE_SETTLE_S = 1.5
#: task states that are neither an outcome nor released: reported as Dask has them
ACTIVE_STATES = ("waiting", "queued", "processing", "no-worker")


class FleetPlugin(SchedulerPlugin):
    """Scheduler plugin sending a cluster's analytics to a fleet server (see the module docstring).

    Build it with `register()` or `dask_setup`; both read the ``taskscope.fleet`` Dask config.

    >>> plugin = FleetPlugin(FleetSettings(server="http://127.0.0.1:8090", token="t"))
    >>> plugin.name, plugin.idempotent
    ('taskscope-fleet', True)
    """

    name = PLUGIN_NAME
    idempotent = True

    def __init__(self, settings: FleetSettings):
        self.settings = settings
        self._started = False
        self._closed = False
        # read by the hot path before `start` (it finds no task there until the plugin runs)
        self._tasks: dict = {}
        self._reached: dict[str, defaultdict] = {"memory": defaultdict(int), "erred": defaultdict(int)}

    # ---- lifecycle -------------------------------------------------------------------------
    async def start(self, scheduler) -> None:
        """Seed state from what the scheduler holds already (hooks are not replayed), then send."""
        if self._started:  # `dask_setup` starts the plugin and the scheduler starts it again
            return
        self._started = True
        if self.settings.disabled:
            return
        try:
            self._begin(scheduler)
        except Exception:  # e.g. an unwritable spool folder: the scheduler must start anyway
            logger.exception("taskscope fleet: the plugin could not start; nothing will be sent")
            self._closed = True

    def _begin(self, scheduler) -> None:
        self.scheduler = scheduler
        self._tasks = scheduler.tasks
        self.cluster_id = uuid.uuid4().hex
        self.sender = Sender(self.settings.server, self.settings.token, self._cluster_identity(),
                             spool_dir=self.settings.spool_directory, max_spool_bytes=self.settings.spool_max_bytes,
                             retry_max_s=self.settings.retry_max, verify=self.settings.verify)
        self._reset_state()
        self._queue("cluster.start", **self._start_record())
        self._seed()
        self._tick()
        self._callbacks = [PeriodicCallback(self._tick, self.settings.interval * 1000)]
        if self.settings.profile_transmit:
            self._profile_since = time.time()
            self._callbacks.append(PeriodicCallback(self._send_profile, self.settings.profile_interval * 1000))
        for callback in self._callbacks:
            callback.start()

    def _reset_state(self) -> None:
        self._outbox: list[dict] = []
        self._scheduler_versions = get_versions()["packages"]
        self._mismatches_sent: set[tuple[str, str]] = set()
        self._computations_sent: dict[str, tuple] = {}
        # when a group's last task failed, and when each computation was first seen ended: Dask sets
        # no stop for a computation whose tasks all failed (its groups' stops come from successes only)
        self._failed_at: dict = {}
        self._ended_at: dict[str, float] = {}
        self._exceptions_per_group: Counter = Counter()
        self._exceptions_dropped = 0
        self._idle_start: float | None = None
        self._last_idle_start: float | None = None
        # ended computations whose profile is still to be sent: id -> (start, stop)
        self._profiles_due: dict[str, tuple[float, float]] = {}
        self._profiled: set[str] = set()
        self._allow = frozenset(self.settings.events_allow)

    async def before_close(self) -> None:
        """Last snapshot, ``cluster.stop``, then deliver (waiting at most the ``close-timeout`` setting)."""
        if not self._active():
            return
        self._closed = True
        for callback in self._callbacks:
            callback.stop()
        if self.settings.profile_transmit:
            await self._send_profile()
        now = time.time()
        self._tick(now=now, closing=True)
        if self.settings.profile_transmit:
            await self._send_computation_profiles(list(self._profiles_due))
        stats = self.sender.stats
        self._queue("cluster.stop", stopped=now, exceptions_not_sent=self._exceptions_dropped,
                    messages_dropped=stats.messages_dropped, messages_truncated=stats.messages_truncated)
        self.sender.submit(self._take_outbox())
        await self._close_sender()

    async def _close_sender(self) -> None:
        """Deliver what is queued and stop the sender, waiting at most ``close-timeout``, off the event loop.

        A cluster left open when the script ends is closed by Dask's ``atexit`` hook, after asyncio's
        executor stopped taking work (and, on Python 3.12, when no new thread may start): the sender,
        whose own thread still runs, is then closed from the event loop, blocking it that long at most.
        """
        try:
            closing = asyncio.get_running_loop().run_in_executor(None, self.sender.close, self.settings.close_timeout)
        except RuntimeError:  # "cannot schedule new futures after interpreter shutdown"
            self.sender.close(self.settings.close_timeout)
            return
        await closing

    async def close(self) -> None:
        """Same as `before_close` when the scheduler skipped it (it does nothing the second time)."""
        await self.before_close()

    # ---- hooks -----------------------------------------------------------------------------
    def transition(self, key, start, finish, *args, **kwargs) -> None:
        """Hot path: count tasks reaching memory or erred per group (one increment), record exceptions."""
        if finish == "memory" or finish == "erred":
            task = self._tasks.get(key)
            if task is not None:
                self._reached[finish][task.group] += 1
            if finish == "erred" and start == "processing":
                self._record_exception(key, kwargs)

    def add_worker(self, scheduler, worker: str) -> None:
        if self._active():
            self._record_worker(scheduler.workers[worker])
            self._sample_workers(time.time())

    def remove_worker(self, scheduler, worker: str, *, stimulus_id: str = "", **kwargs) -> None:
        if self._active():
            self._queue("worker.remove", worker=worker, reason=stimulus_id)
            self._sample_workers(time.time())

    def add_client(self, scheduler, client: str) -> None:
        if self._active() and client in scheduler.clients:
            self._check_versions("client", getattr(scheduler.clients[client], "versions", None), client=client)

    def update_graph(self, scheduler, **kwargs) -> None:
        if self._active() and self._idle_start is not None:
            self._close_idle(time.time())

    def log_event(self, topic: str, msg) -> None:
        """Forward allow-listed topics, and scheduler actions named in the allow-list."""
        if not self._active():
            return
        action = msg.get("action") if topic == ACTION_TOPIC and isinstance(msg, dict) else None
        if topic in self._allow or action in self._allow:
            self._queue("event", topic=action or topic, msg=json.loads(json.dumps(msg, default=str)))

    # ---- recording -------------------------------------------------------------------------
    def _active(self) -> bool:
        return self._started and not self.settings.disabled and not self._closed

    def _queue(self, kind: str, ts: float | None = None, **fields) -> None:
        self._outbox.append({"kind": kind, "ts": time.time() if ts is None else ts, **fields})

    def _take_outbox(self) -> list[dict]:
        messages, self._outbox = self._outbox, []
        return messages

    def _cluster_identity(self) -> dict:
        return {"cluster_id": self.cluster_id, "kind": "dask", "name": self.scheduler.id,
                "user": self.settings.user, "host": socket.gethostname(), "address": self.scheduler.address}

    def _start_record(self) -> dict:
        scheduler = self.scheduler
        http = getattr(scheduler, "http_server", None)
        dashboard = f"http://{socket.gethostname()}:{http.port}/status" if http is not None and http.port else None
        return {"scheduler_id": scheduler.id, "address": scheduler.address, "dashboard_link": dashboard,
                "started": scheduler.time_started, "python": sys.executable,
                "platform": f"{platform.system()} {platform.release()} {platform.machine()}",
                "versions": self._scheduler_versions, "config": self.settings.privacy(),
                "price_per_core_hour": self.settings.price_per_core_hour,
                "price_per_gb_hour": self.settings.price_per_gb_hour, "interval": self.settings.interval}

    def _seed(self) -> None:
        """Workers, clients and exceptions that were there before the plugin."""
        for ws in list(self.scheduler.workers.values()):
            self._record_worker(ws)
        for client, state in list(self.scheduler.clients.items()):
            self._check_versions("client", getattr(state, "versions", None), client=client)
        for erred in reversed(self.scheduler.erred_tasks):
            self._queue("exception", ts=erred.timestamp, key=str(erred.key), task_group=None,
                        exception_text=erred.exception_text, traceback_text=erred.traceback_text,
                        worker=",".join(sorted(erred.erred_on)), computation_id=None)

    def _record_worker(self, ws) -> None:
        versions = (ws.versions or {}).get("packages", {})
        self._queue("worker.add", worker=ws.address, name=str(ws.name), host=ws.host, nthreads=ws.nthreads,
                    memory_limit=ws.memory_limit, versions=versions)
        self._check_versions(ws.address, ws.versions)

    def _check_versions(self, who: str, versions: dict | None, client: str | None = None) -> None:
        """Queue one ``versions.mismatch`` per package whose version differs from the scheduler's."""
        for package, version in ((versions or {}).get("packages") or {}).items():
            expected = self._scheduler_versions.get(package)
            if version == expected or (package, client or who) in self._mismatches_sent:
                continue
            self._mismatches_sent.add((package, client or who))
            self._queue("versions.mismatch", package=package, versions={"scheduler": expected, who: version},
                        **({"client": client} if client else {}))

    def _record_exception(self, key, kwargs: dict) -> None:
        if not self._active():
            return
        ts = self.scheduler.tasks.get(key)
        group = ts.group.name if ts is not None else None
        if ts is not None:
            self._failed_at[ts.group] = time.time()
        self._exceptions_per_group[group] += 1
        if self._exceptions_per_group[group] > MAX_EXCEPTIONS_PER_GROUP:
            self._exceptions_dropped += 1
            return
        owner = next((c for c in reversed(self.scheduler.computations) if ts is not None and ts.group in c.groups), None)
        text = kwargs.get("exception_text") or self._scheduler_exception_text(kwargs.get("exception"))
        self._queue("exception", key=str(key), task_group=group, exception_text=text,
                    traceback_text=kwargs.get("traceback_text"), worker=kwargs.get("worker"),
                    computation_id=str(owner.id) if owner is not None else None,
                    allowed_failures=self.scheduler.allowed_failures)

    @staticmethod
    def _scheduler_exception_text(exception) -> str | None:
        """The repr of an exception the scheduler raised itself (a `KilledWorker`: it gives no text).

        Only such exceptions come without ``exception_text`` (a task's own error carries its text from
        the worker), and the scheduler pickled them itself: loading them runs nothing from a worker.
        """
        if not isinstance(exception, bytes):
            return None
        try:
            return repr(pickle.loads(exception))
        except Exception:
            return None

    # ---- periodic --------------------------------------------------------------------------
    def _tick(self, now: float | None = None, closing: bool = False) -> None:
        """Sample workers, follow idleness, snapshot computations, hand everything to the sender."""
        now = time.time() if now is None else now
        try:
            self._sample_workers(now)
            self._follow_idleness(now, closing)
            self._snapshot_computations(now)
            settled = [cid for cid, (_, stop) in self._profiles_due.items() if stop < now - PROFILE_SETTLE_S]
            if settled and not closing:
                asyncio.get_running_loop().create_task(self._send_computation_profiles(settled))
        except Exception:  # a scheduler internal changed: keep the plugin (and the scheduler) alive
            logger.exception("taskscope fleet: snapshot failed")
        if not closing:
            self.sender.submit(self._take_outbox())

    def _sample_workers(self, now: float) -> None:
        scheduler = self.scheduler
        workers = list(scheduler.workers.values())
        self._queue("workers", ts=now, n_workers=len(workers), n_threads=scheduler.total_nthreads,
                    memory_used=sum(ws.memory.process for ws in workers), memory_total=scheduler.total_memory,
                    tasks_processing=sum(len(ws.processing) for ws in workers),
                    tasks_ready=len(scheduler.queued) + len(scheduler.unrunnable))

    def _follow_idleness(self, now: float, closing: bool) -> None:
        """Idle intervals from the scheduler's own ``idle_since`` (kept by its 250 ms check)."""
        idle_since = self.scheduler.idle_since
        if self._idle_start is not None and (closing or idle_since is None or idle_since > self._idle_start):
            self._close_idle(now if closing else idle_since or now)
        # idle_since lags by up to 250 ms: an interval closed by update_graph must not reopen
        reopened = idle_since is not None and idle_since == self._last_idle_start
        if idle_since is not None and self._idle_start is None and not closing and not reopened:
            self._idle_start = self._last_idle_start = idle_since
            self._queue("idle", start=idle_since, stop=None)

    def _close_idle(self, fallback_stop: float) -> None:
        """Close the open idle interval where work began: the first computation after it started."""
        starts = [c.start for c in self.scheduler.computations if c.start >= self._idle_start]
        stop = min(starts) if starts else fallback_stop
        self._queue("idle", start=self._idle_start, stop=max(stop, self._idle_start))
        self._idle_start = None

    def _snapshot_computations(self, now: float) -> None:
        """Queue each computation whose groups changed since it was last sent (a resend replaces it)."""
        live_groups = set()
        for computation in list(self.scheduler.computations):
            groups = [self._group_record(group) for group in computation.groups]
            live_groups.update(computation.groups)
            stop = self._stop(computation, now)
            signature = (stop, len(computation.code), json.dumps(groups, sort_keys=True, default=str))
            computation_id = str(computation.id)
            if self._computations_sent.get(computation_id) == signature:
                continue
            self._computations_sent[computation_id] = signature
            if stop is not None and self.settings.profile_transmit and computation_id not in self._profiled:
                self._profiles_due[computation_id] = (computation.start, stop)
            self._queue("computation", computation_id=computation_id, start=computation.start, stop=stop,
                        code=self._code(computation), span_name=self._span_name(computation), groups=groups)
        for counts in (*self._reached.values(), self._failed_at):  # groups of computations Dask no longer keeps
            for group in set(counts) - live_groups:
                del counts[group]

    def _stop(self, computation, now: float) -> float | None:
        """When `computation` ended, or None while a task of it is not finished (waiting, queued, processing).

        Its last success (Dask's ``stop``) or last failure, whichever is later; without either (every
        task released before it ran) the first time the plugin saw it ended. Never before its start
        (its groups' times come from the workers' clocks). A computation without groups: see `_groupless_stop`.
        """
        computation_id = str(computation.id)
        if not computation.groups:
            return self._groupless_stop(computation)
        if not all(group.done for group in computation.groups):
            self._ended_at.pop(computation_id, None)  # a lost worker's task to recompute: not ended after all
            return None
        failed = [self._failed_at[group] for group in computation.groups if group in self._failed_at]
        ended = max([computation.stop, *failed])
        return max(ended if ended > 0 else self._ended_at.setdefault(computation_id, now), computation.start)

    def _groupless_stop(self, computation) -> float | None:
        """Dask gives a computation only the task groups it creates: none when its results were in
        memory already, or its tasks joined the groups of an earlier graph. Which tasks it ran is then
        unknown; it has ended once the scheduler has nothing left to compute, at the latest by the last
        task end since it started (at its start when it ran nothing). Fixed once found."""
        computation_id = str(computation.id)
        if computation_id not in self._ended_at:
            if not self.scheduler.is_idle:
                return None
            ends = [group.stop for group in self.scheduler.task_groups.values()]
            self._ended_at[computation_id] = max([computation.start, *ends])
        return self._ended_at[computation_id]

    def _group_record(self, group) -> dict:
        durations = group.all_durations
        states = outcome_states(group.states, self._reached["memory"].get(group, 0),
                                self._reached["erred"].get(group, 0))
        return {"name": group.name, "prefix": group.prefix.name, "states": states,
                "n_tasks": sum(states.values()), "compute_s": durations.get("compute", 0.0),
                "transfer_s": durations.get("transfer", 0.0),
                "disk_s": durations.get("disk-read", 0.0) + durations.get("disk-write", 0.0),
                "nbytes": group.nbytes_total, "start": group.start or None, "stop": group.stop or None,
                "dependencies": sorted(dependency.name for dependency in group.dependencies)}

    def _code(self, computation) -> list[dict]:
        if not self.settings.code_transmit:
            return []
        # lineno_relative counts from the function's first line (0), so the page can mark the calling line
        return [{"filename": frame.filename, "lineno": frame.lineno_frame, "code": frame.code,
                 "code_lineno": frame.lineno_relative + 1} for frames in computation.code for frame in frames]

    def _span_name(self, computation) -> list[str] | None:
        spans = getattr(self.scheduler, "extensions", {}).get("spans")
        for group in computation.groups:
            span = spans.spans.get(group.span_id) if spans is not None and group.span_id else None
            if span is not None:
                return list(span.name)
        return None

    async def _send_computation_profiles(self, computation_ids: list[str]) -> None:
        """Each ended computation's own profile (samples between its start and stop), sent once."""
        for computation_id in computation_ids:
            if computation_id not in self._profiles_due:
                continue
            start, stop = self._profiles_due.pop(computation_id)
            self._profiled.add(computation_id)
            await self._queue_profile(start, stop, computation_id=computation_id)

    async def _send_profile(self) -> None:
        """The statistical profile since the last one."""
        start, stop = self._profile_since, time.time()
        self._profile_since = stop
        await self._queue_profile(start, stop)

    async def _queue_profile(self, start: float, stop: float, **fields) -> None:
        """Queue the workers' profile between `start` and `stop`, cut to ``profile.max-bytes`` (none if empty)."""
        try:
            tree = await self.scheduler.get_profile(start=start, stop=stop)
        except Exception:
            logger.info("taskscope fleet: no profile from the workers", exc_info=True)
            return
        if tree.get("count"):
            self._queue("profile", start=start, stop=stop, data=prune_profile(tree, self.settings.profile_max_bytes),
                        **fields)


def outcome_states(dask_states: dict[str, int], reached_memory: int, reached_erred: int) -> dict[str, int]:
    """A task group's ``states`` as the protocol means them: how its tasks ended, or where they are.

    ``memory``: tasks that finished (their result may since have been released), ``erred``: tasks
    that failed or depended on a failure, the `ACTIVE_STATES` as Dask has them, and ``released``: the
    rest (released before they ran, e.g. cancelled, or finished before the plugin started).
    `dask_states` is Dask's ``TaskGroup.states`` (it counts forgotten tasks too); `reached_*` are
    the plugin's counts of transitions into memory and erred. The counts sum to the group's tasks.

    >>> outcome_states({"released": 8, "forgotten": 2, "memory": 0}, reached_memory=9, reached_erred=1)
    {'memory': 9, 'erred': 1}
    >>> outcome_states({"processing": 2, "memory": 3, "waiting": 5}, reached_memory=3, reached_erred=0)
    {'memory': 3, 'waiting': 5, 'processing': 2}
    """
    active = {state: dask_states.get(state, 0) for state in ACTIVE_STATES}
    left = sum(dask_states.values()) - sum(active.values())
    # a task recomputed (lost worker) or retried reaches an outcome twice: never count more than is left
    erred = min(max(reached_erred, dask_states.get("erred", 0)), left)
    memory = min(max(reached_memory, dask_states.get("memory", 0)), left - erred)
    states = {"memory": memory, "erred": erred, **active, "released": left - erred - memory}
    return {state: count for state, count in states.items() if count > 0}


def prune_profile(tree: dict, max_bytes: int) -> dict:
    """Cut a Dask profile tree to at most `max_bytes` of JSON by dropping its least-sampled branches
    (a branch is kept when it holds at least a growing share of the root's samples), and the frames
    below `MAX_PROFILE_FRAMES` (deep recursion).

    >>> leaf = {"count": 1, "children": {}, "identifier": "f", "description": {"line": "x = 1"}}
    >>> tree = {"count": 10, "identifier": "root", "description": {}, "children": {
    ...     "a": {**leaf, "count": 9, "identifier": "a"}, "b": {**leaf, "identifier": "b"}}}
    >>> sorted(prune_profile(tree, 10_000)["children"]), sorted(prune_profile(tree, 200)["children"])
    (['a', 'b'], ['a'])
    """
    share = 0.0
    while True:
        pruned = _prune_below(tree, share * tree.get("count", 0), MAX_PROFILE_FRAMES)
        if encoded_size(pruned) <= max_bytes or share >= 1.0:
            return pruned
        share = max(share * 2, 0.001)


def _prune_below(node: dict, min_count: float, frames_left: int) -> dict:
    if frames_left <= 0:
        return {**node, "children": {}}
    children = {name: _prune_below(child, min_count, frames_left - 1)
                for name, child in node.get("children", {}).items()
                if child.get("count", 0) >= min_count and child.get("count", 0) > 0}
    return {**node, "children": children}


def register(client=None, server: str | None = None, token: str | None = None, user: str | None = None,
             **options) -> str | None:
    """Install the fleet plugin on the scheduler of `client` (default: the current client).

    Settings come from the ``taskscope.fleet`` Dask config *here*, overridden by the arguments
    (`options` are `FleetSettings` fields, e.g. ``interval=2``, ``code_transmit=False``). With code
    transmission on, this also sets ``distributed.diagnostics.computations.nframes`` so that this
    client captures the calling code. Returns the plugin name, or None when
    ``taskscope.fleet.disabled`` is set. Registering twice keeps the first plugin.

    >>> register(server="http://127.0.0.1:8090", token="t", disabled=True) is None
    True
    """
    settings = FleetSettings.from_config(server=server, token=token, user=user, **options)
    if settings.disabled:
        return None
    if not settings.server or not settings.token:
        raise ValueError("taskscope fleet: give server= and token= (or set taskscope.fleet.server and .token)")
    check_server_url(settings.server)
    try:
        tls_verification(settings.verify)
    except OSError as exc:  # no such file, or no certificate in it
        raise ValueError(f"taskscope fleet: cannot use {settings.verify} as a CA bundle: {exc}") from exc
    client = client or get_client()
    if settings.code_transmit and not dask.config.get("distributed.diagnostics.computations.nframes", 0):
        dask.config.set({"distributed.diagnostics.computations.nframes": CODE_FRAMES})
    client.register_plugin(FleetPlugin(settings), name=PLUGIN_NAME)
    return PLUGIN_NAME


@click.command()
@click.option("--fleet-server", default=None, help="fleet server URL (else taskscope.fleet.server)")
@click.option("--fleet-token", default=None, help="API token (else taskscope.fleet.token)")
@click.option("--fleet-user", default=None, help="who runs this cluster (else taskscope.fleet.user, else the login)")
@click.option("--fleet-verify", default=None,
              help="TLS: a CA bundle path, or false (else taskscope.fleet.verify, else the system's CAs)")
async def dask_setup(scheduler, fleet_server: str | None, fleet_token: str | None, fleet_user: str | None,
                     fleet_verify: str | None) -> None:
    """``dask scheduler --preload taskscope.fleet.dask [--fleet-server URL --fleet-token T --fleet-verify ca.pem]``."""
    settings = FleetSettings.from_config(server=fleet_server, token=fleet_token, user=fleet_user, verify=fleet_verify)
    if settings.disabled or PLUGIN_NAME in scheduler.plugins:
        return
    if not settings.server or not settings.token:
        logger.warning("taskscope fleet: no server or token configured; the plugin is not installed")
        return
    try:
        check_server_url(settings.server)
    except ValueError as exc:
        logger.warning("%s; the plugin is not installed", exc)
        return
    plugin = FleetPlugin(settings)
    scheduler.add_plugin(plugin, name=PLUGIN_NAME, idempotent=True)
    await plugin.start(scheduler)
