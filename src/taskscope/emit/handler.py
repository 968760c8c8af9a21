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
"""

from __future__ import annotations

import atexit
import fcntl
import json
import logging
import os
import signal
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
#: how long exit and fork wait for a flush in progress: a write stuck on a hung filesystem must
#: not hang the program (what is still queued then is lost, and was never going to be written)
EXIT_FLUSH_TIMEOUT = 10.0
FORK_FLUSH_TIMEOUT = 5.0
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
        self._write_lock = threading.Lock()  # one writer at a time: the flusher, flush(), close()
        self._file = None
        self._warned = False
        self._closed = False
        # the flusher is started by the first record (again after a fork) and ends when its
        # event is set; this lock guards starting and stopping it and is never held during I/O
        self._flusher_lock = threading.Lock()
        self._flusher: threading.Thread | None = None
        self._stop_flusher = threading.Event()
        _live_handlers.add(self)

    @property
    def stamps(self) -> dict[str, Any]:
        """The fields added to every record (a copy; change them with `set_stamps`)."""
        return dict(self._encoder.stamps)

    def set_stamps(self, **stamps: Any) -> None:
        """Add or change stamps for the records logged from now on."""
        self._encoder = RecordEncoder({**self._encoder.stamps, **stamps})
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

    def _drop_after_close(self) -> None:
        # a closed handler still attached to a logger: queued records would never be written
        self.dropped_records += 1
        self._warn_once(f"taskscope: records logged to {self.path} after its handler was closed are "
                        "dropped and counted (handler.dropped_records)")

    def _warn_once(self, message: str) -> None:
        if not self._warned:
            self._warned = True
            _warn(message)

    def emit(self, record: logging.LogRecord) -> None:
        """Queue `record` (for code that calls emit directly)."""
        self.handle(record)

    # ---- flushing --------------------------------------------------------------------------

    def flush(self, timeout: float = -1) -> None:
        """Write every queued record now (waiting at most `timeout` seconds for a flush in progress)."""
        self._flush_queue(timeout)

    def _flush_queue(self, timeout: float = -1) -> bool:
        """Write what is queued; False if a flush in progress did not end within `timeout`."""
        if not self._write_lock.acquire(timeout=timeout):
            return False
        start = time.thread_time_ns()
        try:
            self._write_queued()
        finally:
            self.writer_cpu_ns += time.thread_time_ns() - start
            self._write_lock.release()
        return True

    def close(self) -> None:
        """Write what is queued, stop the flusher and close the file."""
        if self._closed:
            return
        self._closed = True
        self._end_flusher()
        self.flush(EXIT_FLUSH_TIMEOUT)
        if self._write_lock.acquire(timeout=EXIT_FLUSH_TIMEOUT):
            try:
                self._close_file()
            finally:
                self._write_lock.release()
        _live_handlers.discard(self)
        super().close()

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
                self._flush_queue()
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
        of ours. Bounded: in all at most FORK_FLUSH_TIMEOUT (a write stuck on a hung filesystem
        is then left running, in its thread)."""
        deadline = time.monotonic() + FORK_FLUSH_TIMEOUT
        flusher = self._end_flusher()
        if self._flush_queue(FORK_FLUSH_TIMEOUT) and flusher is not None:
            flusher.join(max(0.0, deadline - time.monotonic()))
            if not flusher.is_alive():
                _wait_until_thread_is_gone(flusher, min(0.5, max(0.0, deadline - time.monotonic())))

    def _write_queued(self) -> None:
        """Encode and write what is queued, in order, about `WRITE_CHUNK` records at a time."""
        queue = self._queue
        lines: list[bytes] = []
        deferred: list[tuple] = []
        popleft = queue.popleft
        wrote = False
        while True:
            try:
                line = popleft()
            except IndexError:
                break
            kind = type(line)
            if kind is tuple:  # a deferred record (`handle_deferred`): encoded here, in a batch
                deferred.append(line)
                if len(deferred) < WRITE_CHUNK:
                    continue
                self._encode_deferred(deferred, lines)
            else:
                if deferred:  # keep the queue's order
                    self._encode_deferred(deferred, lines)
                if kind is bytes:
                    lines.append(line)
                else:  # the stamps of the deferred records after it (`set_stamps`)
                    self._writer_encoder = line
            if len(lines) >= WRITE_CHUNK:
                self._write(b"".join(lines), len(lines))
                lines.clear()
                wrote = True
        if deferred:
            self._encode_deferred(deferred, lines)
        if lines:
            self._write(b"".join(lines), len(lines))
            wrote = True
        if wrote and self.stats_path is not None:
            self._write_stats()

    def _encode_deferred(self, deferred: list[tuple], lines: list[bytes]) -> None:
        """Encode `deferred` records onto `lines` and empty `deferred`; one that fails (never
        expected: encoding falls back to the careful way) is counted as dropped."""
        before = len(lines)
        try:
            encode_deferred_batch(deferred, self._writer_encoder, lines)
        except Exception:  # noqa: BLE001 - never into the program
            self.dropped_records += len(deferred) - (len(lines) - before)
        deferred.clear()

    def stats(self) -> dict[str, Any]:
        """The handler's counters: records written, dropped, and come by the fast path, and the
        thread CPU time its flushes took (encoding deferred records, writing).

        >>> sorted(WideEventHandler("x.jsonlog").stats())
        ['dropped_records', 'fast_path_records', 'path', 'pid', 'writer_cpu_ns', 'written_records']
        """
        stats = {"path": str(self.path), "pid": os.getpid(), "written_records": self.written_records,
                 "dropped_records": self.dropped_records, "fast_path_records": self.fast_path_records,
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

    def _write(self, data: bytes, records: int) -> None:
        # every flush tries again after a failure (space freed, folder made): a failed open or
        # write every flush interval costs nothing next to the records it saves
        view, done = memoryview(data), 0
        try:
            if self._file is None:
                self._file = self._open()
                if _ends_inside_a_line(self.path):
                    self._file.write(b"\n")  # a cut last line (a killed writer, a full disk) stays alone on its line
            while done < len(data):
                done += self._file.write(view[done:])
            self.written_records += records
        except OSError as exc:
            written = data.count(b"\n", 0, done)  # whole lines that reached the file before the error
            self.written_records += written
            self.dropped_records += records - written
            self._close_file()  # reopened (and its cut line ended) at the next try
            self._warn_once(f"taskscope: cannot write {self.path} ({exc.strerror or exc}); records are "
                            "dropped and counted (handler.dropped_records) until a write succeeds")

    def _open(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # O_NONBLOCK: a FIFO with no reader fails at once (ENXIO) rather than blocking the flush,
        # which exit and fork wait for; it is cleared again for the writes
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK, 0o666)
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
        return open(fd, "ab", buffering=0)  # noqa: SIM115 - kept open across flushes

    def _close_file(self) -> None:
        if self._file is not None:
            try:
                self._file.close()
            except OSError:
                pass
            self._file = None

    def _after_fork_in_child(self) -> None:
        # the parent flushed before forking; whatever is still queued is the parent's to write
        self._queue = deque()
        self._writer_encoder = self._encoder
        self._write_lock = threading.Lock()
        self._flusher_lock = threading.Lock()
        self._stop_flusher = threading.Event()
        self._flusher = None

    def __repr__(self) -> str:
        return f"<WideEventHandler {self.path} ({logging.getLevelName(self.level)})>"


def _ends_inside_a_line(path: Path) -> bool:
    """Whether an existing file ends without a newline (a writer was killed mid-write)."""
    try:
        with open(path, "rb") as file:
            if file.seek(0, os.SEEK_END) == 0:
                return False
            file.seek(-1, os.SEEK_END)
            return file.read(1) != b"\n"
    except OSError:  # missing, or not readable: nothing to repair
        return False


def _warn(message: str) -> None:
    try:
        sys.stderr.write(message + "\n")
    except Exception:  # noqa: BLE001 - no stderr either: nothing more we can do
        pass


def flush_all(timeout: float = -1) -> None:
    """Flush every live WideEventHandler (as at exit).

    >>> flush_all(timeout=1.0)
    """
    for handler in list(_live_handlers):
        try:
            handler.flush(timeout)
        except Exception:  # noqa: BLE001
            pass


def flush_on_sigterm() -> bool:
    """Flush every WideEventHandler when SIGTERM arrives, then die of SIGTERM as before.

    Python's default SIGTERM ends the process without running `atexit`, which would lose the
    last flush interval of a process that is stopped with `terminate()` (Parsl stops its
    interchange and workers that way). Installed only over the default action and only from the
    main thread; returns whether it was installed.

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
    flush_all(timeout=1.0)  # a flush already running on this thread must not deadlock us
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
    global _forking
    _forking = False
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


class _ExitFlush:
    """Registered with multiprocessing so that its forked children flush when they end."""


_EXIT_FLUSH = _ExitFlush()
_registered_with_multiprocessing = False


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


def _register_exit_flush(_: _ExitFlush) -> None:
    import multiprocessing.util

    multiprocessing.util.Finalize(None, flush_all, args=(EXIT_FLUSH_TIMEOUT,), exitpriority=0)


atexit.register(flush_all, EXIT_FLUSH_TIMEOUT)
os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent, after_in_child=_after_fork_in_child)
