"""`WideEventHandler`: a logging handler that writes one JSON object per record, cheaply.

The logging thread turns the record into one JSON line with orjson (about a microsecond) and
queues the bytes; a background thread appends queued lines to the file in one write per flush.
Encoding at the call, rather than on the flush thread, keeps values as they were at the call and
holds no LogRecords in memory (held records survive into older GC generations and make every
collection slower). The background thread is ended before `os.fork()` (after a last flush) and
started again by the next record: forking a process that runs threads can deadlock the child,
and Python 3.12+ warns about it. Nothing here raises into the program that logs:
an unserializable value becomes its repr, a bad `%` format becomes a note in the message, and a
file that cannot be written gives one warning on stderr and a count of dropped records.

Nothing here blocks the program without a bound either: `flush()`, `close()`, the flushes at exit,
before a fork and on SIGTERM wait for the write lock and for room in a pipe or FIFO (written without
blocking: its reader may stop reading) only while the write they wait for makes progress; a write
that takes nothing for the bound's seconds is stuck, and what it did not take stays for the next
flush (or, as the process or handler ends, is dropped and counted). A flush writes what was queued
when it began, so a thread that logs without pause cannot keep it (and exit) going. Every record
logged is, at any moment, written, dropped (counted), queued, or in flight (taken by a flush that
has not finished writing it).
"""

from __future__ import annotations

import atexit
import fcntl
import json
import logging
import os
import select
import signal
import stat
import sys
import threading
import time
import weakref
from collections import deque
from pathlib import Path
from typing import Any, Callable, Mapping

from taskscope.constants import MAX_LINE_BYTES
from taskscope.emit.records import RecordEncoder, deferred_entry, encode_deferred_batch, formatted_message

DEFAULT_FLUSH_INTERVAL = 0.5  # seconds; a SIGKILL loses at most this much
# Every bound below is on a lack of progress, not on total time: a wait (for the write lock, for
# room in a pipe) gives up once the handler's writing has taken no bytes for that many seconds
# (a hung filesystem, a pipe nobody reads); a slow but moving write, under load say, goes on.
#: how long the flushes at exit and before a fork wait for a stuck write: it must not hang the
#: program (at exit, what is still queued then is dropped and counted: it was never going to be
#: written); once one exit flush has given up, the later ones (logging.shutdown's) do not wait
EXIT_FLUSH_TIMEOUT = 10.0
FORK_FLUSH_TIMEOUT = 5.0
#: how long `flush()` waits for a stuck write by default (stdlib's `logging.shutdown` calls it without a timeout)
FLUSH_TIMEOUT = EXIT_FLUSH_TIMEOUT
#: how long, once SIGTERM has arrived, `flush_on_sigterm`'s flush waits for a stuck write before the process dies of it
SIGTERM_FLUSH_TIMEOUT = 5.0
#: how long the background thread waits for a pipe that takes nothing before leaving the rest for its next flush
PIPE_WAIT = 1.0
#: the longest single wait for a lock or for room in a pipe: the waits are cut into these to see
#: progress and a SIGTERM's bound, which a signal arriving during a wait brings in
_WAIT_SLICE = 0.25
#: about how many records a flush encodes and writes at a time: a busy process queues thousands between
#: flushes, and encoding them all before one write would pass megabytes through the CPU's caches
#: (evicting the program's own code and data) where a few hundred kilobytes stay in them
WRITE_CHUNK = 512

_live_handlers: "weakref.WeakSet[WideEventHandler]" = weakref.WeakSet()


