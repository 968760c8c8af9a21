"""`WideEventLogging`: a Parsl `LogConfig` that writes taskscope wide events from every component.

Parsl hands the config to the DFK, the HTEX interchange (pickled through its stdin), every
manager (pickled to `<label>/log_config/log_config.pkl`), every worker (pickled again) and the
monitoring database manager, and calls `initialize_logging(log_dir=..., log_name=...)` in each
process. Each process then writes `<log_dir>/<log_name>.jsonlog` with a `WideEventHandler` on the
root logger, and stamps every record with what its place in that layout tells: component,
executor label, block, manager, worker, run folder, host, and the run id once the DFK knows it.

The class must stay importable by module path and picklable (no locks, files or handlers as
attributes): live handlers are kept in a module-level table keyed by the config's uuid.
"""

from __future__ import annotations

import logging
import os
import pathlib
import re
import socket
import sys
import threading
import time
from typing import Any, Callable

from parsl.logconfigs.base import LogConfig

from taskscope.emit.handler import DEFAULT_FLUSH_INTERVAL, WideEventHandler, flush_on_sigterm
from taskscope.emit import logger as fast_logger
from taskscope.emit.logger import use_fast_path
from taskscope.emit.records import make_fast_record_factory

_WORKER_NAME = re.compile(r"worker_(\d+)$")
_BLOCK_DIR = re.compile(r"block-(.+)$")


def process_stamps(log_dir: pathlib.Path, log_name: str, run_id: str | None = None) -> dict[str, Any]:
    """What a Parsl process knows about itself from where Parsl asks it to log.

    >>> process_stamps(pathlib.Path("/r/000/htex/block-0/ab12"), "worker_3", "run-1")["worker_id"]
    '3'
    >>> process_stamps(pathlib.Path("/r/000/htex"), "interchange")["executor_label"]
    'htex'
    """
    stamps: dict[str, Any] = {"host": socket.gethostname()}
    worker = _WORKER_NAME.match(log_name)
    if log_name == "parsl":
        stamps.update(component="parsl", run_dir=str(log_dir))
    elif log_name == "interchange":
        stamps.update(component="interchange", executor_label=log_dir.name, run_dir=str(log_dir.parent))
    elif log_name == "database_manager":
        stamps.update(component="dbm", run_dir=str(log_dir))
    elif log_name == "manager" or worker:
        stamps.update(component="worker" if worker else "manager", manager_id=log_dir.name)
        block = _BLOCK_DIR.match(log_dir.parent.name)
        if block:
            stamps.update(block_id=block[1], executor_label=log_dir.parent.parent.name,
                          run_dir=str(log_dir.parent.parent.parent))
        if worker:
            stamps["worker_id"] = worker[1]
    else:
        stamps["component"] = log_name
    if run_id:
        stamps["run_id"] = run_id
    return stamps


