"""taskscope.emit.get_logger's fast logger (WideEventLogger): it writes exactly what the stdlib
path writes, takes the fast path only when WideEventHandlers alone would receive the record,
and otherwise is a stdlib call (other handlers, filters, levels, exceptions, lastResort).
Every supported Python (3.11, 3.12, 3.13: tests/pythons.sh) must take the fast path: each test
counts the lines that came by it (`WideEventHandler.fast_path_records`)."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import re
import sys
import threading
import types
from pathlib import Path

import pytest

import taskscope
from taskscope.emit import (
    FastPathLogger, WideEventHandler, WideEventLogger, bind, get_logger, make_fast_record_factory, span, use_fast_path,
)
from taskscope.emit import records

TIMING = {"created", "msecs", "relativeCreated"}
EXTRA = {"run_id": "r-1", "task_id": 7, "try_id": 0, "executor_label": "htex", "block_id": "0",
         "manager_id": "ab12", "worker_id": "3", "app_name": "inc"}


class Collect(logging.Handler):
    def __init__(self, level: int = logging.NOTSET) -> None:
        super().__init__(level)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class Unprintable:
    def __repr__(self) -> str:
        raise RuntimeError("no repr")


LOGGER_NUMBERS = itertools.count()  # a fresh logger name per use: loggers live as long as the interpreter
AN_OBJECT = object()  # one object, so that both paths write the same repr


@pytest.fixture
def wide_logger(tmp_path):
    """A logger named test.fast.<n> (no propagation) with a WideEventHandler per call; removed after."""
    made: list[tuple[logging.Logger, logging.Handler]] = []

    def make(path: Path, **options) -> tuple[logging.Logger, WideEventHandler]:
        logger = logging.getLogger(f"test.fast.{next(LOGGER_NUMBERS)}")
        logger.propagate = False
        logger.setLevel(logging.DEBUG)
        handler = WideEventHandler(path, flush_interval=60, **options)
        logger.addHandler(handler)
        made.append((logger, handler))
        return logger, handler

    yield make
    for logger, handler in made:
        for attached in list(logger.handlers):
            logger.removeHandler(attached)
        logger.filters.clear()
        handler.close()


def log_everything(log: WideEventLogger) -> None:
    """The same calls, from the same lines, for both paths (so lineno and funcName match)."""
    log.debug("task %d launched on %s", 7, "htex", extra=EXTRA)
    log.info("no arguments")
    log.warning("%(a)s and %(b)s", {"a": 1, "b": [2]})
    log.info(AN_OBJECT)
    log.info("two %d %d", 1)
    log.error("thing %s", Unprintable(), extra={"blob": {1, 2}, "big": 2**80, "host": "from the call"})
    log.log(25, "custom level %s", "x")
    with bind(stage="a", task_id=1):
        log.bind(step=2).info("bound %s", "here", extra={"task_id": 4})
        with span("inner", logger=log.name):
            log.critical("in a span")


def comparable(path: Path) -> list[dict]:
    events = [json.loads(line) for line in path.read_text().splitlines()]
    return [{k: v for k, v in e.items() if k not in TIMING and k not in ("span_id", "parent_span_id", "duration_s")}
            for e in events]


def write_both_ways(wide_logger, tmp_path: Path) -> tuple[Path, Path, WideEventHandler, WideEventHandler]:
    fast_path, slow_path = tmp_path / "fast" / "out.jsonlog", tmp_path / "stdlib" / "out.jsonlog"
    logger, fast = wide_logger(fast_path, stamps={"host": "h1", "component": "unit"})
    log_everything(get_logger(logger.name, experiment="e7"))
    fast.flush()
    logger.removeHandler(fast)
    slow = WideEventHandler(slow_path, flush_interval=60, stamps={"host": "h1", "component": "unit"})
    logger.addHandler(slow)
    logger.addFilter(lambda record: True)  # a logger filter: every call takes the stdlib path
    log_everything(get_logger(logger.name, experiment="e7"))
    slow.flush()
    slow.close()
    return fast_path, slow_path, fast, slow


def test_fast_path_writes_what_the_stdlib_path_writes(wide_logger, tmp_path):
    fast_path, slow_path, fast, slow = write_both_ways(wide_logger, tmp_path)
    fast_events, slow_events = comparable(fast_path), comparable(slow_path)
    assert fast.fast_path_records >= 8 and slow.fast_path_records == 0  # the paths really differed
    assert len(fast_events) == len(slow_events) == 11
    for fast_event, slow_event in zip(fast_events, slow_events):
        assert fast_event == slow_event
    first = fast_events[0]
    assert first["funcName"] == "log_everything" and first["pathname"] == __file__
    assert first["message"] == "task 7 launched on htex" and first["experiment"] == "e7"
    error = next(e for e in fast_events if e["levelname"] == "ERROR")
    assert error["host"] == "from the call" and error["big"] == str(2**80)  # the careful path, as stdlib


def test_records_from_another_thread_carry_that_thread(wide_logger, tmp_path):
    logger, wide = wide_logger(tmp_path / "out.jsonlog")
    log = get_logger(logger.name)
    idents = []

    def work() -> None:
        idents.append(threading.get_ident())
        log.info("from thread %s", "t1")

    worker = threading.Thread(target=work, name="worker-1")
    worker.start()
    worker.join()
    wide.flush()
    (event,) = comparable(tmp_path / "out.jsonlog")
    assert (event["threadName"], event["thread"], event["funcName"]) == ("worker-1", idents[0], "work")
    assert wide.fast_path_records == 1


def test_fast_and_stdlib_files_ingest_to_the_same_events(wide_logger, tmp_path):
    fast_path, slow_path, _, _ = write_both_ways(wide_logger, tmp_path)
    columns = []
    for folder in (fast_path.parent, slow_path.parent):
        with taskscope.open(":memory:") as store:
            store.ingest(folder)
            frame = store.sql("SELECT * EXCLUDE (ts, attrs) FROM events ORDER BY line")
            attrs = [{k: v for k, v in json.loads(a or "{}").items() if k not in TIMING and "span" not in k
                      and k != "duration_s"} for a in store.sql("SELECT attrs FROM events ORDER BY line").attrs]
        columns.append((frame.to_dict("records"), attrs))
    (fast_rows, fast_attrs), (slow_rows, slow_attrs) = columns
    assert len(fast_rows) == 11
    assert [{k: v for k, v in r.items() if k != "span_id"} for r in fast_rows] == [
        {k: v for k, v in r.items() if k != "span_id"} for r in slow_rows]
    assert fast_attrs == slow_attrs
    assert fast_rows[0]["task_id"] == "7" and fast_rows[0]["executor_label"] == "htex"


def test_another_receiving_handler_gets_a_stdlib_record_with_the_callers_place(wide_logger, tmp_path):
    logger, wide = wide_logger(tmp_path / "out.jsonlog")
    collect = Collect()
    logger.addHandler(collect)
    log = get_logger(logger.name, component="solver")
    log.info("seen by both %d", 1, extra={"task_id": 3})
    wide.flush()
    (record,) = collect.records
    (event,) = comparable(tmp_path / "out.jsonlog")
    assert wide.fast_path_records == 0
    assert (record.funcName, record.lineno, record.pathname) == (event["funcName"], event["lineno"], __file__)
    assert record.funcName == "test_another_receiving_handler_gets_a_stdlib_record_with_the_callers_place"
    assert (record.task_id, record.component, record.getMessage()) == (3, "solver", "seen by both 1")


def test_a_handler_above_the_records_level_does_not_stop_the_fast_path(wide_logger, tmp_path):
    logger, wide = wide_logger(tmp_path / "out.jsonlog")
    errors_only = Collect(logging.ERROR)
    logger.addHandler(errors_only)
    log = get_logger(logger.name)
    log.info("only the wide handler")
    log.error("both")
    assert wide.fast_path_records == 1 and [r.getMessage() for r in errors_only.records] == ["both"]


def test_filters_propagation_and_parents_are_respected(wide_logger, tmp_path):
    parent, parent_wide = wide_logger(tmp_path / "parent.jsonlog")
    child = logging.getLogger(parent.name + ".child")
    child_wide = WideEventHandler(tmp_path / "child.jsonlog", flush_interval=60)
    child.addHandler(child_wide)
    log = get_logger(child.name)
    try:
        log.info("to child and parent")                # propagates: two wide handlers, both fast
        parent_wide.addFilter(lambda record: record.getMessage() != "dropped")
        log.info("dropped")                            # a handler filter: stdlib, which drops it there
        log.info("kept")
        child.propagate = False
        log.info("child only")
        for handler in (child_wide, parent_wide):
            handler.flush()
    finally:
        child.removeHandler(child_wide)
        child_wide.close()
        child.propagate = True
    assert [e["message"] for e in comparable(tmp_path / "child.jsonlog")] == [
        "to child and parent", "dropped", "kept", "child only"]
    assert [e["message"] for e in comparable(tmp_path / "parent.jsonlog")] == ["to child and parent", "kept"]
    assert child_wide.fast_path_records == 2 and parent_wide.fast_path_records == 1


def test_levels_disable_and_no_handler_behave_as_stdlib(wide_logger, tmp_path, capsys):
    logger, wide = wide_logger(tmp_path / "out.jsonlog")
    log = get_logger(logger.name)
    logger.setLevel(logging.INFO)
    log.debug("below the level")
    logging.disable(logging.INFO)
    try:
        log.info("disabled")
    finally:
        logging.disable(logging.NOTSET)
    logger.disabled = True
    log.warning("logger disabled")
    logger.disabled = False
    log.info("logged")
    wide.flush()
    assert [e["message"] for e in comparable(tmp_path / "out.jsonlog")] == ["logged"]
    lonely = get_logger("test.fast.nobody.listens")
    logging.getLogger("test.fast.nobody.listens").propagate = False
    lonely.warning("to stderr through logging.lastResort")
    assert "to stderr through logging.lastResort" in capsys.readouterr().err


def test_exceptions_and_stack_info_take_the_stdlib_path(wide_logger, tmp_path):
    logger, wide = wide_logger(tmp_path / "out.jsonlog")
    log = get_logger(logger.name)
    try:
        raise KeyError("missing")
    except KeyError:
        log.exception("lookup failed")
    log.info("with stack", stack_info=True)
    wide.flush()
    failed, stacked = comparable(tmp_path / "out.jsonlog")
    assert failed["exc_type"] == "KeyError" and "KeyError: 'missing'" in failed["exc_text"]
    assert failed["funcName"] == stacked["funcName"] == "test_exceptions_and_stack_info_take_the_stdlib_path"
    assert "Stack (most recent call last)" in stacked["stack_info"]
    assert wide.fast_path_records == 0


def test_a_record_factory_or_a_reserved_extra_name_is_handled_by_stdlib(wide_logger, tmp_path):
    logger, wide = wide_logger(tmp_path / "out.jsonlog")
    log = get_logger(logger.name)
    stdlib_factory = logging.getLogRecordFactory()

    def tagging_factory(*args, **kwargs):
        record = stdlib_factory(*args, **kwargs)
        record.tagged = True
        return record

    logging.setLogRecordFactory(tagging_factory)
    try:
        log.info("made by a custom factory")
    finally:
        logging.setLogRecordFactory(stdlib_factory)
    with pytest.raises(KeyError, match="Attempt to overwrite 'message'"):
        logger.info("stdlib refuses this", extra={"message": "clash"})
    with pytest.raises(KeyError, match="Attempt to overwrite 'message'"):
        log.info("and so does the fast logger", extra={"message": "clash"})
    wide.flush()
    (event,) = comparable(tmp_path / "out.jsonlog")
    assert event["tagged"] is True and wide.fast_path_records == 0


def test_the_dfk_handler_takes_the_fast_path_once_it_knows_the_run_id(tmp_path):
    from taskscope.parsl.logconfig import _RunIdLearningHandler

    logger = logging.getLogger(f"test.fast.{next(LOGGER_NUMBERS)}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    handler = _RunIdLearningHandler(tmp_path / "parsl.jsonlog", flush_interval=60, stamps={"component": "parsl"})
    logger.addHandler(handler)
    log = get_logger(logger.name)
    try:
        log.info("before the run id")           # held back by the DFK handler: the stdlib path
        logger.info("Run id is: run-42")
        log.info("after the run id")
        handler.flush()
    finally:
        logger.removeHandler(handler)
        handler.close()
    events = comparable(tmp_path / "parsl.jsonlog")
    assert [e["message"] for e in events] == ["before the run id", "Run id is: run-42", "after the run id"]
    assert {e["run_id"] for e in events} == {"run-42"} and handler.fast_path_records == 1


def test_caller_lookup_switched_off_as_stdlib_does(wide_logger, tmp_path, monkeypatch):
    logger, wide = wide_logger(tmp_path / "out.jsonlog")
    monkeypatch.setattr(logging, "_srcfile", None)
    get_logger(logger.name).info("fast, no caller")
    logger.info("stdlib, no caller")
    wide.flush()
    fast, slow = comparable(tmp_path / "out.jsonlog")
    for event in (fast, slow):
        assert (event["pathname"], event["lineno"], event["funcName"]) == ("(unknown file)", 0, "(unknown function)")
    assert {k: v for k, v in fast.items() if k not in ("message", "msg")} == {
        k: v for k, v in slow.items() if k not in ("message", "msg")}
    assert wide.fast_path_records == 1


def test_this_python_builds_the_records_its_logrecord_builds():
    # False would silently turn the fast path off: a new Python whose LogRecord changed must fail here
    assert records.FAST_RECORDS_MATCH and make_fast_record_factory() is not None
    assert records.HAS_TASK_NAME == (sys.version_info >= (3, 12))
    assert records.CLOCK_IN_NS == (sys.version_info >= (3, 13))


@pytest.mark.parametrize("offset", [0, 123_456_789, 999_000_000, 999_999_999, 999_999_900, 500_000_001])
def test_record_times_are_the_ones_logrecord_computes(monkeypatch, offset):
    # one clock reading for all (999_999_900 ns is 3.13's rounding case): LogRecord reads
    # logging.time, the fast records taskscope's `records.clock`
    reading_ns = 1_677_903_920_000_000_000 + offset
    reading = reading_ns if records.CLOCK_IN_NS else reading_ns / 1e9
    monkeypatch.setattr(logging, "time", types.SimpleNamespace(time=lambda: reading, time_ns=lambda: reading))
    monkeypatch.setattr(records, "clock", lambda: reading)
    record = logging.LogRecord("n", logging.INFO, "/x.py", 1, "m", (), None)
    expected = (record.created, record.msecs, record.relativeCreated)
    fields = records.record_fields("n", logging.INFO, "/x.py", 1, "m", (), None)
    line, _ = records.encode_moment(b"", b"", "m", (), None)
    moment = json.loads(b"{" + line)
    assert records.record_times(reading) == expected
    assert (fields["created"], fields["msecs"], fields["relativeCreated"]) == expected
    assert (moment["created"], moment["msecs"], moment["relativeCreated"]) == expected


def test_asyncio_task_names_are_written_as_stdlib_writes_them(wide_logger, tmp_path, monkeypatch):
    logger, wide = wide_logger(tmp_path / "out.jsonlog", stamps={"host": "h1"})
    log = get_logger(logger.name)

    async def stage(name: str) -> None:
        log.info("in %s", name)
        log.info("careful in %s", name, extra={"host": "h2"})  # a field over a stamp: record_fields' path
        logger.info("stdlib in %s", name)

    async def main() -> None:
        await asyncio.gather(asyncio.create_task(stage("a"), name="fetch-1"),
                             asyncio.create_task(stage("b"), name="fetch-2"))

    asyncio.run(main())
    log.info("outside any task")
    if records.HAS_TASK_NAME:
        monkeypatch.setattr(logging, "logAsyncioTasks", False)
        asyncio.run(stage("c"))
    wide.flush()
    events = comparable(tmp_path / "out.jsonlog")
    assert wide.fast_path_records == 3 + records.HAS_TASK_NAME
    if not records.HAS_TASK_NAME:  # 3.11: LogRecord has no taskName, and neither has either line
        assert all("taskName" not in event for event in events)
        return
    names = {event["message"]: event["taskName"] for event in events}
    assert names == {"in a": "fetch-1", "careful in a": "fetch-1", "stdlib in a": "fetch-1",
                     "in b": "fetch-2", "careful in b": "fetch-2", "stdlib in b": "fetch-2",
                     "outside any task": None, "in c": None, "careful in c": None, "stdlib in c": None}


def test_the_benchmarks_fast_logger_row_takes_the_fast_path(tmp_path):
    # benchmarks/emit_bench.py reports this path's cost on each Python: it must be the fast path
    sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
    try:
        import emit_bench
    finally:
        sys.path.pop(0)
    (setup,) = [s for s in emit_bench.SETUPS if s.fast_logger]
    emit_bench.run_once(setup, tmp_path, calls=50, round_no=0)
    assert setup.fast_path_records == [50]


# ---- FastPathLogger: stdlib loggers made by code that does not know taskscope (Parsl's) ----

def log_everything_stdlib(logger: logging.Logger) -> None:
    """The same stdlib calls, from the same lines, for both paths (as Parsl's module loggers make them)."""
    logger.debug("task %d launched on %s", 7, "htex", extra=EXTRA)
    logger.info("no arguments")
    logger.warning("%(a)s and %(b)s", {"a": 1, "b": [2]})
    logger.info(AN_OBJECT)
    logger.info("two %d %d", 1)
    logger.error("thing %s", Unprintable(), extra={"blob": {1, 2}, "big": 2**80, "host": "from the call"})
    logger.log(25, "custom level %s", "x")
    logging.LoggerAdapter(logger, {"adapted": True}).info("through an adapter %s", "a")
    with bind(stage="a", task_id=1):
        logger.info("bound %s", "here", extra={"task_id": 4})
    try:
        raise KeyError("missing")
    except KeyError:
        logger.exception("lookup failed")
        logger.debug("debug with the exception", exc_info=True)  # FastPathLogger.debug's own stdlib path
    logger.info("with stack", stack_info=True)
    logger.info("deeper", stacklevel=2)


def test_a_switched_stdlib_logger_writes_what_stdlib_writes_line_by_line(wide_logger, tmp_path):
    get_logger("test.fast.installs.context")  # bound fields reach stdlib records (as under WideEventLogging)
    fast_path, slow_path = tmp_path / "fast" / "out.jsonlog", tmp_path / "stdlib" / "out.jsonlog"
    logger, fast = wide_logger(fast_path, stamps={"host": "h1", "component": "unit"})
    restore = use_fast_path(lambda name: name == logger.name)
    try:
        assert type(logger) is FastPathLogger and logging.getLogger(logger.name) is logger
        log_everything_stdlib(logger)
    finally:
        restore()
    assert type(logger) is logging.Logger
    fast.flush()
    logger.removeHandler(fast)
    slow = WideEventHandler(slow_path, flush_interval=60, stamps={"host": "h1", "component": "unit"})
    logger.addHandler(slow)
    log_everything_stdlib(logger)
    slow.flush()
    slow.close()
    fast_events, slow_events = comparable(fast_path), comparable(slow_path)
    assert len(fast_events) == len(slow_events) == 13
    for event in fast_events + slow_events:  # the stack's outer frames are this test's two calls: their lines differ
        if event["stack_info"]:
            event["stack_info"] = event["stack_info"].splitlines()[-2:]
    fast_events[-1].pop("lineno"), slow_events[-1].pop("lineno")  # stacklevel=2: the test's two calls
    for fast_event, slow_event in zip(fast_events, slow_events):
        assert fast_event == slow_event
    # all but the exception, stack_info and stacklevel calls (stdlib) and the 2**80 one (the careful path)
    assert fast.fast_path_records == 8 and slow.fast_path_records == 0
    assert [e["funcName"] for e in fast_events[:-1]] == ["log_everything_stdlib"] * 12
    assert fast_events[-1]["funcName"] == "test_a_switched_stdlib_logger_writes_what_stdlib_writes_line_by_line"
    adapted = next(e for e in fast_events if e["message"] == "through an adapter a")
    assert adapted["adapted"] is True and adapted["pathname"] == __file__
    bound = next(e for e in fast_events if e["message"] == "bound here")
    assert (bound["stage"], bound["task_id"]) == ("a", 4)


def test_a_switched_logger_leaves_other_handlers_filters_and_disabling_to_stdlib(wide_logger, tmp_path):
    logger, wide = wide_logger(tmp_path / "out.jsonlog")
    restore = use_fast_path(lambda name: name == logger.name)
    collect = Collect()
    try:
        logger.info("fast")
        logger.addHandler(collect)
        logger.info("seen by both")
        logger.removeHandler(collect)
        logger.disabled = True
        logger.info("disabled")
        logger.disabled = False
        logger.addFilter(lambda record: record.getMessage() != "filtered")
        logger.info("filtered")
        logger.filters.clear()
        logging.disable(logging.INFO)
        logger.info("below logging.disable")
        logging.disable(logging.NOTSET)
    finally:
        restore()
    wide.flush()
    assert [e["message"] for e in comparable(tmp_path / "out.jsonlog")] == ["fast", "seen by both"]
    assert [r.getMessage() for r in collect.records] == ["seen by both"]
    assert collect.records[0].funcName == "test_a_switched_logger_leaves_other_handlers_filters_and_disabling_to_stdlib"
    assert wide.fast_path_records == 1


def log_scalars(logger: logging.Logger, handler: WideEventHandler) -> None:
    """Records whose values are all scalars (queued as their parts and encoded by the writer),
    edge cases among them, mixed with records encoded at the call, and stamps changed midway."""
    logger.debug("task %d launched on %s", 7, "htex", extra=EXTRA)
    logger.info("no arguments")
    logger.info("ratio %s %r %d", 0.1, float("nan"), True)  # a NaN: encoded at the call, the careful way (by name)
    logger.info("two %d %d", 1)  # a bad format: the note in the message
    logger.info("held %r", [1, 2])  # a list: encoded at the call
    logger.info("big %s", 2**80)  # beyond 64 bits: the careful way, in the writer
    logger.info("surrogate %s", "\ud800")  # orjson refuses a lone surrogate: the careful way
    logger.info("long %s", "x" * (records.MAX_LINE_BYTES + 10))  # cut to the line limit
    logger.info("string args %s", "a", extra={"host": "from the call"})  # a field over a stamp: the careful way
    handler.set_stamps(run_id="r-9")  # the records after this take it, those before do not
    logger.warning("after %s", "stamps")


@pytest.mark.parametrize("defer", [True, False])
def test_deferred_records_are_the_lines_encoding_at_the_call_writes(wide_logger, tmp_path, monkeypatch, defer):
    from taskscope.emit import logger as fast_logger

    paths = {}
    for deferred in (defer, not defer):  # both orders: neither run leaves state the other relies on
        monkeypatch.setattr(fast_logger, "DEFER_ENCODING", deferred)
        path = tmp_path / f"deferred_{deferred}.jsonlog"
        logger, handler = wide_logger(path, stamps={"host": "h1", "component": "unit"})
        restore = use_fast_path(lambda name: name == logger.name)
        try:
            log_scalars(logger, handler)
        finally:
            restore()
        queued = list(handler._queue)  # noqa: SLF001 - what the caller left for the writer
        assert sum(type(item) is tuple for item in queued) == (7 if deferred else 0)
        handler.flush()
        assert handler.written_records == 10 and handler.dropped_records == 0
        paths[deferred] = path
    deferred_events, at_call_events = comparable(paths[True]), comparable(paths[False])
    for event in deferred_events + at_call_events:
        event.pop("name")  # a logger per run
        # the cut line's note gives the record's size, whose time fields' digits vary by a byte or two
        event["message"] = re.sub(r"the record was [0-9,]+ bytes", "the record was N bytes", event["message"])
    assert len(deferred_events) == 10
    assert deferred_events == at_call_events
    by_message = {e["message"][:12]: e for e in deferred_events}
    assert by_message["task 7 launc"]["task_id"] == 7 and by_message["ratio 0.1 na"]["message"] == "ratio 0.1 nan 1"
    assert by_message["ratio 0.1 na"]["args"] == [0.1, "NaN", True]
    assert "formatting failed" in by_message["two %d %d [t"]["message"]
    assert by_message["big 12089258"]["message"] == f"big {2**80}"
    assert "cut to fit a line" in by_message["long xxxxxxx"]["message"]
    assert by_message["string args "]["host"] == "from the call"
    assert [e.get("run_id") for e in deferred_events[1:]] == [None] * 8 + ["r-9"]  # the first has its own (EXTRA)
    lines = paths[True].read_bytes().splitlines()
    assert all(len(line) + 1 <= records.MAX_LINE_BYTES for line in lines)


def test_queued_deferred_records_leave_the_garbage_collectors_generations(wide_logger, tmp_path):
    import gc

    logger, handler = wide_logger(tmp_path / "gc.jsonlog")
    restore = use_fast_path(lambda name: name == logger.name)
    # no automatic collection while logging: one of the middle generation could meet an entry
    # before its inner tuples and move it to the oldest, which the passes below do not visit
    gc.disable()
    try:
        for number in range(100):
            logger.info("task %d on %s", number, "htex", extra={"task_id": number})
    finally:
        gc.enable()
        restore()
    queued = [item for item in handler._queue if type(item) is tuple]  # noqa: SLF001
    assert len(queued) == 100
    gc.collect(0)  # the youngest pass can meet an entry before its inner tuples: it survives into the middle one
    gc.collect(1)  # whose pass untracks it
    assert not any(gc.is_tracked(item) for item in queued)  # held records never reach the oldest generation
    handler.flush()
    assert handler.written_records == 100


def test_a_switched_loggers_remembered_route_follows_every_change_of_handlers(wide_logger, tmp_path):
    """FastPathLogger keeps which handlers a (logger, level) reaches: a change through logging's
    API, a switched logger's `propagate`/`handlers`, or the root's handler list changed by hand is
    seen at the next record; other changes by hand after `routes_changed()`."""
    from taskscope.emit.logger import routes_changed

    logger, wide = wide_logger(tmp_path / "out.jsonlog")
    child = logging.getLogger(f"{logger.name}.child")
    collect, by_hand, at_root = Collect(), Collect(), Collect()
    restore = use_fast_path(lambda name: name == child.name)
    saved_root = logging.root.handlers[:]
    try:
        child.info("1 fast")
        logger.addHandler(collect)
        child.info("2 both")
        collect.setLevel(logging.ERROR)
        child.info("3 fast, the other handler's level above")
        logger.removeHandler(collect)
        wide.setLevel(logging.WARNING)
        child.info("4 below every handler")
        wide.setLevel(logging.NOTSET)
        child.propagate = False
        child.info("5 not propagated: no handler")
        child.propagate = True
        child.handlers.append(by_hand)
        routes_changed()
        child.info("6 both")
        child.handlers.clear()
        routes_changed()
        child.info("7 fast")
        logging.root.handlers.clear()  # by hand: what the root has now is counted at each record
        logger.propagate = True
        routes_changed()
        child.info("8 fast, up to the root")
        logging.root.handlers.append(at_root)
        child.info("9 both, a root handler put there by hand")
    finally:
        logging.root.handlers[:] = saved_root
        logger.propagate = False
        restore()
    wide.flush()
    assert [e["message"][:1] for e in comparable(tmp_path / "out.jsonlog")] == ["1", "2", "3", "6", "7", "8", "9"]
    assert [r.getMessage()[:1] for r in collect.records] == ["2"]
    assert [r.getMessage()[:1] for r in by_hand.records] == ["6"]
    assert [r.getMessage()[:1] for r in at_root.records] == ["9"]
    assert wide.fast_path_records == 4  # 1, 3, 7 and 8


def test_a_queued_deferred_record_is_one_tuple(wide_logger, tmp_path):
    """A deferred record holds one tuple until the writer's flush (its extra fields' names and
    values inside it, not in tuples of their own): every live object of a kind the garbage
    collector tracks brings its next pass nearer."""
    logger, handler = wide_logger(tmp_path / "one.jsonlog")
    restore = use_fast_path(lambda name: name == logger.name)
    try:
        logger.info("task %d on %s", 3, "htex", extra={"task_id": 3, "state": "launched"})
        logger.info("no extra")
    finally:
        restore()
    with_extra, without = [item for item in handler._queue if type(item) is tuple]  # noqa: SLF001
    assert [index for index, value in enumerate(with_extra) if type(value) is tuple] == [3]  # the arguments only
    assert with_extra[3] == (3, "htex") and with_extra[6:] == ("task_id", "state", 3, "launched")
    assert len(without) == 6 and without[3] == ()
    handler.flush()
    events = comparable(tmp_path / "one.jsonlog")
    assert (events[0]["message"], events[0]["task_id"], events[0]["state"]) == ("task 3 on htex", 3, "launched")
    assert "task_id" not in events[1]


def test_a_flush_of_many_records_writes_them_in_chunks_in_their_order(wide_logger, tmp_path, monkeypatch):
    """A flush encodes and writes about WRITE_CHUNK records at a time (a busy process queues thousands
    between flushes): every record in the order logged, records encoded at the call and stamps
    changed midway included, each record counted once."""
    from taskscope.emit import handler as handler_module

    path = tmp_path / "many.jsonlog"
    logger, handler = wide_logger(path, stamps={"component": "unit"})
    writes = []
    real_write = handler._write  # noqa: SLF001
    monkeypatch.setattr(handler, "_write",
                        lambda data, count, *wait: (writes.append(count), real_write(data, count, *wait))[1])
    chunk = handler_module.WRITE_CHUNK
    total = 2 * chunk + 300
    restore = use_fast_path(lambda name: name == logger.name)
    try:
        for number in range(total):
            if number == chunk + 100:
                handler.set_stamps(run_id="r-2")
            if number % 7 == 0:
                logger.info("number %d as a list %r", number, [number])  # encoded at the call
            else:
                logger.info("number %d", number, extra={"seq": number})  # queued as its parts
    finally:
        restore()
    handler.flush()
    events = [json.loads(line) for line in path.read_text().splitlines()]
    assert [int(e["message"].split()[1]) for e in events] == list(range(total))
    assert [e.get("run_id") for e in events] == [None] * (chunk + 100) + ["r-2"] * (total - chunk - 100)
    assert handler.written_records == total and handler.dropped_records == 0
    assert len(writes) >= 3 and max(writes) < 2 * chunk and sum(writes) == total