class WideEventHandler(logging.Handler):
    """Write each record as one JSON line to `path` (opened for append), flushed in the background.

    `stamps` are fields added to every record (what the process knows: run, host, component...).
    Records are written at most `flush_interval` seconds after they are logged, and always on
    `flush()`/`close()`, at interpreter exit and before `os.fork()`.

    >>> handler = WideEventHandler("run/app.jsonlog", stamps={"component": "app"})  # doctest: +SKIP
    >>> logging.getLogger().addHandler(handler)                                       # doctest: +SKIP
    >>> logging.getLogger("app").info("took %d s", 4, extra={"task_id": 7})           # doctest: +SKIP
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        level: int = logging.NOTSET,
        *,
        flush_interval: float = DEFAULT_FLUSH_INTERVAL,
        stamps: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(level)
        self.path = Path(path).absolute()  # as FileHandler: a later chdir does not move the file
        self.flush_interval = flush_interval
        self._encoder = RecordEncoder(stamps or {})
        #: the encoder whose stamps the next deferred records in the queue take (the writer's
        #: view: `set_stamps` queues each new encoder before the records logged after it)
        self._writer_encoder = self._encoder
        self.dropped_records = 0
        self.written_records = 0
        #: records taken from the queue by a flush that has not yet written (or dropped) them, such as
        #: the lines of a write to a pipe that its reader has not taken: written + dropped + queued
        #: (`queued_records`) + in flight = every record logged
        self.in_flight_records = 0
        #: records that came by the fast logger's path (`handle_body`: no LogRecord was made)
        self.fast_path_records = 0
        #: thread CPU time spent encoding deferred records and writing (by whichever thread flushed)
        self.writer_cpu_ns = 0
        #: where each flush writes `stats()` as JSON (None: nowhere); for tests and benchmarks of
        #: processes that cannot be asked (Parsl's interchange, managers, workers)
        self.stats_path: Path | None = None
        #: more counters for `stats()` (WideEventLogging adds the fast logger's call cost)
        self.more_stats: Callable[[], dict[str, Any]] | None = None
        self._queue: deque = deque()
        self._queued_stamps = 0  # `set_stamps` markers in the queue (not records)
        self._write_lock = threading.Lock()  # one writer at a time: the flusher, flush(), close()
        self._lock_owner: int | None = None  # the thread holding `_write_lock` (a signal handler may run inside it)
        #: the open file: its descriptor and its (device, inode), to see the path name another file
        self._file: tuple[int, tuple[int, int]] | None = None
        #: the rest of a write a pipe did not take in time (it may start inside a line), and its records
        self._unfinished: tuple[bytes, int] | None = None
        #: when this handler's writing last made progress (bytes taken by the file or pipe): the
        #: bounded waits give up only after their bound without progress
        self._progress_at = 0.0
        self._warned: set[str] = set()  # the kinds of problem already warned about (each warns once)
        self._closed = False
        # the flusher is started by the first record (again after a fork) and ends when its
        # event is set; this lock guards starting and stopping it and is never held during I/O
        self._flusher_lock = threading.Lock()
        self._flusher: threading.Thread | None = None
        self._stop_flusher = threading.Event()
        _live_handlers.add(self)
        _flush_when_this_multiprocessing_child_ends()

    @property
    def queued_records(self) -> int:
        """How many records wait in the queue for the next flush."""
        return max(0, len(self._queue) - self._queued_stamps)

    @property
    def stamps(self) -> dict[str, Any]:
        """The fields added to every record (a copy; change them with `set_stamps`)."""
        return dict(self._encoder.stamps)

    def set_stamps(self, **stamps: Any) -> None:
        """Add or change stamps for the records logged from now on."""
        self._encoder = RecordEncoder({**self._encoder.stamps, **stamps})
        self._queued_stamps += 1
        self._queue.append(self._encoder)  # deferred records queued from now on take these stamps

    # ---- logging thread --------------------------------------------------------------------

    def handle(self, record: logging.LogRecord) -> bool:  # type: ignore[override]
        """Encode `record` and queue the line. Overrides Handler.handle to skip its lock:
        encoding needs none and deque.append is atomic."""
        if self.filters and not self.filter(record):
            return False
        self.handle_fields(record.__dict__, formatted_message(record.msg, record.args))
        return True

    def handle_fields(self, fields: dict[str, Any], message: str) -> None:
        """Encode and queue one record given as its attributes and formatted message (the fast
        logger's path, which makes no LogRecord; see taskscope.emit.logger)."""
        if self._closed:
            self._drop_after_close()
            return
        try:
            self._queue.append(self._encoder.encode(fields, message))
        except Exception:  # noqa: BLE001 - never into the caller
            self.dropped_records += 1
            return
        if self._flusher is None:
            self._start_flusher()

    def handle_body(self, body: bytes, extra: Mapping[str, Any] | None = None) -> bool:
        """Queue one line given without its stamps (see `records.encode_moment`); return False,
        queueing nothing, when a field of `extra` has a stamp's name (the record's value wins
        over the stamp: the caller then uses `handle_fields`, which writes it so)."""
        encoder = self._encoder
        if extra and encoder.keys and not encoder.keys.isdisjoint(extra):
            return False
        if len(body) + len(encoder.prefix) > MAX_LINE_BYTES:
            return False  # `handle_fields` cuts it to fit
        self._queue_fast(encoder.prefix + body)
        return True

    def handle_deferred(self, site: bytes, thread: bytes, msg: str, args: tuple, extra: Mapping[str, Any] | None,
                        ct: int | float, task: Any) -> bool:
        """Queue one record as its parts, to be encoded by the writer (`records.encode_deferred`:
        the same line, with the stamps of now); only for records `records.deferrable` accepts
        (the values of `extra` are copied: the caller may change its dict after the call).
        Return False, queueing nothing, when a field of `extra` has a stamp's name (as `handle_body`)."""
        encoder = self._encoder
        if extra and encoder.keys and not encoder.keys.isdisjoint(extra):
            return False
        # one tuple of scalars (`records.deferred_entry`): it leaves the garbage collector's lists
        # in its young passes, a dict would keep it in them (and carry it to the oldest generation)
        self._queue_fast(deferred_entry(site, thread, msg, args, extra, ct, task))
        return True

    def _queue_fast(self, item: bytes | tuple) -> None:
        """Queue a fast-path line or deferred record (dropped and counted once closed)."""
        if self._closed:
            self._drop_after_close()
            return
        try:
            self._queue.append(item)
        except Exception:  # noqa: BLE001 - never into the caller
            self.dropped_records += 1
            return
        self.fast_path_records += 1
        if self._flusher is None:
            self._start_flusher()

    def _drop_after_close(self, records: int = 1) -> None:
        # a closed handler still attached to a logger: queued records would never be written
        if not records:
            return
        self.dropped_records += records
        self._warn_once("closed", f"taskscope: records logged to {self.path} after its handler was closed are "
                                  "dropped and counted (handler.dropped_records)")

    def _warn_once(self, kind: str, message: str) -> None:
        """Warn on stderr, once per handler and `kind` of problem."""
        if kind not in self._warned:
            self._warned.add(kind)
            _warn(message)

    def emit(self, record: logging.LogRecord) -> None:
        """Queue `record` (for code that calls emit directly)."""
        self.handle(record)

    # ---- flushing --------------------------------------------------------------------------

    def flush(self, timeout: float | None = None) -> bool:
        """Write the records queued now, waiting for a flush in progress and for a pipe to take the
        lines as long as they make progress, and at most `timeout` seconds (None or negative:
        `FLUSH_TIMEOUT`) for a write that takes nothing: it is stuck, and what it did not write
        stays queued for the next flush. Return whether everything was written."""
        global _exit_gave_up
        done = self._flush_queue(_wait_for(timeout))
        if not done and _exiting:
            _exit_gave_up = True  # a stuck write at exit: the later flushes of the exit do not wait again
        return done

    def _flush_queue(self, stall: float | None) -> bool:
        """Write what was queued when it began; False if a wait for the write lock or for room in
        a pipe saw no progress for `stall` seconds (None: the background thread's flush, which
        waits for the lock as long as it takes and for a pipe that takes nothing PIPE_WAIT)."""
        ident = _get_ident()
        depth = _flushing.get(ident, 0)
        _flushing[ident] = depth + 1  # before taking the lock: a SIGTERM from here on waits for this flush
        try:
            if self._lock_owner == ident:
                return False  # a signal handler inside this thread's own flush of this handler
            started = time.monotonic()
            if stall is None:
                self._write_lock.acquire()
            elif not self._acquire_write_lock(started, stall):
                return False
            self._lock_owner = ident
            start = time.thread_time_ns()
            try:
                return self._write_queued(started, stall)
            finally:
                self.writer_cpu_ns += time.thread_time_ns() - start
                if self._closed and self._file is not None and self._unfinished is None:
                    self._close_file()  # closed while this flush ran
                self._lock_owner = None
                self._write_lock.release()
        finally:
            if depth:
                _flushing[ident] = depth
            else:
                _flushing.pop(ident, None)
                if _pending_sigterm is not None and _pending_sigterm[1] == ident:
                    _terminate(_pending_sigterm[0])  # a SIGTERM arrived inside this flush: it is done

    def close(self) -> None:
        """Write what is queued (giving up on a write stuck for FLUSH_TIMEOUT), stop the flusher and
        close the file; what could not be written is dropped and counted."""
        if self._closed:
            return
        self._closed = True
        self._end_flusher()
        complete = self._flush_before_end("before its handler was closed")
        if self._acquire_write_lock(time.monotonic(), _wait_for(None) if complete else 0.0):
            self._lock_owner = _get_ident()
            try:
                self._close_file()
            finally:
                self._lock_owner = None
                self._write_lock.release()
        # else: a write stuck in another thread holds the file; its flush closes it when it ends
        _live_handlers.discard(self)
        super().close()

    def _flush_before_end(self, when: str, *, count_in_flight: bool = False) -> bool:
        """The last flush, as the handler or the process ends; return whether it got through.

        When a write was stuck (no progress for the bound of exit, SIGTERM or `close`), what it
        could not write is dropped and counted, with one warning; `count_in_flight`: the process is
        about to die, so the records a stuck write of another thread holds are lost too. When it
        got through, every record logged before it began is written: what other threads log while
        it runs is left queued for a later flush (at exit, logging.shutdown's; a process that dies
        now loses it, as a SIGKILL loses the last flush interval, and its last counters show it
        queued), except on a closed handler, which writes no more: dropped and counted."""
        complete = False
        try:
            complete = self.flush(_wait_for(None)) is not False  # a number: subclasses pass it on to their waits
        finally:
            lost = 0
            if not complete:
                lost = self._take_queued()
                if self._lock_owner is None and self._write_lock.acquire(blocking=False):
                    try:
                        if self._unfinished is not None:
                            lost += self._unfinished[1]
                            self.in_flight_records -= self._unfinished[1]
                            self._unfinished = None
                    finally:
                        self._write_lock.release()
                elif count_in_flight:
                    lost += self.in_flight_records
                    self.in_flight_records = 0
                if lost:
                    self.dropped_records += lost
                    self._warn_once("lost", f"taskscope: {lost} records for {self.path} could not be written {when} "
                                            "(a write made no progress); they are dropped and counted "
                                            "(handler.dropped_records)")
            elif self._closed:  # records logged as it closed (`handle` saw it open): never written
                self._drop_after_close(self._take_queued())
            if self.stats_path is not None and (lost or self._queue or self.in_flight_records):
                self._write_stats()  # the last counters say what is left
        return complete

    def _take_queued(self) -> int:
        """Empty the queue of what it holds now; return how many records that was."""
        taken = 0
        popleft = self._queue.popleft
        for _ in range(len(self._queue)):
            try:
                item = popleft()
            except IndexError:
                break
            if type(item) is tuple or type(item) is bytes:
                taken += 1
            else:
                self._queued_stamps -= 1
                self._writer_encoder = item
        return taken

    def _start_flusher(self) -> None:
        """Start the background thread (never raises: a record it cannot start for stays queued
        for `flush()`, `close()` and the flushes at exit)."""
        with self._flusher_lock:
            if self._flusher is not None or self._closed or _forking:
                return  # a fork in progress: the parent starts it again after (`_after_fork_in_parent`)
            stop = threading.Event()
            flusher = threading.Thread(target=self._flush_loop, args=(stop,), name="taskscope-flusher", daemon=True)
            try:
                flusher.start()
            except RuntimeError:  # no new thread (Python 3.12+ at interpreter shutdown, or none left)
                return
            self._stop_flusher, self._flusher = stop, flusher

    def _flush_loop(self, stop: threading.Event) -> None:
        while not stop.wait(self.flush_interval):
            try:
                self._flush_queue(None)
            except Exception:  # noqa: BLE001 - the flusher must not die
                pass

    def _end_flusher(self) -> threading.Thread | None:
        """Ask the flusher to end (after the write it may be doing); return it, to join."""
        with self._flusher_lock:
            flusher, self._flusher = self._flusher, None
            self._stop_flusher.set()
        return flusher

    def _before_fork(self) -> None:
        """Write what is queued and end the flusher, so that the process forks without a thread
        of ours. Bounded: a write that makes no progress for FORK_FLUSH_TIMEOUT (stuck on a hung
        filesystem) is left running, in its thread, and the flusher is waited for at most as long."""
        flusher = self._end_flusher()
        if self._flush_queue(_wait_for(FORK_FLUSH_TIMEOUT)) and flusher is not None:
            deadline = time.monotonic() + FORK_FLUSH_TIMEOUT
            flusher.join(FORK_FLUSH_TIMEOUT)
            if not flusher.is_alive():
                _wait_until_thread_is_gone(flusher, min(0.5, max(0.0, deadline - time.monotonic())))

    def _write_queued(self, started: float, stall: float | None) -> bool:
        """Encode and write what is queued now (not what other threads queue meanwhile: a thread
        that logs without pause must not keep a flush going), in order, about `WRITE_CHUNK`
        records at a time; False when a pipe took nothing for `stall` seconds (`_wait_writable`):
        the rest stays for the next flush."""
        if self._unfinished is not None and not self._write_unfinished(started, stall):
            return False
        queue = self._queue
        if not queue:
            return True
        self._reopen_if_replaced()
        lines: list[bytes] = []
        deferred: list[tuple] = []
        popleft = queue.popleft
        wrote = False
        complete = True
        for _ in range(len(queue)):
            try:
                line = popleft()
            except IndexError:  # never expected: one flush at a time takes from the queue
                break
            kind = type(line)
            if kind is tuple:  # a deferred record (`handle_deferred`): encoded here, in a batch
                self.in_flight_records += 1
                deferred.append(line)
                if len(deferred) < WRITE_CHUNK:
                    continue
                self._encode_deferred(deferred, lines)
            else:
                if deferred:  # keep the queue's order
                    self._encode_deferred(deferred, lines)
                if kind is bytes:
                    self.in_flight_records += 1
                    lines.append(line)
                else:  # the stamps of the deferred records after it (`set_stamps`)
                    self._queued_stamps -= 1
                    self._writer_encoder = line
            if len(lines) >= WRITE_CHUNK:
                wrote = True
                data, count = b"".join(lines), len(lines)
                lines.clear()
                if not self._write(data, count, started, stall):
                    complete = False
                    break
        if complete:
            if deferred:
                self._encode_deferred(deferred, lines)
            if lines:
                wrote = True
                complete = self._write(b"".join(lines), len(lines), started, stall)
        if wrote and self.stats_path is not None:
            self._write_stats()
        return complete

    def _encode_deferred(self, deferred: list[tuple], lines: list[bytes]) -> None:
        """Encode `deferred` records onto `lines` and empty `deferred`; one that fails (never
        expected: encoding falls back to the careful way) is counted as dropped."""
        before = len(lines)
        try:
            encode_deferred_batch(deferred, self._writer_encoder, lines)
        except Exception:  # noqa: BLE001 - never into the program
            failed = len(deferred) - (len(lines) - before)
            self.dropped_records += failed
            self.in_flight_records -= failed
        deferred.clear()

    def stats(self) -> dict[str, Any]:
        """The handler's counters: records written, dropped, queued, in flight and come by the fast
        path, and the thread CPU time its flushes took (encoding deferred records, writing).

        >>> sorted(WideEventHandler("x.jsonlog").stats())  # doctest: +NORMALIZE_WHITESPACE
        ['dropped_records', 'fast_path_records', 'in_flight_records', 'path', 'pid', 'queued_records',
         'writer_cpu_ns', 'written_records']
        """
        stats = {"path": str(self.path), "pid": os.getpid(), "written_records": self.written_records,
                 "dropped_records": self.dropped_records, "queued_records": self.queued_records,
                 "in_flight_records": self.in_flight_records, "fast_path_records": self.fast_path_records,
                 "writer_cpu_ns": self.writer_cpu_ns}
        if self.more_stats is not None:
            stats.update(self.more_stats())
        return stats

    def _write_stats(self) -> None:
        try:
            temporary = self.stats_path.with_name(f"{self.stats_path.name}.{os.getpid()}.tmp")
            temporary.write_text(json.dumps(self.stats()))
            os.replace(temporary, self.stats_path)
        except Exception:  # noqa: BLE001 - counters are a diagnostic: never into the program
            pass

    def _write_unfinished(self, started: float, stall: float | None) -> bool:
        """Write the rest of a write a pipe did not take in time (its records are in flight)."""
        (data, records), self._unfinished = self._unfinished, None
        return self._write(data, records, started, stall)

    def _write(self, data: bytes, records: int, started: float, stall: float | None) -> bool:
        """Write `data`, whose lines are `records` records in flight (the first may be the rest of
        one begun earlier); False when a pipe took nothing for `stall` seconds (None: PIPE_WAIT):
        the rest is kept, in flight, for the next flush."""
        # every flush tries again after a failure (space freed, folder made): a failed open or
        # write every flush interval costs nothing next to the records it saves
        view, done = memoryview(data), 0
        try:
            fd = self._file[0] if self._file is not None else self._open()
            while done < len(data):
                try:
                    done += os.write(fd, view[done:])
                    self._progress_at = _monotonic()
                except BlockingIOError:  # a pipe whose reader does not keep up
                    if not self._wait_writable(fd, started, PIPE_WAIT if stall is None else stall):
                        whole = data.count(b"\n", 0, done)
                        self.written_records += whole
                        self.in_flight_records -= whole
                        self._unfinished = (data[done:], records - whole)
                        return False
            self.written_records += records
            self.in_flight_records -= records
        except OSError as exc:
            written = data.count(b"\n", 0, done)  # whole lines that reached the file before the error
            self.written_records += written
            self.dropped_records += records - written
            self.in_flight_records -= records
            self._close_file()  # reopened (and its cut line ended) at the next try
            self._warn_once("write", f"taskscope: cannot write {self.path} ({exc.strerror or exc}); records are "
                                     "dropped and counted (handler.dropped_records) until a write succeeds")
        return True

    def _time_left(self, started: float, stall: float) -> float:
        """Seconds before a wait begun at `started` gives up: when this handler's writing has made
        no progress for `stall` seconds, or for SIGTERM_FLUSH_TIMEOUT since SIGTERM arrived."""
        now = _monotonic()
        progress = self._progress_at
        left = stall - (now - max(started, progress))
        if _sigterm_at is not None:  # it may arrive during the wait, which then ends sooner
            left = min(left, SIGTERM_FLUSH_TIMEOUT - (now - max(_sigterm_at, progress)))
        return left

    def _acquire_write_lock(self, started: float, stall: float) -> bool:
        """Take the write lock, waiting while its holder's writing makes progress (`_time_left`)."""
        lock = self._write_lock
        if lock.acquire(blocking=False):
            return True
        while True:
            left = self._time_left(started, stall)
            if left <= 0:
                return False
            if lock.acquire(timeout=min(left, _WAIT_SLICE)):
                return True

    def _wait_writable(self, fd: int, started: float, stall: float) -> bool:
        """Wait until the pipe `fd` has room (or an error to report), while `_time_left` says so."""
        poller = select.poll()
        poller.register(fd, select.POLLOUT)
        while True:
            left = self._time_left(started, stall)
            if left <= 0:
                return False
            if poller.poll(min(left, _WAIT_SLICE) * 1000):
                return True

    def _open(self) -> int:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # O_NONBLOCK: a FIFO with no reader fails at once (ENXIO) rather than blocking the flush,
        # which exit and fork wait for; it stays set on a pipe (a reader may stop reading: `_write`
        # then waits for room while it makes progress) and is cleared on a regular file
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK, 0o666)
        try:
            status = os.fstat(fd)
            if stat.S_ISREG(status.st_mode):
                fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
                if _ends_inside_a_line(self.path):
                    os.write(fd, b"\n")  # a cut last line (a killed writer, a full disk) stays alone on its line
        except OSError:
            os.close(fd)
            raise
        self._file = (fd, (status.st_dev, status.st_ino))
        return fd

    def _reopen_if_replaced(self) -> None:
        """Close the file when the path no longer names it (deleted, or renamed away by a log
        rotation): the next write opens the path again. One `stat` a flush that writes."""
        if self._file is None:
            return
        try:
            status = os.stat(self.path)
            if (status.st_dev, status.st_ino) == self._file[1]:
                return
        except OSError:
            pass
        self._close_file()

    def _close_file(self) -> None:
        if self._file is not None:
            fd, self._file = self._file[0], None
            try:
                os.close(fd)
            except OSError:
                pass

    def _after_fork_in_child(self) -> None:
        # the parent flushed before forking; whatever is still queued or in flight is the parent's
        self._queue = deque()
        self._queued_stamps = 0
        self._unfinished, self.in_flight_records = None, 0
        self._writer_encoder = self._encoder
        self._write_lock = threading.Lock()
        self._lock_owner = None
        self._flusher_lock = threading.Lock()
        self._stop_flusher = threading.Event()
        self._flusher = None

    def __repr__(self) -> str:
        return f"<WideEventHandler {self.path} ({logging.getLevelName(self.level)})>"