class WideEventLogging(LogConfig):
    """Parsl log configuration: every component writes JSON-lines wide events (`*.jsonlog`).

    One line in a Parsl config turns it on:

    >>> Config(executors=[...], initialize_logging=WideEventLogging())   # doctest: +SKIP

    `level` applies in every process (it replaces `worker_debug` / `monitoring_debug`);
    `flush_interval` bounds what a killed process can lose; `fast_records` installs a cheaper
    but equivalent LogRecord factory in each Parsl process; `fast_loggers` switches Parsl's own
    loggers (`parsl.*`) to `FastPathLogger`, so that their records skip stdlib's LogRecord
    machinery while only the wide handler receives them (the same lines either way);
    `defer_encoding` lets the fast path queue a record whose values are all scalars as its parts,
    formatted and encoded by the handler's writer thread in batches (the same lines either way);
    `stats_dir`, when given, is where each process writes its handler's counters
    (`<log_name>-<pid>.json`: records written, dropped, and come by the fast path) at each flush,
    with, if `measure_calls`, the thread CPU time spent in Parsl's logging calls (`call_cpu_ns`,
    `calls`: a diagnostic that adds about 1 µs a call).
    """

    def __init__(self, *, level: int = logging.DEBUG, flush_interval: float = DEFAULT_FLUSH_INTERVAL,
                 fast_records: bool = True, fast_loggers: bool = True, defer_encoding: bool = True,
                 stats_dir: str | None = None, measure_calls: bool = False) -> None:
        super().__init__()
        self.level = level
        self.flush_interval = flush_interval
        self.fast_records = fast_records
        self.fast_loggers = fast_loggers
        self.defer_encoding = defer_encoding
        self.stats_dir = stats_dir
        self.measure_calls = measure_calls
        self.run_id: str | None = None  # learned in the DFK, then carried to other processes by pickling

    def initialize_logging(self, *, log_dir: pathlib.Path, log_name: str) -> Callable[[], None]:
        """Attach a WideEventHandler writing `<log_dir>/<log_name>.jsonlog` to the root logger."""
        log_dir = pathlib.Path(log_dir)
        if log_name == "parsl":
            self.run_id = None  # a new DFK: its run id is learned from its first records
        handler_class = _RunIdLearningHandler if log_name == "parsl" else WideEventHandler
        handler = handler_class(
            log_dir / f"{log_name}.jsonlog", self.level, flush_interval=self.flush_interval,
            stamps=process_stamps(log_dir, log_name, self.run_id),
        )
        if isinstance(handler, _RunIdLearningHandler):
            handler.config = self
        if getattr(self, "stats_dir", None):  # getattr: a config pickled before these options existed
            handler.stats_path = pathlib.Path(self.stats_dir) / f"{log_name}-{os.getpid()}.json"
            handler.stats_path.parent.mkdir(parents=True, exist_ok=True)
            if getattr(self, "measure_calls", False):
                fast_logger.measure_call_cost()
                handler.more_stats = _call_cost_stats
        root = logging.getLogger()
        root.addHandler(handler)
        if log_name == "parsl":
            # the DFK runs in the user's program: Parsl's records reach the wide handler at `level`,
            # and the program's own handlers only those its logging let through before
            restore_levels = _log_parsl_to(handler, self.level)
        else:  # a process of Parsl's own (interchange, manager, worker, database manager)
            restore_levels = _lower_root_level(self.level)
        restore_factory = _install_fast_records() if self.fast_records else None
        restore_loggers = use_fast_path(_is_parsl_logger) if getattr(self, "fast_loggers", True) else None
        fast_logger.DEFER_ENCODING = getattr(self, "defer_encoding", True)
        flush_on_sigterm()  # Parsl stops the interchange and workers with SIGTERM

        def uninitialize() -> None:
            root.removeHandler(handler)
            restore_levels()
            handler.close()
            if restore_factory:
                restore_factory()
            if restore_loggers:
                restore_loggers()

        return uninitialize

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        if state.get("run_id") is None:
            state["run_id"] = _run_id_of_dfk_being_built()
        return state

    def __repr__(self) -> str:
        return f"WideEventLogging(level={logging.getLevelName(self.level)}, flush_interval={self.flush_interval})"


class _RunIdLearningHandler(WideEventHandler):
    """The DFK's handler: learns the run id from the DFK's first records that carry it, stamps it
    on every record, and puts it on the config so that later pickles take it to the executors.

    Lines logged before the run id is known (the config dump, the version) are held back, at most
    `RUN_ID_WAIT` seconds, and given the run id when it is learned; exit and fork write them at once.
    """

    RUN_ID_WAIT = 10.0
    config: WideEventLogging | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._held: list[bytes] | None = []
        self._held_lock = threading.Lock()
        self._held_prefix = self._encoder.prefix
        self._wait_until = time.monotonic() + self.RUN_ID_WAIT

    def handle(self, record: logging.LogRecord) -> bool:  # type: ignore[override]
        run_id = record.__dict__.get("parsl.dfk")
        if run_id is None and isinstance(record.msg, str) and record.msg.startswith("Run id is: "):
            run_id = record.msg[len("Run id is: "):].strip()
        if run_id:
            self.set_stamps(run_id=str(run_id))
            if self.config is not None:
                self.config.run_id = str(run_id)
            self._release()
            self.handle = super().handle  # type: ignore[method-assign] - learned: back to the plain path
            return super().handle(record)
        with self._held_lock:
            if self._held is not None:
                try:
                    self._held.append(self._encoder.line(record))
                except Exception:  # noqa: BLE001 - never into the caller
                    self.dropped_records += 1
                if time.monotonic() < self._wait_until:
                    return True
        self._release()
        return super().handle(record)

    def flush(self, timeout: float = -1) -> bool:
        self._release(timeout)
        return super().flush(timeout)

    def _release(self, timeout: float = -1) -> None:
        """Queue the held lines, re-stamped with what is known now (waiting at most `timeout`
        seconds for the lock: SIGTERM's flush can interrupt `handle` on the thread that holds it)."""
        if not self._held_lock.acquire(timeout=timeout):
            return
        try:
            held, self._held = self._held, None
        finally:
            self._held_lock.release()
        if not held:
            return
        old, new = self._held_prefix, self._encoder.prefix
        for line in held:
            if old != new and line.startswith(old) and b'"run_id"' not in line:
                line = new + line[len(old):]
            self._queue.append(line)


