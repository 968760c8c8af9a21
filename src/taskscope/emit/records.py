"""Turning a `logging.LogRecord` into one wide event (a JSON object), and making records fast.

The event keeps what a reader needs to filter and join: time, level, logger, where in the code,
which process and thread, the message template and its arguments, the formatted message,
exception text, every `extra` field under its own name, and the process stamps. Key names are the
store's column names where one exists, so ingest needs no guessing.
"""

from __future__ import annotations

import logging
import os
import threading
import traceback
from typing import Any, Callable

import orjson

#: attributes every LogRecord has (and `message`/`asctime`, which formatters add); anything else is an `extra`
STANDARD_ATTRIBUTES = frozenset(
    vars(logging.LogRecord("n", logging.INFO, "p", 1, "m", None, None, "f", None))
) | {"message", "asctime", "taskName"}

_JSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS | orjson.OPT_APPEND_NEWLINE


def _safe_repr(value: Any) -> str:
    try:
        return repr(value)
    except Exception as exc:  # noqa: BLE001
        return f"<unrepresentable {type(value).__name__}: {exc!r}>"


def formatted_message(record: logging.LogRecord, args: Any) -> str:
    """The record's message with `args` applied; a bad `%` format gives a note, never an exception."""
    msg = record.msg if type(record.msg) is str else _safe_repr(record.msg)
    if not args:
        return msg
    try:
        return msg % args
    except Exception as exc:  # noqa: BLE001 - logging must never raise into anyone
        return f"{msg} [taskscope: formatting failed: {type(exc).__name__}: {exc}; args={_safe_repr(args)}]"


class RecordEncoder:
    """Writes records as JSON lines, each opening with the same `stamps`.

    Keys are the LogRecord attribute names (`created`, `name`, `levelname`, `msg`, `args`,
    `lineno`, `funcName`, `process`, `threadName`, ..., as Parsl's JSONLogging uses) plus
    `message`, `exc_type`/`exc_text` and every `extra` under its own name; a record field with a
    stamp's name wins over the stamp.

    >>> encoder = RecordEncoder({"host": "h1"})
    >>> record = logging.LogRecord("app", logging.INFO, "/x.py", 3, "took %d s", (4,), None, "f")
    >>> orjson.loads(encoder.line(record))["message"]
    'took 4 s'
    """

    def __init__(self, stamps: dict[str, Any]) -> None:
        self.stamps = dict(stamps)
        self.keys = frozenset(self.stamps)
        self.prefix = (orjson.dumps(self.stamps, default=_safe_repr, option=orjson.OPT_NON_STR_KEYS)[:-1] + b","
                       if self.stamps else b"{")

    def line(self, record: logging.LogRecord) -> bytes:
        """One JSON line (with its newline). Never raises."""
        fields = record.__dict__
        message = formatted_message(record, record.args)
        if fields["exc_info"] is None and fields.keys().isdisjoint(self.keys):
            # the common record, serialized straight from its __dict__ and joined to the
            # pre-serialized stamps: half the cost of building a new dict per record
            try:
                body = orjson.dumps(fields, default=_safe_repr, option=_JSON_OPTIONS)
                return b"".join((self.prefix, b'"message":', orjson.dumps(message), b",", body[1:]))
            except Exception:  # noqa: BLE001 - an int beyond 64 bits, odd keys...: the careful path
                pass
        return dumps_event(event_of(record, message, self.stamps))


def event_of(record: logging.LogRecord, message: str, stamps: dict[str, Any]) -> dict[str, Any]:
    """The record as a dict with the same keys as `dumps_record` writes (the careful path)."""
    event = {**stamps, "message": message}
    for key, value in record.__dict__.items():
        event[key] = value
    event["msg"] = record.msg if type(record.msg) is str else _safe_repr(record.msg)
    exc_info = event.pop("exc_info", None)
    if exc_info and exc_info[0] is not None:
        event["exc_type"] = exc_info[0].__name__
        event["exc_text"] = "".join(traceback.format_exception(*exc_info)).rstrip("\n")
    return event