def _ends_inside_a_line(path: Path, looks: int = 3) -> bool:
    """Whether an existing file ends without a newline (a writer was killed mid-write).

    A line another process is appending at this moment can look so too (a write that crosses a
    page boundary shows its first page first), and a newline written after it would leave an
    empty line: the end must look cut `looks` times, 10 ms apart."""
    for look in range(looks):
        if look:
            time.sleep(0.01)
        try:
            with open(path, "rb") as file:
                if file.seek(0, os.SEEK_END) == 0:
                    return False
                file.seek(-1, os.SEEK_END)
                if file.read(1) == b"\n":
                    return False
        except OSError:  # missing, or not readable: nothing to repair
            return False
    return True


def _warn(message: str) -> None:
    try:
        sys.stderr.write(message + "\n")
    except Exception:  # noqa: BLE001 - no stderr either: nothing more we can do
        pass


# ---- bounded waits -------------------------------------------------------------------------

_get_ident = threading.get_ident
#: thread ident -> how many of our flushes it is inside (a signal handler runs inside them, on the main thread)
_flushing: dict[int, int] = {}
_monotonic = time.monotonic
_exiting = False  # set when the exit flush starts
_exit_gave_up = False  # a flush at exit gave up on a stuck write: the later ones do not wait again
_sigterm_at: float | None = None  # when SIGTERM arrived (`flush_on_sigterm`)
#: (signal, thread ident): a SIGTERM that arrived inside a flush on that thread, acted on when it ends
_pending_sigterm: tuple[int, int] | None = None
_terminating = False


