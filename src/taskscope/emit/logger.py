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

import functools
import logging
import os
import sys
import threading
import time
from types import FrameType
from typing import Any, Callable, Mapping

from taskscope.emit import context
from taskscope.emit.handler import WideEventHandler
from taskscope.emit.records import (
    FAST_RECORDS_MATCH, HAS_TASK_NAME, SITE_CACHE, STANDARD_ATTRIBUTES, caller_of, clock, deferrable, encode_moment,
    formatted_message, has_nonfinite, make_fast_record_factory, record_fields, site_json, task_name, thread_json,
)
from taskscope.emit.records import _PLAIN_SCALARS  # noqa: PLC2701 - deferrable's types, for its copy in _fast_record

_WIDE_HANDLE = WideEventHandler.handle
_STOCK_LOGGERS: tuple[type, ...] = (logging.Logger, logging.RootLogger)  # FastPathLogger is added below
_FACTORIES = (logging.LogRecord, make_fast_record_factory())
_NO_FIELDS: Mapping[str, Any] = {}
_current_thread = threading.current_thread
_thread_clock = time.thread_time_ns
_getframe = sys._getframe  # noqa: SLF001
_STDLIB_MAKE_RECORD = context._stdlib_make_record  # noqa: SLF001
_CONTEXT_MAKE_RECORD = context._make_record_with_context  # noqa: SLF001
_bound_fields = context._fields  # noqa: SLF001
_STOCK_MAKE_RECORDS = context.STOCK_MAKE_RECORDS


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
        if body is not None and (has_nonfinite(args) or (extra and has_nonfinite(extra.values()))):
            body = None  # a NaN or an infinity, which the careful encoding writes by name
    except Exception:  # noqa: BLE001 - an odd frame or args: stdlib decides, the caller sees what it would
        return False
    for handler in receivers:
        if body is None or not handler.handle_body(body, extra):
            # the careful path: a value orjson refuses, or a field that overrides a stamp
            _write_carefully(handler, name, level, frame, msg, args, extra, message)
    return True


def _write_carefully(handler: WideEventHandler, name: str, level: int, frame: FrameType | None, msg: Any,
                     args: tuple, extra: Mapping[str, Any] | None, message: str) -> None:
    """Write one record through the handler's careful encoding (`handle_fields`)."""
    fn, lno, func = caller_of(frame)
    fields = record_fields(name, level, fn, lno, msg, args, None, func, None)
    fields.update(extra or _NO_FIELDS)
    handler.handle_fields(fields, message)


# ---- the routes of FastPathLogger records: which handlers a (logger, level) reaches ---------
# Walking the logger's parents and their handlers for each record (`wide_receivers`) costs
# about 1 µs, and more in a real program where that code is out of the caches. A FastPathLogger
# keeps the result per (logger, level), valid while `_routes_version` is the one it was made
# with; every change made through logging's API that could change a route (handlers added or
# removed, filters, handler and logger levels, `logging.disable`, a FastPathLogger's
# `propagate` or `handlers` set) makes a new version. The root logger's handlers, where most
# programs attach theirs, are counted at each record too, so that handlers put on its list by
# hand (`logging.root.handlers.append(...)`) are seen at once.

_ROUTES: dict[tuple[logging.Logger, int], tuple[object, list[WideEventHandler] | None, int]] = {}
_root = logging.root
_routes_version = object()
_ROUTES_LIMIT = 10_000


def routes_changed() -> None:
    """Forget every FastPathLogger's routes (the next record of each walks its handlers again).
    Called by logging's API wrapped here; call it after changing handlers by hand
    (`logger.handlers.append(...)`, `handler.level = ...`).

    >>> routes_changed()
    """
    global _routes_version
    _routes_version = object()


def _route(logger: logging.Logger, level: int) -> tuple[object, list[WideEventHandler] | None, int]:
    """Walk the handlers a record of `logger` at `level` reaches, and remember them (the version
    and root count read first: a change made during the walk leaves the route stale at once)."""
    version, root_handlers = _routes_version, len(_root.handlers)
    receivers = wide_receivers(logger, level)
    if receivers is None and _reaches_wide_subclass(logger):
        # a WideEventHandler subclass may switch to the plain `handle` at any record (as the
        # DFK's handler does once it knows the run id): walk again at each record until then
        return (None, None, -1)
    route = (version, receivers, root_handlers)
    if len(_ROUTES) >= _ROUTES_LIMIT:
        _ROUTES.clear()
    _ROUTES[(logger, level)] = route
    return route


def _reaches_wide_subclass(logger: logging.Logger) -> bool:
    """Whether a record of `logger` reaches a WideEventHandler of a subclass that overrides `handle`."""
    current: logging.Logger | None = logger
    while current:
        for handler in current.handlers:
            if isinstance(handler, WideEventHandler) and type(handler).handle is not _WIDE_HANDLE:
                return True
        current = current.parent if current.propagate else None
    return False


