"""Context for any Python code: fields bound for a block, and spans.

Fields live in a `contextvars.ContextVar`, so each thread and each asyncio task sees its own.
They reach every record logged inside `bind()`/`span()` as ordinary `extra` fields, whatever
handler writes the record: `bind` wraps `logging.Logger.makeRecord` once (the call's own `extra`
wins over bound fields; with nothing bound the wrapper costs one ContextVar lookup).
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import logging
import os
import sys
import time
from types import FrameType
from typing import Any, Callable, Mapping, NamedTuple, TypeVar

from taskscope.emit.records import STANDARD_ATTRIBUTES

_fields: contextvars.ContextVar[Mapping[str, Any] | None] = contextvars.ContextVar("taskscope_fields", default=None)
_SPAN_LOGGER = "taskscope.span"

F = TypeVar("F", bound=Callable[..., Any])


def current_fields() -> dict[str, Any]:
    """The fields bound in this thread / asyncio task right now.

    >>> with bind(run="r1"):
    ...     current_fields()
    {'run': 'r1'}
    """
    return dict(_fields.get() or {})


class bind:  # noqa: N801 - used like a function: `with bind(task_id=3):`
    """Add `fields` to every log record made inside the block (thread- and asyncio-safe).

    >>> import logging
    >>> with bind(run_id="r1", task_id=7):
    ...     logging.getLogger("app").info("working")   # the record has run_id and task_id
    """

    def __init__(self, **fields: Any) -> None:
        check_names(fields)
        _install_make_record()
        self.fields = fields
        self._tokens: list[contextvars.Token] = []

    def __enter__(self) -> dict[str, Any]:
        merged = {**(_fields.get() or {}), **self.fields}
        self._tokens.append(_fields.set(merged))
        return merged

    def __exit__(self, *exc: Any) -> None:
        _fields.reset(self._tokens.pop())

    async def __aenter__(self) -> dict[str, Any]:
        return self.__enter__()

    async def __aexit__(self, *exc: Any) -> None:
        self.__exit__(*exc)


class span:  # noqa: N801 - used like a function: `with span("stage"):`
    """Log `<name>.start` and `<name>.end` around a block, a function or a coroutine.

    Both records carry `span_id`, `parent_span_id` (the enclosing span's, if any) and `fields`;
    the end record adds `duration_s`, `outcome` ("ok" or "error") and `exception_type`. Records
    logged inside carry `span_id` too, so a reader can group them.

    Both records name (as `pathname`, `funcName`, `lineno`) the line of your code that opened the
    span: the `with` / `async with` statement, or the call of a decorated function. A decorated
    coroutine function is "called" where it is awaited; when the event loop runs it directly as
    a task (`asyncio.run(f())`, `create_task`, `gather`) no line of yours awaits it, so its
    records name the decorated function itself (its file, name and first line).

    >>> with span("stage_in", files=3):          # doctest: +SKIP
    ...     copy_inputs()                         # both records name the `with` line
    >>> @span("simulate")                         # doctest: +SKIP
    ... def simulate(x): ...
    >>> simulate(1)                               # doctest: +SKIP
    """

    def __init__(self, name: str, *, logger: logging.Logger | str | None = None, level: int = logging.INFO, **fields: Any):
        check_names(fields)
        _install_make_record()
        self.name = name
        self.logger = logger if isinstance(logger, logging.Logger) else logging.getLogger(logger or _SPAN_LOGGER)
        self.level = level
        self.fields = fields
        self._site: _Site | None = None  # set by the decorator: the call, not the wrapper
        self._stack: list[tuple[contextvars.Token, float, _Site]] = []

    def __enter__(self) -> str:
        return self._open(self._site or _site_of(sys._getframe(1)))

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        self._close(exc_type)

    async def __aenter__(self) -> str:
        # an awaited coroutine's caller frame is the coroutine awaiting it: the `async with` line
        return self._open(self._site or _site_of(sys._getframe(1)))

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        self._close(exc_type)

    def __call__(self, function: F) -> F:
        """Use as a decorator: each call of `function` is one span."""
        if inspect.iscoroutinefunction(function):

            @functools.wraps(function)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                with self._for_call(_awaiting_site(sys._getframe(), function)):
                    return await function(*args, **kwargs)

            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with self._for_call(_site_of(sys._getframe(1))):
                return function(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    def _for_call(self, site: _Site) -> span:
        """A fresh span for one call of a decorated function, whose records name `site`
        (concurrent calls in threads or tasks must not share one span's stack)."""
        fresh = span(self.name, logger=self.logger, level=self.level, **self.fields)
        fresh._site = site
        return fresh

    def _open(self, site: _Site) -> str:
        outer = _fields.get() or {}
        span_id = os.urandom(8).hex()
        inner = {**outer, **self.fields, "span_id": span_id, "parent_span_id": outer.get("span_id"), "span": self.name}
        token = _fields.set(inner)
        self._stack.append((token, time.perf_counter(), site))
        self._log(self.level, site, "start", {})
        return span_id

    def _close(self, exc_type: type[BaseException] | None) -> None:
        token, started, site = self._stack.pop()
        duration = time.perf_counter() - started
        self._log(
            self.level if exc_type is None else max(self.level, logging.ERROR),
            site,
            "end",
            {
                "duration_s": duration,
                "outcome": "ok" if exc_type is None else "error",
                "exception_type": None if exc_type is None else exc_type.__name__,
            },
        )
        _fields.reset(token)

    def _log(self, level: int, site: _Site, phase: str, extra: dict[str, Any]) -> None:
        """Log `<name>.<phase>` as made at `site`: what `Logger.log` does, with the caller given
        rather than found (no `stacklevel` fits every way a span is opened)."""
        if not self.logger.isEnabledFor(level):
            return
        record = self.logger.makeRecord(
            self.logger.name, level, site.pathname, site.lineno, f"%s.{phase}", (self.name,), None,
            site.funcName, {"event": f"{self.name}.{phase}", **extra},
        )
        self.logger.handle(record)


class _Site(NamedTuple):
    """A line of the caller's code, as a LogRecord names it."""

    pathname: str
    lineno: int
    funcName: str  # noqa: N815 - the LogRecord attribute


_UNKNOWN_SITE = _Site("(unknown file)", 0, "(unknown function)")  # what stdlib records when it looks no caller up
_AWAITING_CODE = inspect.CO_COROUTINE | inspect.CO_ASYNC_GENERATOR | inspect.CO_ITERABLE_COROUTINE


def _site_of(frame: FrameType) -> _Site:
    """Where `frame` is now (unknown when `logging._srcfile` is None: stdlib's switch for not
    looking callers up)."""
    if logging._srcfile is None:  # noqa: SLF001
        return _UNKNOWN_SITE
    return _Site(frame.f_code.co_filename, frame.f_lineno, frame.f_code.co_name)


def _awaiting_site(frame: FrameType, function: Callable[..., Any]) -> _Site:
    """Where the coroutine running in `frame` (a decorated `function`'s wrapper) is awaited; the
    decorated function itself when it runs as a task (its caller is then the event loop)."""
    caller = frame.f_back
    if caller is not None and caller.f_code.co_flags & _AWAITING_CODE:
        return _site_of(caller)
    code = getattr(inspect.unwrap(function), "__code__", None)
    if code is None or logging._srcfile is None:  # noqa: SLF001 - e.g. a partial: no first line to name
        return _site_of(caller or frame)
    return _Site(code.co_filename, code.co_firstlineno, code.co_name)


def check_names(fields: Mapping[str, Any]) -> None:
    """Refuse field names a LogRecord already has (stdlib would raise at the logging call instead).

    >>> check_names({"message": "x"})
    Traceback (most recent call last):
    ...
    ValueError: field names ['message'] are LogRecord attributes; choose other names
    """
    reserved = sorted(set(fields) & STANDARD_ATTRIBUTES)
    if reserved:
        raise ValueError(f"field names {reserved} are LogRecord attributes; choose other names")


_stdlib_make_record = logging.Logger.makeRecord
_make_record_below = _stdlib_make_record  # what the wrapper calls: whatever makeRecord was installed before it

#: the `Logger.makeRecord`s whose records the fast logger (taskscope.emit.logger) reproduces exactly
STOCK_MAKE_RECORDS: set[Callable[..., logging.LogRecord]] = {_stdlib_make_record}


def _make_record_with_context(self, name, level, fn, lno, msg, args, exc_info, func=None, extra=None, sinfo=None):
    fields = _fields.get()
    if fields:
        extra = fields if not extra else {**fields, **extra}
    return _make_record_below(self, name, level, fn, lno, msg, args, exc_info, func, extra, sinfo)


def _install_make_record() -> None:
    """Make `Logger.makeRecord` add the bound fields (once per interpreter)."""
    global _make_record_below
    current = logging.Logger.makeRecord
    if current is _make_record_with_context:
        return
    _make_record_below = current
    functools.update_wrapper(_make_record_with_context, current)
    if current is _stdlib_make_record:
        STOCK_MAKE_RECORDS.add(_make_record_with_context)
    logging.Logger.makeRecord = _make_record_with_context  # type: ignore[method-assign]