def _wait_for(timeout: float | None) -> float:
    """How long a flush may wait for a write that makes no progress: `timeout` (None or
    negative: FLUSH_TIMEOUT), at most EXIT_FLUSH_TIMEOUT at exit (none once an exit flush gave up
    on a stuck write) and SIGTERM_FLUSH_TIMEOUT once SIGTERM has arrived."""
    wait = FLUSH_TIMEOUT if timeout is None or timeout < 0 else timeout
    if _exiting:
        wait = 0.0 if _exit_gave_up else min(wait, EXIT_FLUSH_TIMEOUT)
    if _sigterm_at is not None:
        wait = min(wait, SIGTERM_FLUSH_TIMEOUT)
    return wait


def flush_all(timeout: float | None = None) -> None:
    """Flush every live WideEventHandler, each giving up on a write that makes no progress for
    `timeout` seconds (None: FLUSH_TIMEOUT).

    >>> flush_all(timeout=1.0)
    """
    for handler in list(_live_handlers):
        try:
            handler.flush(_wait_for(timeout))  # a number: subclasses pass it on to their own waits
        except Exception:  # noqa: BLE001
            pass


def _flush_at_exit() -> None:
    """The exit flush (atexit; multiprocessing's finalizers in its children): every handler's
    queue is written, giving up on a write that makes no progress for EXIT_FLUSH_TIMEOUT (once
    in all: the later flushes of the exit, logging.shutdown's included, then do not wait); what
    a stuck write leaves is dropped, counted and warned about."""
    global _exiting
    _exiting = True
    for handler in list(_live_handlers):
        try:
            handler._flush_before_end("before the process exited")  # noqa: SLF001
        except Exception:  # noqa: BLE001 - never into the exiting program
            pass