def _wrap_to_forget_routes(owner: type, name: str) -> None:
    method = getattr(owner, name)
    if getattr(method, "_forgets_routes", False):
        return

    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        finally:
            routes_changed()

    wrapper._forgets_routes = True  # type: ignore[attr-defined]
    setattr(owner, name, wrapper)


for _owner, _name in ((logging.Logger, "addHandler"), (logging.Logger, "removeHandler"),
                      (logging.Filterer, "addFilter"), (logging.Filterer, "removeFilter"),
                      (logging.Handler, "setLevel"), (logging.Manager, "_clear_cache")):
    _wrap_to_forget_routes(_owner, _name)


#: thread ident -> (Thread, process name, thread name, `thread_json`) for `_queue_record`, which
#: reads the names from the objects' attributes (the `name` properties are each a Python call)
_THREAD_PARTS: dict[int, tuple[threading.Thread, str | None, str, bytes]] = {}
_active_threads = threading._active  # noqa: SLF001 - what threading.current_thread() reads
_get_ident = threading.get_ident
_modules = sys.modules


def _thread_parts(ident: int) -> tuple[threading.Thread | None, Any, Any, bytes]:
    """The calling thread's entry of `_THREAD_PARTS`, made now (or, for a thread that threading
    did not start, its `thread_json` with a key that never validates)."""
    thread = _current_thread()
    encoded = thread_json(thread)
    if _active_threads.get(ident) is not thread or not isinstance(getattr(thread, "_name", None), str):
        return (None, _NEVER, _NEVER, encoded)
    process = _modules.get("multiprocessing.process")
    parts = (thread, process._current_process._name if process is not None else "MainProcess", thread._name, encoded)  # noqa: SLF001
    if len(_THREAD_PARTS) >= 10_000:
        _THREAD_PARTS.clear()
    _THREAD_PARTS[ident] = parts
    return parts


_NEVER = object()
os.register_at_fork(after_in_child=_THREAD_PARTS.clear)


def _fast_record(logger: logging.Logger, level: int, msg: Any, args: tuple, extra: Mapping[str, Any] | None,
                 depth: int) -> bool:
    """A FastPathLogger record (exc_info, stack_info and stacklevel left as by default) written
    without a LogRecord when only plain WideEventHandlers would receive it and stdlib's record
    making can be reproduced: queued as its parts for the writer to encode when `deferrable`,
    else encoded now (`log_fast`). False, having written nothing: stdlib must make it.
    `depth` is the frame, counted from this one, from which to look for the caller.

    The hot path, written out in one function: in a real program the logging code is out of the
    CPU's caches at each call, and every further Python call and lookup costs a miss."""
    make_record = logging.Logger.makeRecord
    if not (FAST_RECORDS_MATCH and not logger.filters
            and logging._logRecordFactory in _FACTORIES  # noqa: SLF001
            and logging.logThreads and logging.logProcesses and logging.logMultiprocessing
            and make_record in _STOCK_MAKE_RECORDS):
        return False
    if make_record is _CONTEXT_MAKE_RECORD:  # bound fields, as it adds them
        bound = _bound_fields.get()
        if bound:
            extra = {**bound, **extra} if extra else bound
    route = _ROUTES.get((logger, level))
    if route is None or route[0] is not _routes_version or route[2] != len(_root.handlers):
        route = _route(logger, level)
    receivers = route[1]
    if receivers is None or (extra and not STANDARD_ATTRIBUTES.isdisjoint(extra)):
        return False
    if not receivers:
        return True  # only NullHandlers listen
    srcfile = logging._srcfile  # noqa: SLF001
    frame: FrameType | None = None
    if srcfile:
        frame = _getframe(depth)  # the first frame from there that is not logging's (as findCaller)
        while frame is not None:
            filename = frame.f_code.co_filename
            if filename != srcfile and not ("importlib" in filename and "_bootstrap" in filename):
                break
            frame = frame.f_back
    deferred = DEFER_ENCODING and type(msg) is str
    if deferred:  # records.deferrable, written out
        for value in args:
            if type(value) not in _PLAIN_SCALARS and (type(value) is not float or value - value):
                deferred = False
                break
        if extra and deferred:
            for value in extra.values():
                if type(value) not in _PLAIN_SCALARS and (type(value) is not float or value - value):
                    deferred = False
                    break
    if not deferred:
        return log_fast(logger, level, msg, args, extra, frame)
    try:
        name = logger.name
        if frame is not None:
            code = frame.f_code
            cached = SITE_CACHE.get((name, level, id(code), frame.f_lasti))
            site = cached[1] if cached is not None and cached[0] is code else site_json(name, level, frame)
        else:
            site = site_json(name, level, None)
        ident = _get_ident()
        process = _modules.get("multiprocessing.process")
        process_name = process._current_process._name if process is not None else "MainProcess"  # noqa: SLF001
        parts = _THREAD_PARTS.get(ident)
        if (parts is None or parts[1] is not process_name or parts[0] is not _active_threads.get(ident)
                or parts[0]._name is not parts[2]):  # noqa: SLF001
            parts = _thread_parts(ident)
        thread = parts[3]
        ct = clock()
        task = task_name() if HAS_TASK_NAME else None
        # records.deferred_entry, written out
        entry = (site, thread, msg, args, ct, task, *extra, *extra.values()) if extra else (site, thread, msg, args, ct, task)
    except Exception:  # noqa: BLE001 - an odd frame or args: stdlib decides, the caller sees what it would
        return False
    for handler in receivers:
        if handler._closed or (extra and handler._encoder.keys and not handler._encoder.keys.isdisjoint(extra)):  # noqa: SLF001
            if not handler.handle_deferred(site, thread, msg, args, extra, ct, task):
                _write_carefully(handler, name, level, frame, msg, args, extra, formatted_message(msg, args))
            continue
        try:
            handler._queue.append(entry)  # noqa: SLF001 - atomic under the GIL
        except Exception:  # noqa: BLE001 - never into the caller
            handler.dropped_records += 1
            continue
        handler.fast_path_records += 1
        if handler._flusher is None:  # noqa: SLF001
            handler._start_flusher()  # noqa: SLF001
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
            _write_carefully(handler, name, level, frame, msg, args, extra, formatted_message(msg, args))
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


