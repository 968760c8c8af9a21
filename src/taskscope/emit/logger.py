"""`WideEventLogger`: a logger whose calls skip stdlib's LogRecord machinery when only
WideEventHandlers would see the record.

A stdlib `logger.debug(...)` costs about 6 µs before any handler runs: `Logger._log` walks the
stack in `findCaller`, builds a `LogRecord`, copies `extra` into it key by key and calls each
handler through `Handler.handle`. structlog's advice for a hot path is to avoid that dynamic
machinery; this logger does so when it can prove the result is the same:

- the level check is the stdlib logger's own cached `isEnabledFor`;
- the caller is one `sys._getframe` (file, line, function), skipped as stdlib skips it when
  `logging._srcfile` is None;
- a call site's constant attributes (logger, level, file, line, function) are encoded once and
  cached by code object and instruction offset (`records.site_json`; even reading `f_lineno`
  costs ~2 µs in a long function), and so are the thread's and process's (`records.thread_json`);
  the rest (message, time, fields) is one dict and one orjson call (`records.encode_moment`), and each receiving
  `WideEventHandler` queues the bytes behind its stamps (`handle_body`): no LogRecord.

It takes that path only when every handler that would receive the record (walking the logger
and its parents as `Logger.callHandlers` does) is a plain WideEventHandler without filters, the
logger is a stock `logging.Logger` without filters, and the record factory and `makeRecord` are
stdlib's (or taskscope's equivalents). Anything else (another handler, a filter, `exc_info`,
`stack_info`, `stacklevel`, an `extra` key that is a LogRecord attribute) goes through stdlib
`Logger._log` unchanged, so the output is the same either way.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from types import FrameType
from typing import Any, Callable, Mapping

from taskscope.emit import context
from taskscope.emit.handler import WideEventHandler
from taskscope.emit.records import (
    FAST_RECORDS_MATCH, HAS_TASK_NAME, STANDARD_ATTRIBUTES, caller_of, clock, deferrable, encode_moment,
    formatted_message, make_fast_record_factory, record_fields, site_json, task_name, thread_json,
)

_WIDE_HANDLE = WideEventHandler.handle
_STOCK_LOGGERS: tuple[type, ...] = (logging.Logger, logging.RootLogger)  # FastPathLogger is added below
_FACTORIES = (logging.LogRecord, make_fast_record_factory())
_NO_FIELDS: Mapping[str, Any] = {}
_current_thread = threading.current_thread
_thread_clock = time.thread_time_ns


def wide_receivers(logger: logging.Logger, level: int) -> list[WideEventHandler] | None:
    """The handlers a record of `level` from `logger` would reach, if all are plain
    WideEventHandlers (or plain NullHandlers, which are left out); None when stdlib must handle the record (another handler, a filter, no
    handler at all: stdlib then uses `logging.lastResort`).

    >>> wide_receivers(logging.getLogger("nobody.listens"), logging.INFO) is None  # doctest: +SKIP
    True
    """
    if logger.filters or logger.disabled or type(logger) not in _STOCK_LOGGERS:
        return None
    receivers = []
    found = False
    current: logging.Logger | None = logger
    while current:
        for handler in current.handlers:
            found = True
            if level >= handler.level:
                if type(handler) is logging.NullHandler and not handler.filters:
                    continue  # does nothing with a record (Parsl puts one on "parsl"); it still counts as found
                if handler.filters or (type(handler).handle is not _WIDE_HANDLE and not _switched_to_plain(handler)):
                    return None
                receivers.append(handler)
        current = current.parent if current.propagate else None
    return receivers if found else None


def log_fast(logger: logging.Logger, level: int, msg: Any, args: tuple, extra: Mapping[str, Any] | None,
             frame: FrameType | None) -> bool:
    """Write one record of `logger` (called from `frame`) without a LogRecord, when only plain
    WideEventHandlers would receive it and stdlib's record making can be reproduced; False,
    having written nothing, when stdlib must make it (the caller then calls stdlib's `_log`).
    `extra` already holds any bound fields. The fast path of `WideEventLogger` and `FastPathLogger`.

    >>> log_fast(logging.getLogger("nobody.listens"), logging.INFO, "hi", (), None, None)  # doctest: +SKIP
    False
    """
    if (not FAST_RECORDS_MATCH
            or logging._logRecordFactory not in _FACTORIES  # noqa: SLF001 - getLogRecordFactory() is a call
            or logging.Logger.makeRecord not in context.STOCK_MAKE_RECORDS
            or not (logging.logThreads and logging.logProcesses and logging.logMultiprocessing)):
        return False  # only stdlib's own record making can be reproduced without a LogRecord
    receivers = wide_receivers(logger, level)
    if receivers is None:
        return False
    if not receivers:
        return True
    if extra and not STANDARD_ATTRIBUTES.isdisjoint(extra):  # stdlib raises its KeyError to the caller
        return False
    try:
        name = logger.name
        thread = thread_json(_current_thread())
        site = site_json(name, level, frame)
        if DEFER_ENCODING and deferrable(msg, args, extra):
            return _queue_deferred(receivers, name, level, frame, site, thread, msg, args, extra)
        body, message = encode_moment(site, thread, msg, args, extra)
    except Exception:  # noqa: BLE001 - an odd frame or args: stdlib decides, the caller sees what it would
        return False
    for handler in receivers:
        if body is None or not handler.handle_body(body, extra):
            # the careful path: a value orjson refuses, or a field that overrides a stamp
            fn, lno, func = caller_of(frame)
            fields = record_fields(name, level, fn, lno, msg, args, None, func, None)
            fields.update(extra or _NO_FIELDS)
            handler.handle_fields(fields, message)
    return True


#: queue records whose values are all scalars as their parts, for the writer to encode (see
#: `records.deferrable`); False encodes every record on the caller's thread
DEFER_ENCODING = True


def _queue_deferred(receivers: list[WideEventHandler], name: str, level: int, frame: FrameType | None, site: bytes,
                    thread: bytes, msg: str, args: tuple, extra: Mapping[str, Any] | None) -> bool:
    """Queue a deferrable record's parts on each receiver (the writer encodes them); a receiver
    whose stamps an `extra` field overrides gets the careful encoding now."""
    ct = clock()
    task = task_name() if HAS_TASK_NAME else None
    for handler in receivers:
        if not handler.handle_deferred(site, thread, msg, args, extra, ct, task):
            fn, lno, func = caller_of(frame)
            fields = record_fields(name, level, fn, lno, msg, args, None, func, None)
            fields.update(extra or _NO_FIELDS)
            handler.handle_fields(fields, formatted_message(msg, args))
    return True


def _switched_to_plain(handler: logging.Handler) -> bool:
    """Whether a WideEventHandler subclass has put the plain `handle` on the instance (as the
    DFK's handler does once it knows the run id: from then on it needs no LogRecord)."""
    bound = handler.__dict__.get("handle")
    return getattr(bound, "__func__", None) is _WIDE_HANDLE


class WideEventLogger:
    """A logger whose records carry `fields` (and whatever `bind()`/`span()` add around the call),
    with the stdlib Logger API (`debug` ... `critical`, `exception`, `log`, `isEnabledFor`).

    Use it on hot paths: when only WideEventHandlers would receive a record, a call costs about
    half of a stdlib call through the same handler (less than stdlib logging's own cost);
    otherwise it is a stdlib call. Get one with `get_logger`.

    >>> log = get_logger("sim", component="solver")
    >>> log.bind(step=3).debug("converged after %d iterations", 12)   # doctest: +SKIP
    """

    __slots__ = ("logger", "fields")

    def __init__(self, logger: logging.Logger, fields: Mapping[str, Any] | None = None) -> None:
        context._install_make_record()  # noqa: SLF001 - bound fields must reach stdlib-path records too
        self.logger = logger
        self.fields = dict(fields or {})

    @property
    def name(self) -> str:
        return self.logger.name

    def bind(self, **fields: Any) -> "WideEventLogger":
        """A new logger with `fields` added to this one's."""
        context.check_names(fields)
        return WideEventLogger(self.logger, {**self.fields, **fields})

    def isEnabledFor(self, level: int) -> bool:  # noqa: N802 - the stdlib name
        return self.logger.isEnabledFor(level)

    def debug(self, msg: Any, *args: Any, exc_info: Any = None, stack_info: bool = False, stacklevel: int = 1,
              extra: Mapping[str, Any] | None = None) -> None:
        if self.logger.isEnabledFor(logging.DEBUG):
            self._log(logging.DEBUG, msg, args, exc_info, stack_info, stacklevel, extra)

    def info(self, msg: Any, *args: Any, exc_info: Any = None, stack_info: bool = False, stacklevel: int = 1,
              extra: Mapping[str, Any] | None = None) -> None:
        if self.logger.isEnabledFor(logging.INFO):
            self._log(logging.INFO, msg, args, exc_info, stack_info, stacklevel, extra)

    def warning(self, msg: Any, *args: Any, exc_info: Any = None, stack_info: bool = False, stacklevel: int = 1,
              extra: Mapping[str, Any] | None = None) -> None:
        if self.logger.isEnabledFor(logging.WARNING):
            self._log(logging.WARNING, msg, args, exc_info, stack_info, stacklevel, extra)

    def error(self, msg: Any, *args: Any, exc_info: Any = None, stack_info: bool = False, stacklevel: int = 1,
              extra: Mapping[str, Any] | None = None) -> None:
        if self.logger.isEnabledFor(logging.ERROR):
            self._log(logging.ERROR, msg, args, exc_info, stack_info, stacklevel, extra)

    def exception(self, msg: Any, *args: Any, exc_info: Any = True, stack_info: bool = False, stacklevel: int = 1,
                  extra: Mapping[str, Any] | None = None) -> None:
        if self.logger.isEnabledFor(logging.ERROR):
            self._log(logging.ERROR, msg, args, exc_info, stack_info, stacklevel, extra)

    def critical(self, msg: Any, *args: Any, exc_info: Any = None, stack_info: bool = False, stacklevel: int = 1,
                 extra: Mapping[str, Any] | None = None) -> None:
        if self.logger.isEnabledFor(logging.CRITICAL):
            self._log(logging.CRITICAL, msg, args, exc_info, stack_info, stacklevel, extra)

    fatal = critical

    def log(self, level: int, msg: Any, *args: Any, exc_info: Any = None, stack_info: bool = False, stacklevel: int = 1,
            extra: Mapping[str, Any] | None = None) -> None:
        if not isinstance(level, int):
            self.logger.log(level, msg, *args)  # raises TypeError as stdlib does
        elif self.logger.isEnabledFor(level):
            self._log(level, msg, args, exc_info, stack_info, stacklevel, extra)

    def _log(self, level: int, msg: Any, args: tuple, exc_info: Any, stack_info: bool, stacklevel: int,
             extra: Mapping[str, Any] | None) -> None:
        # the hot path (4.3-4.9 µs of CPU a call on the 2-core test machine, Python 3.11-3.13,
        # benchmarks/emit_bench.py): checks first, cheapest first
        if exc_info is not None or stack_info or stacklevel != 1:
            return self._stdlib_log(level, msg, args, exc_info, stack_info, stacklevel, extra)
        bound = context._fields.get()  # noqa: SLF001 - the same ContextVar bind() sets
        if bound or self.fields:
            # the order stdlib gives: bound fields, then the logger's, then the call's (each wins over the previous)
            extra = {**(bound or _NO_FIELDS), **self.fields, **(extra or _NO_FIELDS)}
        # the caller: frame 0 is this, 1 debug/info/..., 2 the caller; stdlib's switch turns it off
        if not log_fast(self.logger, level, msg, args, extra, sys._getframe(2) if logging._srcfile else None):  # noqa: SLF001
            self._stdlib_log(level, msg, args, exc_info, stack_info, stacklevel, extra)
        return None

    def _stdlib_log(self, level: int, msg: Any, args: tuple, exc_info: Any, stack_info: bool, stacklevel: int,
                    extra: Mapping[str, Any] | None) -> None:
        if self.fields:
            extra = {**self.fields, **extra} if extra else self.fields
        # findCaller counts frames outside logging: this one, _log and debug/info/... are ours
        self.logger._log(level, msg, args, exc_info=exc_info, extra=extra, stack_info=stack_info,  # noqa: SLF001
                         stacklevel=stacklevel + 3)

    def __repr__(self) -> str:
        return f"<WideEventLogger {self.logger.name} ({logging.getLevelName(self.logger.getEffectiveLevel())})>"


def get_logger(name: str | None = None, **fields: Any) -> WideEventLogger:
    """A logger whose records carry `fields`: stdlib underneath (any handler works, levels and
    propagation as usual), and a fast path when only WideEventHandlers would receive a record.

    Use it for code that logs often (per task, per message); `bind()`/`span()` fields apply too.

    >>> log = get_logger("myworkflow.stage", run_id="r1")
    >>> log.info("staged %d files", 3)                    # doctest: +SKIP
    """
    context.check_names(fields)
    return WideEventLogger(logging.getLogger(name), fields)


class FastPathLogger(logging.Logger):
    """A stdlib `logging.Logger` whose records take `WideEventLogger`'s fast path (`log_fast`)
    when only plain WideEventHandlers would receive them, and stdlib's `_log` otherwise: the
    same lines either way, at about half the cost of a stdlib call.

    For loggers made by code that does not know taskscope (Parsl's, made at import with
    `logging.getLogger(__name__)`): `use_fast_path` switches existing loggers to this class.

    >>> restore = use_fast_path(lambda name: name.startswith("parsl"))   # doctest: +SKIP
    """

    def _log(self, level, msg, args, exc_info=None, extra=None, stack_info=False, stacklevel=1):  # type: ignore[override]
        cost = CALL_COST  # measured here, not by a wrapper: a frame more would move the caller
        start = _thread_clock() if cost is not None else 0
        try:
            if exc_info is None and not stack_info and stacklevel == 1:
                if logging.Logger.makeRecord is context._make_record_with_context:  # noqa: SLF001 - bound fields, as it adds them
                    bound = context._fields.get()  # noqa: SLF001
                    if bound:
                        extra = {**bound, **extra} if extra else bound
                if log_fast(self, level, msg, args, extra, _caller_frame() if logging._srcfile else None):  # noqa: SLF001
                    return
            # stdlib's findCaller skips logging's frames, not this one: one more level
            super()._log(level, msg, args, exc_info, extra, stack_info, stacklevel + 1)
        finally:
            if cost is not None:
                cost[0] += _thread_clock() - start
                cost[1] += 1


_STOCK_LOGGERS += (FastPathLogger,)

#: thread CPU nanoseconds spent in `FastPathLogger` calls in this process, and their number,
#: once `measure_call_cost` has run (None before): a benchmark's view of what a call costs in
#: a real program, where caches are cold, rather than in a loop of calls
CALL_COST: list[int] | None = None


def measure_call_cost() -> None:
    """Count the thread CPU time of every `FastPathLogger` call of this process from now on
    into `CALL_COST` (a diagnostic: reading the thread's clock twice adds about 1 µs a call).

    >>> measure_call_cost(); CALL_COST is not None   # doctest: +SKIP
    True
    """
    global CALL_COST
    if CALL_COST is None:
        CALL_COST = [0, 0]


def _caller_frame() -> FrameType | None:
    """The frame stdlib's `findCaller` (stacklevel 1) names, seen from `FastPathLogger._log`: the
    first frame above it that is not logging's own (nor importlib's bootstrap)."""
    frame = sys._getframe(2)  # noqa: SLF001 - 0 is this, 1 FastPathLogger._log
    srcfile = logging._srcfile  # noqa: SLF001
    while frame is not None:
        filename = frame.f_code.co_filename
        if filename != srcfile and not ("importlib" in filename and "_bootstrap" in filename):
            return frame
        frame = frame.f_back
    return None


def use_fast_path(wanted: Callable[[str], bool]) -> Callable[[], None]:
    """Switch every existing stock `logging.Logger` whose name `wanted` accepts to
    `FastPathLogger` (the same object, so every reference to it gets the fast path); return how
    to switch them back. Loggers of other classes are left alone.

    >>> undo = use_fast_path(lambda name: name == "myapp.hot")
    >>> undo()
    """
    switched = []
    for name, logger in list(logging.root.manager.loggerDict.items()):
        if type(logger) is logging.Logger and wanted(name):
            logger.__class__ = FastPathLogger
            switched.append(logger)

    def restore() -> None:
        for logger in switched:
            if type(logger) is FastPathLogger:
                logger.__class__ = logging.Logger

    return restore