def flush_on_sigterm() -> bool:
    """Flush every WideEventHandler when SIGTERM arrives, then die of SIGTERM as before.

    Python's default SIGTERM ends the process without running `atexit`, which would lose the
    last flush interval of a process that is stopped with `terminate()` (Parsl stops its
    interchange and workers that way). Installed only over the default action and only from the
    main thread; returns whether it was installed.

    The flush writes every record logged before it began; it gives up on a write that makes no
    progress for SIGTERM_FLUSH_TIMEOUT (counted from the signal's arrival at the earliest), and
    what that write leaves is dropped, counted and warned about. What other threads log while it
    runs dies with the process (the last counters show it queued). A SIGTERM that arrives inside a
    flush on the main thread (the exit flush, say, when `Pool.terminate()` stops a worker that is
    ending) lets that flush finish first.

    >>> flush_on_sigterm()   # doctest: +SKIP
    True
    """
    if threading.current_thread() is not threading.main_thread():
        return False
    try:
        if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
            return False  # the program handles SIGTERM itself: leave it
        signal.signal(signal.SIGTERM, _flush_then_terminate)
    except (ValueError, OSError, AttributeError):
        return False
    return True


def _flush_then_terminate(signum: int, frame: Any) -> None:
    global _sigterm_at, _pending_sigterm
    if _sigterm_at is None:
        _sigterm_at = _monotonic()
    ident = _get_ident()
    if _flushing.get(ident):
        # the signal interrupted one of our flushes on this thread, which may hold the write lock
        # and records taken from the queue: it finishes (bounded), then `_terminate` runs
        _pending_sigterm = (signum, ident)
        return
    _terminate(signum)