def dumps_event(event: dict[str, Any]) -> bytes:
    """One JSON line (with its newline). Unserializable values become their repr; never raises."""
    try:
        return orjson.dumps(event, default=_safe_repr, option=_JSON_OPTIONS)
    except Exception:  # noqa: BLE001 - e.g. an int beyond 64 bits, a dict with odd keys: go value by value
        safe = {str(key): _json_safe(value) for key, value in event.items()}
        return orjson.dumps(safe, default=_safe_repr, option=_JSON_OPTIONS)


def _json_safe(value: Any) -> Any:
    if type(value) is int and not -(2**63) <= value < 2**64:
        return str(value)
    try:
        return orjson.Fragment(orjson.dumps(value, default=_safe_repr, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS))
    except Exception:  # noqa: BLE001
        return _safe_repr(value)


# ---- a faster LogRecord factory --------------------------------------------------------------
# LogRecord.__init__ costs ~2.5 µs: it splits the path on every call, looks up the thread and
# the multiprocessing process name, and computes msecs/relativeCreated with float maths. The
# factory below makes the same attributes (checked against a real LogRecord before it is
# installed) with the path split cached per file, in about a third of the time. It is written by
# hand because the stdlib offers no cheaper constructor.

_new_record = logging.LogRecord.__new__
_split_cache: dict[str, tuple[str, str]] = {}


def _split_path(pathname: str) -> tuple[str, str]:
    try:
        return _split_cache[pathname]
    except KeyError:
        try:
            filename = os.path.basename(pathname)
            module = os.path.splitext(filename)[0]
        except (TypeError, ValueError, AttributeError):
            filename, module = pathname, "Unknown module"
        _split_cache[pathname] = (filename, module)
        return filename, module


def _process_name() -> str | None:
    import sys

    mp = sys.modules.get("multiprocessing")
    if mp is None:
        return "MainProcess"
    try:
        return mp.current_process().name
    except Exception:  # noqa: BLE001 - as LogRecord.__init__ does
        return None


def make_fast_record_factory() -> Callable[..., logging.LogRecord] | None:
    """A LogRecord factory equivalent to the stdlib one but faster, or None where it would differ.

    >>> factory = make_fast_record_factory()
    >>> factory("app", 20, "/x.py", 1, "hi", (), None).getMessage()  # doctest: +SKIP
    'hi'
    """
    from time import time_ns

    level_names = logging._levelToName  # noqa: SLF001 - the table getLevelName reads
    start_ns = int(logging._startTime * 1e9)  # noqa: SLF001
    current_thread = threading.current_thread
    getpid = os.getpid
    log_threads, log_processes, log_mp = logging.logThreads, logging.logProcesses, logging.logMultiprocessing

    def fast_record(name, level, fn, lno, msg, args, exc_info, func=None, sinfo=None, **kwargs):
        if kwargs or not (log_threads and log_processes and log_mp):
            return logging.LogRecord(name, level, fn, lno, msg, args, exc_info, func, sinfo, **kwargs)
        record = _new_record(logging.LogRecord)
        ct = time_ns()
        if args and len(args) == 1 and isinstance(args[0], dict) and args[0]:
            args = args[0]
        filename, module = _split_path(fn)
        thread = current_thread()
        record.__dict__.update(
            name=name, msg=msg, args=args, levelname=level_names.get(level) or f"Level {level}", levelno=level,
            pathname=fn, filename=filename, module=module, exc_info=exc_info, exc_text=None, stack_info=sinfo,
            lineno=lno, funcName=func, created=ct / 1e9,
            msecs=float(ct % 1_000_000_000 // 1_000_000) + 0.0, relativeCreated=(ct - start_ns) / 1e6,
            thread=thread.ident, threadName=thread.name, processName=_process_name(), process=getpid(),
        )
        return record

    reference = vars(logging.LogRecord("n", logging.INFO, "/p/x.py", 1, "m", (), None, "f", None))
    candidate = vars(fast_record("n", logging.INFO, "/p/x.py", 1, "m", (), None, "f", None))
    # a Python version whose LogRecord has other attributes (3.12 adds taskName) keeps the stdlib one
    return fast_record if list(reference) == list(candidate) else None
