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
import time
from typing import Any, Callable, Mapping, TypeVar

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

    >>> with span("stage_in", files=3):          # doctest: +SKIP
    ...     copy_inputs()
    >>> @span("simulate")                         # doctest: +SKIP
    ... def simulate(x): ...
    """

    def __init__(self, name: str, *, logger: logging.Logger | str | None = None, level: int = logging.INFO, **fields: Any):
        check_names(fields)
        _install_make_record()
        self.name = name
        self.logger = logger if isinstance(logger, logging.Logger) else logging.getLogger(logger or _SPAN_LOGGER)
        self.level = level
        self.fields = fields
        self._stack: list[tuple[contextvars.Token, str, float]] = []

    def __enter__(self) -> str:
        outer = _fields.get() or {}
        span_id = os.urandom(8).hex()
        inner = {**outer, **self.fields, "span_id": span_id, "parent_span_id": outer.get("span_id"), "span": self.name}
        token = _fields.set(inner)
        self._stack.append((token, span_id, time.perf_counter()))
        self.logger.log(self.level, "%s.start", self.name, extra={"event": f"{self.name}.start"}, stacklevel=2)
        return span_id

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        token, _span_id, started = self._stack.pop()
        duration = time.perf_counter() - started
        self.logger.log(
            self.level if exc_type is None else max(self.level, logging.ERROR),
            "%s.end",
            self.name,
            extra={
                "event": f"{self.name}.end",
                "duration_s": duration,
                "outcome": "ok" if exc_type is None else "error",
                "exception_type": None if exc_type is None else exc_type.__name__,
            },
            stacklevel=2,
        )
        _fields.reset(token)

    async def __aenter__(self) -> str:
        return self.__enter__()

    async def __aexit__(self, *exc: Any) -> None:
        self.__exit__(*exc)

    def __call__(self, function: F) -> F:
        """Use as a decorator: each call of `function` is one span."""
        if inspect.iscoroutinefunction(function):

            @functools.wraps(function)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                async with span(self.name, logger=self.logger, level=self.level, **self.fields):
                    return await function(*args, **kwargs)

            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with span(self.name, logger=self.logger, level=self.level, **self.fields):
                return function(*args, **kwargs)

        return wrapper  # type: ignore[return-value]


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