def _terminate(signum: int) -> None:
    """Flush every handler (bounded as SIGTERM's flushes are), count what a stuck write left as dropped, then die of `signum`."""
    global _terminating
    if _terminating:
        return
    _terminating = True
    for handler in list(_live_handlers):
        try:
            handler._flush_before_end("before SIGTERM ended the process", count_in_flight=True)  # noqa: SLF001
        except Exception:  # noqa: BLE001
            pass
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


_forking = False  # between the before-fork and after-fork hooks: no flusher is started


def _before_fork() -> None:
    global _forking
    _forking = True
    for handler in list(_live_handlers):
        try:
            handler._before_fork()  # noqa: SLF001
        except Exception:  # noqa: BLE001 - a fork must not fail because of us
            pass
    _flush_when_multiprocessing_children_exit()


def _after_fork_in_parent() -> None:
    global _forking
    _forking = False
    for handler in list(_live_handlers):
        # records another thread logged while the process forked (the next record starts the others)
        if handler._queue:  # noqa: SLF001
            handler._start_flusher()  # noqa: SLF001


def _after_fork_in_child() -> None:
    global _forking, _exiting, _exit_gave_up, _sigterm_at, _pending_sigterm, _terminating
    _forking = False
    _flushing.clear()
    _exiting = _exit_gave_up = False
    _sigterm_at = _pending_sigterm = None
    _terminating = False
    for handler in list(_live_handlers):
        handler._after_fork_in_child()  # noqa: SLF001