def _straight_to_fast_path(level: int, name: str) -> Callable[..., None]:
    """`logging.Logger.debug`/`info` (by `level`) taking the fast path from its own frame, and
    stdlib's `_log` (with the caller's place) for anything but `extra=`."""

    def log_at_level(self: logging.Logger, msg: Any, *args: Any, **kwargs: Any) -> None:
        if self.disabled:
            return
        try:
            enabled = self._cache[level]  # noqa: SLF001 - isEnabledFor's own cache, read as it reads it
        except KeyError:
            enabled = self.isEnabledFor(level)
        if not enabled:
            return
        cost = CALL_COST
        start = _thread_clock() if cost is not None else 0
        try:
            # _fast_record looks for the caller from frame 2: 0 is it, 1 this
            if (not kwargs or (len(kwargs) == 1 and "extra" in kwargs)) and _fast_record(
                    self, level, msg, args, kwargs.get("extra") if kwargs else None, 2):
                return
            # stdlib's own _log (not FastPathLogger's): its findCaller skips logging's frames, and this one
            kwargs["stacklevel"] = kwargs.get("stacklevel", 1) + 1
            logging.Logger._log(self, level, msg, args, **kwargs)  # noqa: SLF001
        finally:
            if cost is not None:
                cost[0] += _thread_clock() - start
                cost[1] += 1

    log_at_level.__name__ = name
    log_at_level.__qualname__ = f"FastPathLogger.{name}"
    log_at_level.__doc__ = f"Log `msg % args` at {logging.getLevelName(level)} (as `logging.Logger.{name}`)."
    return log_at_level


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
            # _fast_record looks for the caller from frame 3: 0 is it, 1 this, 2 debug/info/log...
            if (exc_info is None and not stack_info and stacklevel == 1
                    and _fast_record(self, level, msg, args, extra, 3)):
                return
            # stdlib's findCaller skips logging's frames, not this one: one more level
            super()._log(level, msg, args, exc_info, extra, stack_info, stacklevel + 1)
        finally:
            if cost is not None:
                cost[0] += _thread_clock() - start
                cost[1] += 1

    # debug and info (most of a program's records) go to the fast path straight from their own
    # frame: two Python calls fewer a record than through stdlib's debug, isEnabledFor and _log
    debug = _straight_to_fast_path(logging.DEBUG, "debug")
    info = _straight_to_fast_path(logging.INFO, "info")


def _watched(name: str) -> property:
    """A FastPathLogger attribute kept in the instance's dict whose setting forgets the routes."""

    def get(self: logging.Logger) -> Any:
        return self.__dict__[name]

    def set_(self: logging.Logger, value: Any) -> None:
        self.__dict__[name] = value
        routes_changed()

    return property(get, set_, doc=f"The stdlib Logger's `{name}`; setting it forgets the fast path's routes.")


FastPathLogger.propagate = _watched("propagate")  # type: ignore[assignment]
FastPathLogger.handlers = _watched("handlers")  # type: ignore[assignment]

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
    routes_changed()

    def restore() -> None:
        for logger in switched:
            if type(logger) is FastPathLogger:
                logger.__class__ = logging.Logger
        routes_changed()

    return restore