class _ToTheProgramsHandlers(logging.Handler):
    """On the `parsl` logger, which WideEventLogging lowers to its level and stops propagating:
    hands the records the program's logging let through before (its level is that level) to the
    handlers above `parsl`, as propagation did, but for the wide handler, which has them already.
    Records below its level reach the wide handler alone, by the fast path."""

    def __init__(self, logger: logging.Logger, level: int, wide: logging.Handler) -> None:
        super().__init__(level)
        self.logger = logger
        self.wide = wide

    def handle(self, record: logging.LogRecord) -> bool:  # type: ignore[override]
        if self.filters and not self.filter(record):
            return False
        current = self.logger.parent
        while current:  # as Logger.callHandlers walks on from `parsl`
            for handler in current.handlers:
                if handler is not self.wide and record.levelno >= handler.level:
                    handler.handle(record)
            current = current.parent if current.propagate else None
        return True

    def emit(self, record: logging.LogRecord) -> None:
        self.handle(record)


def _log_parsl_to(handler: WideEventHandler, level: int) -> Callable[[], None]:
    """Send the `parsl` loggers' records of `level` and above to `handler`, leaving what the
    program's handlers receive as it was (the root logger's level untouched); return how to undo it."""
    parsl_logger = logging.getLogger("parsl")
    before = (parsl_logger.level, parsl_logger.propagate)
    to_the_program = _ToTheProgramsHandlers(parsl_logger, parsl_logger.getEffectiveLevel(), handler)
    parsl_logger.setLevel(level if parsl_logger.level == logging.NOTSET else min(parsl_logger.level, level))
    parsl_logger.propagate = False
    parsl_logger.addHandler(handler)
    parsl_logger.addHandler(to_the_program)

    def restore() -> None:
        parsl_logger.removeHandler(to_the_program)
        parsl_logger.removeHandler(handler)
        parsl_logger.setLevel(before[0])
        parsl_logger.propagate = before[1]
        fast_logger.routes_changed()

    return restore


def _lower_root_level(level: int) -> Callable[[], None]:
    """Lower the root logger to `level` (a process of Parsl's own: every record of it is the
    run's); return how to undo it."""
    root = logging.getLogger()
    before = root.level
    root.setLevel(level if before == logging.NOTSET else min(before, level))
    return lambda: root.setLevel(before)


def _call_cost_stats() -> dict[str, int]:
    cost = fast_logger.CALL_COST or [0, 0]
    return {"call_cpu_ns": cost[0], "calls": cost[1]}


def _is_parsl_logger(name: str) -> bool:
    return name == "parsl" or name.startswith("parsl.")


def _run_id_of_dfk_being_built() -> str | None:
    """The run id of a DataFlowKernel whose __init__ is on the stack, if any.

    The DFK pickles its log config for the monitoring database manager after it has made its run
    id but before it logs it, so the DFK's handler cannot have learned it yet; the DFK object in
    the calling frames has it. Pickling is rare (a few times per run), so walking frames is cheap.
    """
    frame = sys._getframe(1)  # noqa: SLF001
    for _ in range(64):
        if frame is None:
            return None
        candidate = frame.f_locals.get("self") if frame.f_code.co_name == "__init__" else None
        if type(candidate).__name__ == "DataFlowKernel":
            run_id = getattr(candidate, "run_id", None)
            return str(run_id) if run_id else None
        frame = frame.f_back
    return None


def _install_fast_records() -> Callable[[], None] | None:
    """Install the fast LogRecord factory if the stdlib one is in place; return how to undo it."""
    if logging.getLogRecordFactory() is not logging.LogRecord:
        return None  # someone else chose a factory: leave it
    factory = make_fast_record_factory()
    if factory is None:
        return None
    logging.setLogRecordFactory(factory)

    def restore() -> None:
        if logging.getLogRecordFactory() is factory:
            logging.setLogRecordFactory(logging.LogRecord)

    return restore