def _wait_until_thread_is_gone(thread: threading.Thread, timeout: float = 0.5) -> None:
    """Wait (at most `timeout` s) until a joined thread has left the OS's list of the process's threads.

    On Python 3.12, join() returns while the OS thread is still ending, and os.fork() counts the
    OS threads (on Linux, /proc) to decide whether to warn. Where /proc is missing, join() is all.
    """
    task = f"/proc/self/task/{thread.native_id}"
    deadline = time.monotonic() + timeout
    while os.path.exists(task) and time.monotonic() < deadline:
        time.sleep(0.0001)


# ---- multiprocessing children: they end with os._exit, without atexit ---------------------

class _ExitFlush:
    """Registered with multiprocessing so that its forked children flush when they end."""


_EXIT_FLUSH = _ExitFlush()
_registered_with_multiprocessing = False
_exit_flush_registered_in: int | None = None  # the pid whose multiprocessing finalizers hold the exit flush


def _flush_when_multiprocessing_children_exit() -> None:
    """A child that multiprocessing forks (Process, ProcessPoolExecutor, Pool) ends with
    `os._exit`, after multiprocessing's own finalizers but without `atexit`: without one of
    those finalizers it would lose its last flush interval. multiprocessing clears inherited
    finalizers when a child starts, so the finalizer is registered from an after-fork hook it
    runs in the child. Nothing is done for a program that does not use multiprocessing."""
    global _registered_with_multiprocessing
    util = sys.modules.get("multiprocessing.util")
    if util is not None and not _registered_with_multiprocessing:
        util.register_after_fork(_EXIT_FLUSH, _register_exit_flush)
        _registered_with_multiprocessing = True  # the registry, and this flag, pass on to children


def _flush_when_this_multiprocessing_child_ends() -> None:
    """Register the exit flush with multiprocessing's finalizers when a handler is made in a
    multiprocessing child that was not forked from a process with handlers: a `forkserver` child
    (Python 3.14's default on Linux) ends with `os._exit`, and no fork of ours registered it."""
    process = sys.modules.get("multiprocessing.process")
    if process is None or _exit_flush_registered_in == os.getpid() or process.parent_process() is None:
        return
    try:
        _register_exit_flush(_EXIT_FLUSH)
    except Exception:  # noqa: BLE001 - never into the program
        pass


def _register_exit_flush(_: _ExitFlush) -> None:
    global _exit_flush_registered_in
    import multiprocessing.util

    multiprocessing.util.Finalize(None, _flush_at_exit, exitpriority=0)
    _exit_flush_registered_in = os.getpid()


atexit.register(_flush_at_exit)
os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent, after_in_child=_after_fork_in_child)
