"""The self-hosted usage collector: UDP datagrams in, spooled, then parsed into the store.

The receiver (the thread that calls `serve_forever`) only receives (in batches,
`taskscope.usage.receive`, which lays datagrams out as spool records with their receive time)
and appends them to the append-only spool (`taskscope.usage.spool`), one `writev` per batch,
then hands on where they lie in it. It keeps the caller's scheduling priority while everything
else runs at a lower one (`WRITER_NICENESS`): a datagram not read in time is lost, storing can
wait. Writers (two threads by default, each with its own DuckDB connection) read the records
back from the spool, as a restart does, and store them: each classifies a batch in SQL (size,
protocol byte, UTF-8, JSON object, correlator), inserts good messages into `events`
(`source = 'usage'`, `event = 'usage.start' | 'usage.end'`, `run_id` = correlator, `attrs` = the
message) and the rest into `usage_rejected` with the reason, and records the batch in
`usage_spool_commits`, all in one transaction (that SQL, and the tables, are
`taskscope.usage.storage`). Writers parse and insert in parallel but commit in
the order the batches were received, so what the store holds is always the spool's first records
(the view `usage_spool` says how far, per segment). A restart replays whatever the spool holds
beyond that point, so nothing received is lost and nothing is stored twice.

The sender's address is never read (`recvmmsg` without a name buffer, or `recv`) and so never stored.

>>> collector = Collector("usage.duckdb", port=50077)       # doctest: +SKIP
>>> collector.serve_forever()  # until collector.stop() or a signal   # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
import queue
import select
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa

import taskscope
from taskscope.usage import protocol, reports, rollups, spool
from taskscope.usage.receive import batch_receiver, pause_after_partial_batch
from taskscope.usage.storage import (create_usage_tables, delete_usage_before, insert_batch, spool_progress,
                                     storage_compression)

logger = logging.getLogger("taskscope.usage.collector")

SOCKET_RECEIVE_BUFFER = 32 * 1024 * 1024  # asked of the kernel; it may grant less
HAND_OFF_RECORDS = 4096
HAND_OFF_SECONDS = 0.05
RETENTION_CHECK_SECONDS = 3600.0
REPLAY_CHUNK_RECORDS = 50_000
#: without `retention_days`, spool segments wholly in the store are deleted once older than this
#: (the store keeps everything; the spool only needs what a restart might replay)
DEFAULT_SPOOL_RETENTION_DAYS = 7.0
#: the runs table is refreshed once nothing has arrived for this long (a burst has ended)...
RUNS_REFRESH_QUIET_SECONDS = 1.0
#: ...or, under a steady stream, at least this often: deriving runs costs about as much CPU as
#: storing them, and a flat-out burst stored at half the rate when it was refreshed after each commit
RUNS_REFRESH_SECONDS = 30.0
#: a commit this large is written straight to the database file (DuckDB's row group size), not the WAL
COMMIT_ROWS = 122_880

#: threads storing batches, each with its own connection: inserting is most of the collector's
#: work, and two inserts run side by side at twice the rate of one on two cores
WRITERS = 2
#: the WAL size at which DuckDB checkpoints inside a commit; the collector checkpoints between
#: bursts from QUIET_CHECKPOINT_WAL_BYTES (see Collector._checkpoint_if_quiet)
BURST_CHECKPOINT_THRESHOLD = "1GB"
QUIET_CHECKPOINT_WAL_BYTES = 16 * 1024 * 1024
#: niceness of the writers and of DuckDB's threads (the receiver keeps the caller's)
WRITER_NICENESS = 10

@dataclass
class CollectorStats:
    """Counts since the collector started. Once stopped, received + replayed = parsed + rejected."""

    received: int = 0     # datagrams read from the socket (and spooled)
    replayed: int = 0     # datagrams found in the spool from earlier runs, not yet in the store
    parsed: int = 0       # stored as events
    rejected: int = 0     # stored in usage_rejected
    reasons: dict[str, int] = field(default_factory=dict)
    store_errors: int = 0  # commits that failed and were retried
    first_received_at: float | None = None  # epoch seconds of the first datagram received
    last_received_at: float | None = None   # epoch seconds of the last datagram received
    last_stored_at: float | None = None     # epoch seconds when the last commit finished
    commits: int = 0  # transactions committed to the store (a dashboard's cache key)

    def as_dict(self) -> dict:
        return {"received": self.received, "replayed": self.replayed, "parsed": self.parsed,
                "rejected": self.rejected, "reasons": dict(self.reasons), "store_errors": self.store_errors}


@dataclass
class _Batch:
    """Records `first_record`.. of a spool segment, lying between byte offsets `start_offset`
    and `end_offset`; `lengths` are their payloads' lengths. The writers read them from the
    spool (`spool.read_records`), as a restart replays them."""

    segment: str
    first_record: int
    start_offset: int
    end_offset: int
    lengths: np.ndarray
    #: handed off because nothing more arrived for HAND_OFF_SECONDS: commit without waiting for more
    quiet: bool = True
    first_received_at: float = 0.0
    last_received_at: float = 0.0

    @property
    def count(self) -> int:
        return len(self.lengths)


class _Spooled:
    """What the receiver has spooled since its last hand-off: contiguous records of one segment."""

    def __init__(self) -> None:
        self.count = 0
        self.segment = ""
        self._lengths: list[np.ndarray] = []

    def add(self, segment: str, first: int, start: int, end: int, received) -> None:
        if not self.count:
            self.segment, self.first, self.start, self.first_at = segment, first, start, received.stamp
        self.end, self.last_at = end, received.stamp
        self._lengths.append(received.lengths)
        self.count += len(received)

    def take(self, quiet: bool) -> _Batch:
        lengths = np.concatenate(self._lengths)
        batch = _Batch(self.segment, self.first, self.start, self.end, lengths, quiet, self.first_at, self.last_at)
        self.count, self._lengths = 0, []
        return batch


class Collector:
    """Receives usage datagrams on `host:port` (port 0: any free port) into the store at `store`.

    `spool` defaults to the folder `<store>.spool`. `writers` threads (two by default) store what
    arrives, committing in the order received, at least every `commit_interval` seconds or once
    `commit_rows` datagrams wait; what they store is compressed with ZSTD
    where the store's format has it (`storage_compression`). With `retention_days`, events,
    rejected datagrams and fully parsed spool segments older than that are deleted (at start,
    then hourly); without it the store keeps everything and fully parsed spool segments go after
    `DEFAULT_SPOOL_RETENTION_DAYS`. The runs table the reports read (`taskscope.usage.rollups`)
    is built at start when missing, derived with `releases` (the release-date table,
    `reports.release_dates()` by default), and refreshed once a burst has ended
    (`RUNS_REFRESH_QUIET_SECONDS` without a datagram), at least every `RUNS_REFRESH_SECONDS`
    under a steady stream, and at stop. `use_recvmmsg=False` reads one datagram per system call even where recvmmsg
    exists (for comparison and tests).

    >>> collector = Collector("usage.duckdb", host="0.0.0.0", port=50077, retention_days=400)  # doctest: +SKIP
    >>> collector.start(); ...; collector.stop()                                                # doctest: +SKIP
    """

    def __init__(
        self, store: str | Path, host: str = "127.0.0.1", port: int = 50077, spool_dir: str | Path | None = None,
        retention_days: float | None = None, max_bytes: int = protocol.MAX_DATAGRAM_BYTES,
        commit_interval: float = 1.0, commit_rows: int = COMMIT_ROWS,
        use_recvmmsg: bool = True, writers: int = WRITERS, releases=None,
    ):
        self.store_path = str(store)
        if self.store_path == ":memory:" and spool_dir is None:
            raise ValueError("an in-memory store needs an explicit spool_dir")
        self.spool_dir = Path(spool_dir if spool_dir is not None else self.store_path + ".spool")
        self.retention_days = retention_days
        self.max_bytes = max_bytes
        self.commit_interval = commit_interval
        self.commit_rows = commit_rows
        #: the release-date table the runs table is derived with (`reports.release_dates()` by default)
        self.releases = releases if releases is not None else reports.release_dates()
        self._refreshing = threading.Lock()
        self._refresh_due = 0.0
        self.stats = CollectorStats()
        self._stopping = threading.Event()
        self._batches: queue.SimpleQueue = queue.SimpleQueue()
        # fails here, before binding, if the store is locked
        self._store = _in_yielding_thread(lambda: taskscope.open(self.store_path))
        create_usage_tables(self._store.con)
        self._store.con.execute(f"SET checkpoint_threshold = '{BURST_CHECKPOINT_THRESHOLD}'")
        self.sock = _bind(host, port)
        self._receive = batch_receiver(self.sock, use_recvmmsg=use_recvmmsg)
        self._pause = pause_after_partial_batch(self.sock)
        self.address: tuple[str, int] = self.sock.getsockname()[:2]
        self.spool = spool.SpoolWriter(self.spool_dir)
        self._writers = [threading.Thread(target=self._write_loop, args=(number,), daemon=True,
                                          name=f"taskscope-usage-writer-{number}") for number in range(max(1, writers))]
        self._order = _CommitOrder()
        self._gathering = threading.Lock()  # one writer at a time takes batches off the queue
        self._storing = _BusyCount()  # writers storing batches right now
        self._input_done = False
        self._replayed = threading.Event()
        self._earlier_segments: list[Path] = []  # spool segments of earlier runs, for `_replay`
        self._receiver: threading.Thread | None = None
        self._done = threading.Event()
        self._store_gave_up = False
        self._before_close: list = []

    @property
    def store(self) -> taskscope.Store:
        """The store the writer commits to. Read it only through `store.con.cursor()` (a connection
        of its own, seeing the last commit), e.g. with `taskscope.web.dashboard.Dashboard`."""
        return self._store

    def before_close(self, callback) -> None:
        """Call `callback()` once everything received is stored, just before the store closes
        (e.g. to stop a dashboard reading it)."""
        self._before_close.append(callback)

    # -- running -----------------------------------------------------------------------------

    def serve_forever(self) -> None:
        """Receive in this thread until `stop()` (or `request_stop()`, e.g. from a signal handler)."""
        # what earlier runs left, listed before anything is received: a segment this run fills
        # and rolls over while the replay is still going must not be replayed too (it would be
        # stored twice: once replayed, once from the batch that is waiting for the replay)
        self._earlier_segments = [path for path in spool.segments(self.spool_dir) if path.name != self.spool.segment]
        for writer in self._writers:
            writer.start()
        try:
            self._receive_loop()
        finally:
            self._finish()

    def start(self) -> "Collector":
        """Receive in a background thread (for tests and embedding); `stop()` ends it."""
        self._receiver = threading.Thread(target=self.serve_forever, name="taskscope-usage-receiver", daemon=True)
        self._receiver.start()
        return self

    def request_stop(self) -> None:
        """Ask the receive loop to finish; safe from a signal handler."""
        self._stopping.set()

    def stop(self, timeout: float | None = None) -> CollectorStats:
        """Stop receiving, spool and store everything received, close the store; return the counts."""
        self.request_stop()
        self._done.wait(timeout)
        return self.stats

    def __enter__(self) -> "Collector":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    # -- receiver ----------------------------------------------------------------------------

    def _receive_loop(self) -> None:
        # non-blocking reads while datagrams wait, and select() only when none does: one system
        # call per batch of datagrams in a burst (with a socket timeout, Python polls before every read)
        self.sock.setblocking(False)
        receive, now, stopping, sock = self._receive, time.time, self._stopping.is_set, [self.sock]
        full, pause = self._receive.batch, self._pause
        pending = _Spooled()
        hand_off_at = now() + HAND_OFF_SECONDS
        while True:
            quiet = False
            try:
                received = receive()
                self._spool(received, pending)
                stamp = received.stamp
                if len(received) < full:  # let the next batch gather (receive.pause_after_partial_batch)
                    time.sleep(pause)
            except BlockingIOError:
                quiet = not select.select(sock, [], [], HAND_OFF_SECONDS)[0]
                stamp = now()
            except OSError as exc:  # e.g. ICMP-triggered errors on some platforms: keep going
                logger.debug("recv failed: %s", exc)
                stamp = now()
            if pending.count >= HAND_OFF_RECORDS or stamp >= hand_off_at or (quiet and pending.count):
                self._hand_off(pending, quiet)
                hand_off_at = stamp + HAND_OFF_SECONDS
                if stopping():
                    break
        self._drain(pending)

    def _spool(self, received, pending: "_Spooled") -> None:
        """Append what one call received to the spool (before the receiver's buffer is reused)."""
        segment, first, start, end = self.spool.write(received.records)
        if pending.count and segment != pending.segment:  # a new segment: hand off the old one's records
            self._hand_off(pending, quiet=False)
        pending.add(segment, first, start, end, received)

    def _drain(self, pending: "_Spooled") -> None:
        """Take what the kernel still holds for us, so stopping loses nothing already received."""
        self.sock.setblocking(False)
        while True:
            try:
                self._spool(self._receive(), pending)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                continue
        self._hand_off(pending)

    def _hand_off(self, pending: "_Spooled", quiet: bool = True) -> None:
        if not pending.count:
            return
        batch = pending.take(quiet)
        if self.stats.first_received_at is None:
            self.stats.first_received_at = batch.first_received_at
        self.stats.received += batch.count
        self.stats.last_received_at = batch.last_received_at
        self._batches.put(batch)

    def _finish(self) -> None:
        self.sock.close()
        self.spool.close()
        self._batches.put(None)
        for writer in self._writers:
            writer.join()
        if not self._store_gave_up:
            self._refresh_runs(self._store.con, force=True)
        for callback in self._before_close:
            try:
                callback()
            except Exception:  # noqa: BLE001 - the store must still close, and stopping must finish
                logger.exception("stopping %r failed", callback)
        self._store.close()
        self._done.set()

    # -- writer ------------------------------------------------------------------------------

    def _write_loop(self, number: int) -> None:
        _yield_to_receiver()
        con = self._store.con.cursor()  # a connection of this writer's own, to the same database
        try:
            con.execute(f"SET force_compression = '{storage_compression(con)}'")
            if number == 0:
                try:
                    self._apply_retention(con)
                    self._replay(con)
                finally:
                    self._replayed.set()
                # builds it for a store that has none, while the other writers store what arrives
                self._refresh_runs(con, force=True)
            self._replayed.wait()
            retention_due = time.monotonic() + RETENTION_CHECK_SECONDS
            while True:
                jobs = self._take_jobs()
                if jobs is None:
                    return
                with self._storing:
                    for ticket, batch in jobs:
                        self._commit_until_done(con, batch, ticket)
                    self._refresh_runs(con)
                self._checkpoint_if_quiet(con)
                if number == 0 and time.monotonic() > retention_due:
                    self._apply_retention(con)
                    retention_due = time.monotonic() + RETENTION_CHECK_SECONDS
        finally:
            con.close()

    def _refresh_runs(self, con, force: bool = False) -> None:
        """Cover the newly stored events in the runs table (`rollups.refresh`), when no batch
        waits and nothing arrived for `RUNS_REFRESH_QUIET_SECONDS`, when `RUNS_REFRESH_SECONDS`
        have passed, or when `force`d. A failure is logged, not raised: reports stay exact
        without it (they derive what it does not cover, more slowly)."""
        last = self.stats.last_received_at
        quiet = self._batches.empty() and (last is None or time.time() - last >= RUNS_REFRESH_QUIET_SECONDS)
        if not force and not quiet and time.monotonic() < self._refresh_due:
            return
        with self._refreshing:
            try:
                rollups.refresh(con, self.releases)
            except duckdb.Error as exc:
                logger.error("refreshing the usage runs table failed (reports derive runs from events meanwhile): %s", exc)
            self._refresh_due = time.monotonic() + RUNS_REFRESH_SECONDS

    def _checkpoint_if_quiet(self, con) -> None:
        """Fold the write-ahead log into the database file, once it holds `QUIET_CHECKPOINT_WAL_BYTES`,
        no batch waits to be stored and no writer is storing one.

        Commits smaller than a row group (the end of every burst, everything at low rates) go to
        the WAL. DuckDB would checkpoint inside whichever commit takes the WAL past its
        threshold, stalling storing mid-burst: measured, the last commit of a 1,000,000-datagram
        burst took 3.3 s instead of ~0.8. The store's threshold is raised (`BURST_CHECKPOINT_THRESHOLD`,
        still a bound under endless load) and the checkpoint is made here, between bursts.
        """
        if self._storing.busy or not self._batches.empty() or _wal_bytes(self.store_path) < QUIET_CHECKPOINT_WAL_BYTES:
            return  # (a writer storing now would wait for the checkpoint to commit)
        try:
            con.execute("CHECKPOINT")
        except duckdb.Error as exc:  # another checkpoint or transaction in the way: the next quiet spell
            logger.debug("checkpoint skipped: %s", exc)

    def _take_jobs(self) -> list[tuple[int, "_Batch"]] | None:
        """The next batches to store, one per segment, each with its place in the commit order;
        None once the receiver has finished and every batch is taken."""
        with self._gathering:
            if self._input_done:
                return None
            pending, finished = self._next_batches()
            self._input_done = finished
            return [(self._order.ticket(), batch) for batch in _by_segment(pending)]

    def _next_batches(self) -> tuple[list[_Batch], bool]:
        """Wait for a batch, then gather more until `commit_rows` datagrams, `commit_interval` s,
        or a batch the receiver handed off after a quiet spell (a burst has ended: waiting for
        more would only delay it).

        Under load, commits are large, which DuckDB writes to the file directly (no WAL copy),
        several times faster per row than small ones; at low rates a datagram waits at most
        `commit_interval` s. The spool already holds every datagram, so waiting loses nothing.
        """
        pending: list[_Batch] = []
        try:
            first = self._batches.get(timeout=1.0)
        except queue.Empty:
            return pending, False
        if first is None:
            return pending, True
        pending.append(first)
        rows = first.count
        deadline = time.monotonic() + self.commit_interval
        while rows < self.commit_rows and not pending[-1].quiet:
            try:
                batch = self._batches.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if batch is None:
                return pending, True
            pending.append(batch)
            rows += batch.count
        return pending, False

    def _commit_until_done(self, con, batch: _Batch, ticket: int | None = None) -> None:
        """Store `batch`, committing when `ticket`'s turn comes (None: at once, during replay)."""
        # the spool already holds these datagrams; a failing store is retried, never skipped, so
        # usage_spool's offsets stay a true statement of what is in the store
        try:
            delay = 0.5
            while not self._store_gave_up:  # after giving up, later batches wait in the spool too
                try:
                    self._commit(con, batch, ticket)
                    return
                except (duckdb.Error, OSError, spool.CorruptSpool) as exc:  # the store, or reading the spool
                    self.stats.store_errors += 1
                    if self._stopping.is_set() and self.stats.store_errors >= 3:
                        # stopping: leave the batch in the spool; the next start replays it
                        logger.error("giving up storing %d usage datagrams until the next start: %s",
                                     batch.count, exc)
                        self._store_gave_up = True
                        return
                    logger.error("storing %d usage datagrams failed (retrying in %.1f s): %s",
                                 batch.count, delay, exc)
                    time.sleep(delay)
                    delay = min(delay * 2, 30.0)
        finally:
            if ticket is not None:  # (already its turn unless it gave up without trying to commit)
                self._order.wait_for_turn(ticket)
                self._order.done(ticket)

    def _commit(self, con, batch: _Batch, ticket: int | None = None) -> None:
        times, payloads = spool.read_records(self.spool_dir / batch.segment, batch.start_offset, batch.end_offset,
                                             batch.lengths)
        table = pa.table({
            "ts": times,
            "record": np.arange(batch.first_record, batch.first_record + batch.count, dtype=np.int64),
            "payload": payloads,
        })
        con.execute("BEGIN TRANSACTION")
        try:
            con.register("usage_batch", table)
            parsed, reasons = insert_batch(con, batch.segment, batch.first_record,
                                           batch.first_record + batch.count - 1, batch.end_offset,
                                           self.max_bytes, time.time())
            rejected = sum(reasons.values())
            if ticket is not None:
                self._order.wait_for_turn(ticket)
            if self._store_gave_up:  # an earlier batch is not stored: this one must not be either
                raise _GaveUp()
            con.execute("COMMIT")
        except _GaveUp:
            con.execute("ROLLBACK")
            return
        except BaseException:
            con.execute("ROLLBACK")
            raise
        finally:
            con.unregister("usage_batch")
        self.stats.parsed += parsed
        self.stats.rejected += rejected
        self.stats.last_stored_at = time.time()
        self.stats.commits += 1
        for reason, count in reasons.items():
            self.stats.reasons[reason] = self.stats.reasons.get(reason, 0) + count

    def _replay(self, con) -> None:
        """Store what earlier runs spooled but did not get into the store (a crash, a kill -9)."""
        progress = spool_progress(con)
        for path in self._earlier_segments:
            if not path.exists():  # gone since (retention)
                continue
            offset, records = progress.get(path.name, (0, 0))
            if path.stat().st_size <= max(offset, len(spool.MAGIC)):
                continue
            while True:
                chunk = list(spool.read_segment(path, offset, records + 1, REPLAY_CHUNK_RECORDS))
                if not chunk:
                    break
                lengths = np.array([len(record[3]) for record in chunk], dtype=np.uint32)
                batch = _Batch(path.name, chunk[0][0], max(offset, len(spool.MAGIC)), chunk[-1][1], lengths)
                self._commit_until_done(con, batch)
                self.stats.replayed += len(chunk)
                offset, records = chunk[-1][1], chunk[-1][0]
            logger.info("replayed spool segment %s", path.name)

    def _apply_retention(self, con) -> None:
        """Delete what is older than `retention_days` (usage events, rejected datagrams, spool
        segments); without it, only spool segments older than `DEFAULT_SPOOL_RETENTION_DAYS`.
        A spool segment goes only once the store holds all of it; empty ones (a start and stop
        without datagrams) go at once."""
        if self.retention_days is not None:
            delete_usage_before(con, time.time() - self.retention_days * 86400, self.releases)
        days = self.retention_days if self.retention_days is not None else DEFAULT_SPOOL_RETENTION_DAYS
        cutoff = time.time() - days * 86400
        parsed_to = {segment: offset for segment, (offset, _) in spool_progress(con).items()}
        for path in spool.segments(self.spool_dir):
            if path.name == self.spool.segment:
                continue
            stat = path.stat()
            empty = stat.st_size <= len(spool.MAGIC)
            fully_parsed = parsed_to.get(path.name, -1) >= stat.st_size
            if empty or (fully_parsed and stat.st_mtime < cutoff):
                path.unlink()


class _BusyCount:
    """How many threads are inside `with` blocks of it right now."""

    def __init__(self) -> None:
        self.busy = 0
        self._lock = threading.Lock()

    def __enter__(self) -> None:
        with self._lock:
            self.busy += 1

    def __exit__(self, *exc_info) -> None:
        with self._lock:
            self.busy -= 1


class _GaveUp(Exception):
    """An earlier batch could not be stored: a later one is left in the spool as well."""


class _CommitOrder:
    """Tickets handed out in the order batches leave the queue; a writer commits its batch only
    once every earlier ticket is done (committed, or given up), so commits follow the spool.

    >>> order = _CommitOrder(); first, second = order.ticket(), order.ticket()
    >>> order.done(first); order.wait_for_turn(second)
    """

    def __init__(self) -> None:
        self._next = 0
        self._turn = 0
        self._changed = threading.Condition()

    def ticket(self) -> int:
        number, self._next = self._next, self._next + 1
        return number

    def wait_for_turn(self, ticket: int) -> None:
        with self._changed:
            self._changed.wait_for(lambda: self._turn == ticket)

    def done(self, ticket: int) -> None:
        with self._changed:
            self._turn = ticket + 1
            self._changed.notify_all()


def _wal_bytes(store_path: str) -> int:
    """Size of the store's write-ahead log (0 when it has none, or for an in-memory store)."""
    try:
        return os.path.getsize(store_path + ".wal")
    except OSError:
        return 0


def _yield_to_receiver() -> None:
    """Lower this thread's scheduling priority (Linux: niceness is per thread) to
    `WRITER_NICENESS`, so that under a burst the receiver gets the CPU first: a datagram not read
    before the socket's buffer fills is lost, while storing can wait (the spool holds everything)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        thread = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, thread, max(os.getpriority(os.PRIO_PROCESS, thread), WRITER_NICENESS))
    except OSError:  # not permitted (a seccomp sandbox): run at the same priority
        pass


def _in_yielding_thread(make):
    """`make()` run in a short-lived thread at `WRITER_NICENESS`, its exception re-raised here.

    Used to open the store: DuckDB starts its worker threads when a database is opened, and a
    thread takes its niceness from the thread that starts it, so the work DuckDB spreads over
    them (parsing, compressing) yields to the receiver as the writers do."""
    outcome: dict = {}

    def run() -> None:
        _yield_to_receiver()
        try:
            outcome["value"] = make()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            outcome["error"] = exc

    thread = threading.Thread(target=run, name="taskscope-usage-open")
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def _by_segment(batches: list[_Batch]) -> list[_Batch]:
    """Consecutive batches of one segment merged into one (fewer, larger transactions)."""
    merged: list[_Batch] = []
    for batch in batches:
        last = merged[-1] if merged else None
        if last is not None and last.segment == batch.segment and last.end_offset == batch.start_offset:
            merged[-1] = _Batch(last.segment, last.first_record, last.start_offset, batch.end_offset,
                                np.concatenate([last.lengths, batch.lengths]))
        else:
            merged.append(batch)
    return merged


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    for option in (getattr(socket, "SO_RCVBUFFORCE", None), socket.SO_RCVBUF):
        if option is None:
            continue
        try:  # SO_RCVBUFFORCE passes net.core.rmem_max but needs CAP_NET_ADMIN
            sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_RECEIVE_BUFFER)
            break
        except OSError:
            continue
    sock.bind((host, port))
    return sock


