"""Turning a `logging.LogRecord` into one wide event (a JSON object), and making records fast.

The event keeps what a reader needs to filter and join: time, level, logger, where in the code,
which process and thread, the message template and its arguments, the formatted message,
exception text, every `extra` field under its own name, and the process stamps. Key names are the
store's column names where one exists, so ingest needs no guessing.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import traceback
from collections.abc import Iterable, Mapping
from itertools import islice
from time import time, time_ns
from types import FrameType
from typing import Any, Callable

import orjson

from taskscope.constants import MAX_LINE_BYTES

#: attributes every LogRecord has (and `message`/`asctime`, which formatters add); anything else is an `extra`
STANDARD_ATTRIBUTES = frozenset(
    vars(logging.LogRecord("n", logging.INFO, "p", 1, "m", None, None, "f", None))
) | {"message", "asctime", "taskName"}

#: how many attributes LogRecord.__init__ sets: the keys of a record's `__dict__` after them are its extras
_RECORD_KEYS = len(vars(logging.LogRecord("n", logging.INFO, "p", 1, "m", None, None, "f", None)))

#: a record longer than MAX_LINE_BYTES (ingest would keep it aside) has its texts longer than this cut
CUT_CHARS = 64 * 1024

#: how a NaN or infinite float is written (JSON has no such number and orjson writes `null`): as
#: JavaScript and DuckDB name them, so that `TRY_CAST(attrs->>'loss' AS DOUBLE)` reads them back
NONFINITE_NAMES = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}

_JSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS | orjson.OPT_APPEND_NEWLINE
_OPT_APPEND_NEWLINE = orjson.OPT_APPEND_NEWLINE
_dumps = orjson.dumps


def _safe_repr(value: Any) -> str:
    try:
        return repr(value)
    except Exception as exc:  # noqa: BLE001
        return f"<unrepresentable {type(value).__name__}: {exc!r}>"


def _safe_str(value: Any) -> str:
    try:
        return str(value)
    except Exception:  # noqa: BLE001
        return _safe_repr(value)


def formatted_message(msg: Any, args: Any) -> str:
    """`msg % args` as a LogRecord's getMessage makes it (`str(msg)` for a message that is not a
    string, so `log.error(exc)` reads as the exception's text); a bad `%` format gives a note,
    never an exception.

    >>> formatted_message("two %d %d", (1,))
    'two %d %d [taskscope: formatting failed: TypeError: not enough arguments for format string; args=(1,)]'
    >>> formatted_message(ValueError("bad thing"), ())
    'bad thing'
    """
    msg = msg if type(msg) is str else _safe_str(msg)
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
        """One JSON line (with its newline) for a LogRecord. Never raises."""
        return self.encode(record.__dict__, formatted_message(record.msg, record.args))

    def encode(self, fields: dict[str, Any], message: str) -> bytes:
        """One JSON line for a record's attributes `fields` (a LogRecord's `__dict__`, or the same
        keys made without a LogRecord) and its formatted `message`, cut to MAX_LINE_BYTES.
        Never raises."""
        line = self._encode(fields, message)
        return line if len(line) <= MAX_LINE_BYTES else self._cut(fields, message, len(line))

    def _cut(self, fields: dict[str, Any], message: str, size: int) -> bytes:
        """The record with its biggest values cut, biggest first, until it fits a line: each cut
        value ends with a note (a value that is not a string becomes its JSON text, cut; the
        arguments, which the message repeats, are left out), and every other field (the ids,
        the stamps, the small extras) stays whole."""
        note = f" [taskscope: cut to fit a line; the record was {size:,} bytes]"
        event = event_of(fields, message, self.stamps)
        sizes = {key: _encoded_size(value) for key, value in event.items()}
        total = size
        for limit in (CUT_CHARS, 4096, 256):
            for key in sorted(sizes, key=sizes.__getitem__, reverse=True):
                if total <= MAX_LINE_BYTES or sizes[key] <= limit + len(note):
                    break  # it fits, or the values left are small
                if key == "args":
                    del event[key]
                    total -= sizes.pop(key) + len(key) + 4
                    continue
                event[key] = _cut_value(event[key], limit, note)
                cut_size = _encoded_size(event[key])
                total += cut_size - sizes[key]
                sizes[key] = cut_size
            if total <= MAX_LINE_BYTES:
                line = dumps_event(event)
                if len(line) <= MAX_LINE_BYTES:
                    return line
                total = len(line)
        # thousands of fields: the stamps, the record's time, level, logger and cut message, then
        # whatever small fields still fit
        kept = {**self.stamps, **{key: event.get(key) for key in ("created", "levelname", "name", "process", "threadName")},
                "message": _cut_value(message, 256, note)}
        room = MAX_LINE_BYTES - len(dumps_event(kept))
        for key, value in event.items():
            if key not in kept and sizes.get(key, room) + len(key) + 4 < room:
                kept[key] = value
                room -= sizes[key] + len(key) + 4
        return dumps_event(kept)

    def _encode(self, fields: dict[str, Any], message: str) -> bytes:
        if fields["exc_info"] is None and fields.keys().isdisjoint(self.keys) and not _nonfinite_in_record(fields):
            # the common record, serialized straight from its attributes and joined to the
            # pre-serialized stamps: half the cost of building a new dict per record
            try:
                body = _dumps_plain_first(fields)
                return b"".join((self.prefix, b'"message":', orjson.dumps(message), b",", body[1:]))
            except Exception:  # noqa: BLE001 - an int beyond 64 bits, odd keys...: the careful path
                pass
        return dumps_event(event_of(fields, message, self.stamps))


def _dumps_plain_first(fields: dict[str, Any]) -> bytes:
    # orjson's options for keys that are not strings and for numpy values, and a `default`,
    # cost ~0.5 µs a call: most records need none of them, so they are used only when the plain
    # encoding refuses (orjson's error is a TypeError); raises what the careful encoding raises
    try:
        return _dumps(fields, option=_OPT_APPEND_NEWLINE)
    except TypeError:
        return _dumps(fields, default=_safe_repr, option=_JSON_OPTIONS)


def event_of(fields: dict[str, Any], message: str, stamps: dict[str, Any]) -> dict[str, Any]:
    """A record's attributes as one event dict with the same keys as `RecordEncoder.encode` writes
    (the careful path)."""
    event = {**stamps, "message": message}
    event.update(fields)
    msg = fields["msg"]
    event["msg"] = msg if type(msg) is str else _safe_repr(msg)
    exc_info = event.pop("exc_info", None)
    if exc_info and exc_info[0] is not None:
        event["exc_type"] = exc_info[0].__name__
        event["exc_text"] = "".join(traceback.format_exception(*exc_info)).rstrip("\n")
    return event


def has_nonfinite(values: Iterable[Any]) -> bool:
    """Whether any of `values` is a NaN or infinite float.

    >>> has_nonfinite([1.5, "x"]), has_nonfinite([float("nan")])
    (False, True)
    """
    for value in values:
        if type(value) is float and value - value:  # x - x is 0.0, but NaN for NaN and the infinities
            return True
    return False


def _nonfinite_in_record(fields: dict[str, Any]) -> bool:
    """Whether a record's arguments or extras (the keys after LogRecord's own) hold a NaN or
    infinite float (`has_nonfinite`, written out: every stdlib-path record pays for it)."""
    args = fields["args"]
    if type(args) is tuple:
        for value in args:
            if type(value) is float and value - value:
                return True
    elif args and isinstance(args, Mapping) and has_nonfinite(args.values()):
        return True
    extras = len(fields) - _RECORD_KEYS
    if extras > 0:
        for value in islice(reversed(fields.values()), extras):
            if type(value) is float and value - value:
                return True
    return False


def _finite(value: Any) -> Any:
    """A NaN or infinite float as its name (NONFINITE_NAMES); any other value as it is."""
    return NONFINITE_NAMES[repr(value)] if type(value) is float and value - value else value


def _with_finite_floats(event: dict[str, Any]) -> dict[str, Any]:
    """`event` with its NaN and infinite floats, and those among its arguments, written as names."""
    args = event.get("args")
    if type(args) is tuple and has_nonfinite(args):
        event = {**event, "args": tuple(_finite(value) for value in args)}
    elif isinstance(args, Mapping) and has_nonfinite(args.values()):
        event = {**event, "args": {key: _finite(value) for key, value in args.items()}}
    if has_nonfinite(event.values()):
        return {key: _finite(value) for key, value in event.items()}
    return event


def dumps_event(event: dict[str, Any]) -> bytes:
    """One JSON line (with its newline). Unserializable values become their repr, NaN and the
    infinities their names; never raises."""
    event = _with_finite_floats(event)
    try:
        return orjson.dumps(event, default=_safe_repr, option=_JSON_OPTIONS)
    except Exception:  # noqa: BLE001 - e.g. an int beyond 64 bits, a dict with odd keys: go value by value
        safe = {_without_surrogates(str(key)): _json_safe(value) for key, value in event.items()}
        return orjson.dumps(safe, default=_safe_repr, option=_JSON_OPTIONS)


def _encoded_size(value: Any) -> int:
    """The bytes of `value` in a line (never raises)."""
    return len(dumps_event({"": value})) - 6  # without `{"":` and `}\n`


def _cut_value(value: Any, chars: int, note: str) -> str:
    """`value` (its JSON text if not a string) cut to `chars` characters, with `note` after."""
    text = value if isinstance(value, str) else dumps_event({"": value})[4:-2].decode("utf-8", "replace")
    return text[:chars] + note if len(text) > chars else text


def _json_safe(value: Any) -> Any:
    if type(value) is int and not -(2**63) <= value < 2**64:
        return str(value)
    try:
        return orjson.Fragment(orjson.dumps(value, default=_safe_repr, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS))
    except Exception:  # noqa: BLE001
        pass
    cleaned = _without_surrogates(value)
    if cleaned is not value:  # text with a lone surrogate (orjson writes only valid UTF-8): the rest of it kept
        try:
            return orjson.Fragment(orjson.dumps(cleaned, default=_safe_repr,
                                                option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS))
        except Exception:  # noqa: BLE001
            pass
    return _safe_repr(value)


def _without_surrogates(value: Any, depth: int = 0) -> Any:
    """`value` with each lone surrogate in its text (in lists, tuples and dicts too) replaced by
    U+FFFD, a pair of surrogates joined into its character; `value` itself when it has none.

    >>> _without_surrogates("loss \\ud800 high")
    'loss \ufffd high'
    """
    if isinstance(value, str):
        try:
            value.encode("utf-8")
            return value
        except UnicodeEncodeError:
            return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    if depth > 20:
        return value
    if isinstance(value, (list, tuple)):
        cleaned = [_without_surrogates(item, depth + 1) for item in value]
        return value if all(a is b for a, b in zip(cleaned, value)) else cleaned
    if isinstance(value, dict):
        pairs = [(_without_surrogates(key, depth + 1), _without_surrogates(item, depth + 1)) for key, item in value.items()]
        if all(k is key and v is item for (k, v), (key, item) in zip(pairs, value.items())):
            return value
        return dict(pairs)
    return value


# ---- LogRecord attributes, made fast -------------------------------------------------------
# LogRecord.__init__ costs ~2.5 µs: it splits the path on every call, looks up the thread and
# the multiprocessing process name, and computes msecs/relativeCreated with float maths.
# `record_fields` makes the same attributes, in the same order, with the path split cached per
# file, in about a third of the time. It serves the fast LogRecord factory and the fast logger
# (taskscope.emit.logger), which encodes these attributes without making a LogRecord at all.
# It is written by hand because the stdlib offers no cheaper constructor; what differs between
# Python versions is followed here, each checked against the running interpreter's LogRecord
# (`FAST_RECORDS_MATCH` at import, and tests/test_fast_logger.py for the times):
# - the clock: up to 3.12 `time.time()` seconds, from 3.13 `time.time_ns()` (`logging._startTime`
#   is then an int of nanoseconds), with msecs computed from the integer (`record_times`);
# - 3.12 added `taskName`, the running asyncio task's name (`task_name`).

_new_record = logging.LogRecord.__new__
_split_cache: dict[str, tuple[str, str]] = {}
_level_names = logging._levelToName  # noqa: SLF001 - the table getLevelName reads
_start_time = logging._startTime  # noqa: SLF001 - relativeCreated counts from it
_current_thread = threading.current_thread
_getpid = os.getpid

#: whether this Python's LogRecord reads the clock in integer nanoseconds (3.13 and later)
CLOCK_IN_NS = type(_start_time) is int
#: the clock LogRecord reads
clock: Callable[[], int | float] = time_ns if CLOCK_IN_NS else time
#: whether this Python's LogRecord has `taskName` (3.12 and later)
HAS_TASK_NAME = hasattr(logging, "logAsyncioTasks")


def record_times(ct: int | float) -> tuple[float, float, float]:
    """(`created`, `msecs`, `relativeCreated`) as this Python's LogRecord computes them from a
    reading `ct` of `clock`.

    >>> created, msecs, _ = record_times(clock())
    >>> 0 <= msecs < 1000 and created > 1.6e9
    True
    """
    if CLOCK_IN_NS:
        created = ct / 1e9
        msecs = (ct % 1_000_000_000) // 1_000_000 + 0.0
        if msecs == 999.0 and int(created) != ct // 1_000_000_000:
            msecs = 0.0  # the float seconds rounded up to the next second (as 3.13 corrects it)
        return created, msecs, (ct - _start_time) / 1e6
    return ct, int((ct - int(ct)) * 1000) + 0.0, (ct - _start_time) * 1000


def task_name() -> str | None:
    """The running asyncio task's name, as LogRecord's `taskName` (3.12+): None outside a task,
    where `logging.logAsyncioTasks` is false, or where asyncio was never imported.

    >>> task_name() is None
    True
    """
    if not HAS_TASK_NAME or not logging.logAsyncioTasks:
        return None
    asyncio = sys.modules.get("asyncio")
    if asyncio is None:
        return None
    try:
        # without a running loop current_task() raises (stdlib then writes None): asking
        # first costs ~70 ns where raising and catching costs ~300 ns
        if asyncio._get_running_loop() is None:  # noqa: SLF001 - asyncio's public low-level API
            return None
        return asyncio.current_task().get_name()
    except Exception:  # noqa: BLE001 - as LogRecord.__init__ does
        return None


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
    mp = sys.modules.get("multiprocessing")
    if mp is None:
        return "MainProcess"
    try:
        return mp.current_process().name
    except Exception:  # noqa: BLE001 - as LogRecord.__init__ does
        return None


def record_fields(name: str, level: int, fn: str, lno: int, msg: Any, args: Any, exc_info: Any,
                  func: str | None = None, sinfo: str | None = None) -> dict[str, Any]:
    """The attributes a `logging.LogRecord(...)` with these arguments would have, in its order.

    Only valid where `FAST_RECORDS_MATCH` is true (checked at import against a real LogRecord).

    >>> record_fields("app", 20, "/src/app.py", 3, "took %d s", (4,), None, "main")["module"]
    'app'
    """
    created, msecs, relative = record_times(clock())
    if args and len(args) == 1 and isinstance(args[0], Mapping) and args[0]:
        args = args[0]
    filename, module = _split_path(fn)
    thread = _current_thread()
    fields = {
        "name": name, "msg": msg, "args": args, "levelname": _level_names.get(level) or f"Level {level}",
        "levelno": level, "pathname": fn, "filename": filename, "module": module, "exc_info": exc_info,
        "exc_text": None, "stack_info": sinfo, "lineno": lno, "funcName": func, "created": created,
        "msecs": msecs, "relativeCreated": relative,
        "thread": thread.ident, "threadName": thread.name, "processName": _process_name(), "process": _getpid(),
    }
    if HAS_TASK_NAME:
        fields["taskName"] = task_name()
    return fields


# ---- the fast logger's records: a call site's constant part, pre-encoded, and the moment's part --
# taskscope.emit.logger writes the same keys and values as `record_fields` + `RecordEncoder.encode`,
# but a call site's constant attributes (logger, level, file, line, function) are encoded once,
# and only what changes per call goes through a dict and orjson.

_pid = os.getpid()
SITE_CACHE: dict[tuple, tuple[Any, bytes]] = {}  # (logger, level, id(code), offset) -> (code, site_json)
_SITE_CACHE_LIMIT = 50_000  # call sites; a program making more (generated code) re-encodes
#: call sites (their `site_json`) whose values needed orjson's careful options (an object that is
#: not JSON, a key that is not a string): their records skip the plain attempt (a raise costs ~1 µs)
_CAREFUL_SITES: set[bytes] = set()
_NOW = object()  # encode_moment's default `task`: read the asyncio task now


THREAD_CACHE: dict[int, tuple[str, str | None, bytes]] = {}  # thread ident -> (name, process name, thread_json)


def _new_pid_after_fork() -> None:
    global _pid
    _pid = os.getpid()
    THREAD_CACHE.clear()


os.register_at_fork(after_in_child=_new_pid_after_fork)


def site_json(name: str, level: int, frame: FrameType | None) -> bytes:
    """The record attributes fixed by the call site (`frame` is the caller's; None: unknown, as
    stdlib writes when `logging._srcfile` is None), as JSON object members with a trailing comma.

    Cached by (logger, level, code object, instruction offset): `frame.f_lineno` scans the code's
    line table, which costs ~2 µs in a long function, so it is read only when a site is new.

    >>> site_json("app", 20, None)[:40]
    b'"name":"app","levelname":"INFO","levelno'
    """
    code = frame.f_code if frame is not None else None
    key = (name, level, id(code), frame.f_lasti if frame is not None else -1)
    entry = SITE_CACHE.get(key)
    if entry is not None and entry[0] is code:  # the entry holds `code`, so its id cannot be reused meanwhile
        return entry[1]
    fn, lno, func = caller_of(frame)
    filename, module = _split_path(fn)
    site = {"name": name, "levelname": _level_names.get(level) or f"Level {level}", "levelno": level,
            "pathname": fn, "filename": filename, "module": module, "exc_info": None, "exc_text": None,
            "stack_info": None, "lineno": lno, "funcName": func}
    encoded = orjson.dumps(site, default=_safe_repr)[1:-1] + b","
    if len(SITE_CACHE) >= _SITE_CACHE_LIMIT:
        SITE_CACHE.clear()
    SITE_CACHE[key] = (code, encoded)
    return encoded


def caller_of(frame: FrameType | None) -> tuple[str, int, str]:
    """(file, line, function) of `frame` as stdlib's findCaller gives them; None: stdlib's unknown caller.

    >>> caller_of(None)
    ('(unknown file)', 0, '(unknown function)')
    """
    if frame is None:
        return "(unknown file)", 0, "(unknown function)"
    return frame.f_code.co_filename, frame.f_lineno, frame.f_code.co_name


def thread_json(thread: threading.Thread) -> bytes:
    """The record attributes fixed by the calling thread and process (`thread`, `threadName`,
    `processName`, `process`) as JSON object members with a trailing comma.

    Cached per thread; the entry is used only while the thread's name and the process name are
    the ones it was made with (stdlib reads both per record, and either can be renamed), and the
    cache is emptied in a forked child (a new pid).

    >>> thread_json(threading.current_thread()).startswith(b'"thread":')
    True
    """
    process_name = _process_name()
    name = thread.name
    entry = THREAD_CACHE.get(thread.ident)
    if entry is not None and entry[0] == name and entry[1] == process_name:
        return entry[2]
    encoded = orjson.dumps({"thread": thread.ident, "threadName": name, "processName": process_name,
                            "process": _pid}, default=_safe_repr)[1:-1] + b","
    if len(THREAD_CACHE) >= _SITE_CACHE_LIMIT:
        THREAD_CACHE.clear()
    THREAD_CACHE[thread.ident] = (name, process_name, encoded)
    return encoded


def encode_moment(site: bytes, thread: bytes, msg: Any, args: Any, extra: Mapping[str, Any] | None,
                  ct: int | float | None = None, task: Any = _NOW) -> tuple[bytes | None, str]:
    """A line without its stamps (`RecordEncoder.prefix + line` is the line) and the formatted
    message. The line is None when a value needs the careful path (`RecordEncoder.encode`).

    `site` and `thread` are `site_json`'s and `thread_json`'s; what changes per call (the
    formatted `message`, the template and arguments, the time and, from 3.12, the asyncio task:
    the attributes LogRecord would give) and the `extra` fields (which must not name a
    LogRecord attribute) go through one dict, started from `extra` (merging later costs a
    resize), and one orjson call.

    >>> line, message = encode_moment(b'"name":"app",', b'"process":1,', "took %(s)d s", ({"s": 4},), {"task_id": 7})
    >>> message, orjson.loads(b"{" + line)["args"]
    ('took 4 s', {'s': 4})

    `ct` (a reading of `clock`) and `task` (the asyncio task's name) are the call's, when the
    record is encoded later (`encode_deferred`); by default they are read now.
    """
    if ct is None:
        ct = clock()
    if args and len(args) == 1 and isinstance(args[0], Mapping) and args[0]:
        args = args[0]
    moment = dict(extra) if extra else {}
    moment["message"] = message = formatted_message(msg, args)
    moment["msg"] = msg
    moment["args"] = args
    # record_times(ct), inlined: a call costs ~0.1 µs, 3% of this path (tests compare both with LogRecord)
    if CLOCK_IN_NS:
        moment["created"] = created = ct / 1e9
        msecs = (ct % 1_000_000_000) // 1_000_000 + 0.0
        moment["msecs"] = 0.0 if msecs == 999.0 and int(created) != ct // 1_000_000_000 else msecs
        moment["relativeCreated"] = (ct - _start_time) / 1e6
    else:
        moment["created"] = ct
        moment["msecs"] = int((ct - int(ct)) * 1000) + 0.0
        moment["relativeCreated"] = (ct - _start_time) * 1000
    if HAS_TASK_NAME:
        moment["taskName"] = task_name() if task is _NOW else task
    try:
        if site in _CAREFUL_SITES:  # this call site's values needed the careful options before
            encoded = _dumps(moment, default=_safe_repr, option=_JSON_OPTIONS)
        else:
            try:
                encoded = _dumps(moment, option=_OPT_APPEND_NEWLINE)
            except TypeError:
                encoded = _dumps(moment, default=_safe_repr, option=_JSON_OPTIONS)
                if len(_CAREFUL_SITES) < _SITE_CACHE_LIMIT:
                    _CAREFUL_SITES.add(site)
    except Exception:  # noqa: BLE001 - an int beyond 64 bits, a lone surrogate...
        return None, message
    return site + thread + encoded[1:], message


# ---- deferred records: queued as their parts, encoded by the handler's writer ---------------
# A record whose arguments and extra values are all immutable scalars (str, int, float, bool,
# None) encodes later to exactly the line it would give now: the caller queues its parts (the
# call site's and thread's pre-encoded JSON, template, arguments, time) and the writer formats
# and encodes a whole batch at each flush, with the code hot in the cache, off the caller's thread.

#: the immutable scalars but floats, which are deferrable when finite (a NaN or an infinity is
#: written by name, which the careful encoding does): checked as `type(v) not in _PLAIN_SCALARS and
#: (type(v) is not float or v - v)`, which costs a value of another type one set look-up, as before
_PLAIN_SCALARS = frozenset((str, int, bool, type(None)))


def deferrable(msg: Any, args: tuple, extra: Mapping[str, Any] | None) -> bool:
    """Whether a record can be encoded later with the same result: a `str` template, and
    arguments and extra values that are all immutable scalars (floats finite).

    >>> deferrable("task %d on %s", (3, "htex"), {"task_id": 3}), deferrable("%r", ([1],), None)
    (True, False)
    """
    if type(msg) is not str:
        return False
    for value in args:
        if type(value) not in _PLAIN_SCALARS and (type(value) is not float or value - value):
            return False
    if extra:
        for value in extra.values():
            if type(value) not in _PLAIN_SCALARS and (type(value) is not float or value - value):
                return False
    return True


def deferred_entry(site: bytes, thread: bytes, msg: str, args: tuple, extra: Mapping[str, Any] | None,
                   ct: int | float, task: Any) -> tuple:
    """A deferred record as queued: one tuple `(site, thread, msg, args, ct, task, *names, *values)`
    (the `extra` fields' names, then their values).

    One tuple, not one with tuples of names and values inside: a queued entry lives until the
    writer's next flush, and every object of a type the garbage collector tracks that is alive
    counts towards its next pass (a program that logs 20 records a task otherwise runs the
    collector a third more often). The entry holds no container but `args`, a tuple of scalars,
    so the collector untracks it in its young passes: queued records never reach the oldest
    generation, whose collections would scan them.

    >>> deferred_entry(b"s,", b"t,", "m", (), {"task_id": 3}, 1.5, None)
    (b's,', b't,', 'm', (), 1.5, None, 'task_id', 3)
    """
    if extra:
        return (site, thread, msg, args, ct, task, *extra, *extra.values())
    return (site, thread, msg, args, ct, task)


def _extra_of(entry: tuple) -> dict[str, Any] | None:
    """The `extra` fields of a `deferred_entry`."""
    return None if len(entry) == 6 else dict(_extra_pairs(entry))


def _extra_pairs(entry: tuple) -> Iterable[tuple[str, Any]]:
    """The (name, value) pairs of the `extra` fields of a `deferred_entry` that has some."""
    names = (len(entry) - 6) // 2
    return zip(entry[6:6 + names], entry[6 + names:])


def encode_deferred(entry: tuple, encoder: RecordEncoder) -> bytes:
    """The line of a record queued as a `deferred_entry` by `WideEventHandler.handle_deferred`
    (or the fast logger), with `encoder`'s stamps: the line the call would have written (cut to
    the line limit, an unencodable value written the careful way). Never raises.

    >>> encoder = RecordEncoder({"component": "app"})
    >>> line = encode_deferred(deferred_entry(site_json("app", 20, None), b'"process":1,', "took %d s", (4,), None, clock(), None), encoder)
    >>> orjson.loads(line)["message"]
    'took 4 s'
    """
    site, thread, msg, args, ct, task = entry[:6]
    extra = _extra_of(entry)
    body, message = encode_moment(site, thread, msg, args, extra, ct, task)
    if body is not None and len(body) + len(encoder.prefix) <= MAX_LINE_BYTES:
        return encoder.prefix + body
    fields = _fields_of_parts(site, thread, msg, args, ct, task)
    if extra:
        fields.update(extra)
    return encoder.encode(fields, message)


def encode_deferred_batch(entries: list[tuple], encoder: RecordEncoder, lines: list[bytes]) -> None:
    """Append the line of each deferred record in `entries` to `lines`, with `encoder`'s stamps
    (as `encode_deferred`, the common case without building a line twice). Never raises.

    >>> lines = []
    >>> encode_deferred_batch([deferred_entry(site_json("app", 20, None), b'"process":1,', "n=%d", (4,), None, clock(), None)], RecordEncoder({}), lines)
    >>> orjson.loads(lines[0])["message"]
    'n=4'
    """
    append, prefix, room = lines.append, encoder.prefix, MAX_LINE_BYTES - len(encoder.prefix)
    for entry in entries:
        if len(entry) == 6:
            site, thread, msg, args, ct, task = entry
            extra = None
        else:  # the names and values as pairs (encode_moment starts its dict from them)
            site, thread, msg, args, ct, task = entry[:6]
            extra = _extra_pairs(entry)
        body, _ = encode_moment(site, thread, msg, args, extra, ct, task)
        if body is not None and len(body) <= room:
            append(prefix + body)
        else:
            append(encode_deferred(entry, encoder))


def _fields_of_parts(site: bytes, thread: bytes, msg: Any, args: Any, ct: int | float, task: Any) -> dict[str, Any]:
    """A deferred record's attributes in `record_fields`' order (for the careful encoding)."""
    known = orjson.loads(b"{" + site + thread[:-1] + b"}")
    created, msecs, relative = record_times(ct)
    fields = {"name": known["name"], "msg": msg, "args": args}
    for key in ("levelname", "levelno", "pathname", "filename", "module", "exc_info", "exc_text", "stack_info",
                "lineno", "funcName"):
        fields[key] = known[key]
    fields.update(created=created, msecs=msecs, relativeCreated=relative)
    for key in ("thread", "threadName", "processName", "process"):
        fields[key] = known[key]
    if HAS_TASK_NAME:
        fields["taskName"] = task
    return fields


def _fast_record(name, level, fn, lno, msg, args, exc_info, func=None, sinfo=None, **kwargs):
    if kwargs or not (logging.logThreads and logging.logProcesses and logging.logMultiprocessing):
        return logging.LogRecord(name, level, fn, lno, msg, args, exc_info, func, sinfo, **kwargs)
    record = _new_record(logging.LogRecord)
    record.__dict__ = record_fields(name, level, fn, lno, msg, args, exc_info, func, sinfo)
    return record


def _fields_match_stdlib() -> bool:
    reference = vars(logging.LogRecord("n", logging.INFO, "/p/x.py", 1, "m %(a)s", ({"a": 1},), None, "f", None))
    candidate = record_fields("n", logging.INFO, "/p/x.py", 1, "m %(a)s", ({"a": 1},), None, "f", None)
    timing = ("created", "msecs", "relativeCreated")
    # a Python version whose LogRecord has other attributes keeps the stdlib path
    return list(reference) == list(candidate) and all(
        reference[key] == candidate[key] for key in reference if key not in timing)


#: whether `record_fields` makes exactly what LogRecord makes on this Python
FAST_RECORDS_MATCH = _fields_match_stdlib()


def make_fast_record_factory() -> Callable[..., logging.LogRecord] | None:
    """A LogRecord factory equivalent to the stdlib one but faster, or None where it would differ.

    >>> factory = make_fast_record_factory()
    >>> factory("app", 20, "/x.py", 1, "hi", (), None).getMessage()  # doctest: +SKIP
    'hi'
    """
    return _fast_record if FAST_RECORDS_MATCH else None
