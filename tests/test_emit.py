"""taskscope.emit: the handler's records, its robustness, what survives exits, kills and forks,
and bind/span/get_logger. Processes that exit or are killed run as real subprocesses.

Tests that log run twice: through a stdlib logger and through get_logger's fast logger
(WideEventLogger, which makes no LogRecord when only WideEventHandlers listen)."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

import taskscope
from taskscope.emit import WideEventHandler, WideEventLogger, bind, current_fields, get_logger, span
from taskscope.emit.records import make_fast_record_factory


def read_events(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(params=["stdlib logger", "fast logger"])
def logger_to(request, tmp_path):
    """A fresh logger writing through a WideEventHandler to tmp_path/out.jsonlog (no propagation):
    a stdlib Logger, or the WideEventLogger get_logger makes for it."""
    made = []

    def make(path: Path | None = None, **options) -> tuple[logging.Logger | WideEventLogger, WideEventHandler]:
        handler = WideEventHandler(path or tmp_path / "out.jsonlog", **options)
        logger = logging.getLogger(f"test.emit.{len(made)}.{id(handler)}")
        logger.propagate = False
        logger.setLevel(logging.DEBUG)
        logger.addHandler(handler)
        made.append((logger, handler))
        return (get_logger(logger.name) if request.param == "fast logger" else logger), handler

    yield make
    for logger, handler in made:
        logger.removeHandler(handler)
        handler.close()


def test_record_keeps_every_field_a_reader_needs(logger_to, tmp_path):
    log, handler = logger_to(stamps={"component": "unit", "host": "h1"})
    log.debug("task %d launched on %s", 7, "htex", extra={"task_id": 7, "parsl.executor": "htex", "ratio": 0.5})
    try:
        raise KeyError("missing")
    except KeyError:
        log.exception("lookup failed")
    handler.flush()
    first, second = read_events(tmp_path / "out.jsonlog")
    assert first["message"] == "task 7 launched on htex"
    assert first["msg"] == "task %d launched on %s" and first["args"] == [7, "htex"]
    assert first["levelname"] == "DEBUG" and first["name"] == log.name
    assert first["funcName"] == "test_record_keeps_every_field_a_reader_needs"
    assert first["lineno"] > 0 and first["pathname"] == __file__
    assert first["process"] == os.getpid() and first["thread"] == threading.get_ident()
    assert first["threadName"] == threading.current_thread().name
    assert abs(first["created"] - time.time()) < 60
    assert (first["task_id"], first["parsl.executor"], first["ratio"]) == (7, "htex", 0.5)
    assert (first["component"], first["host"]) == ("unit", "h1")
    assert second["levelname"] == "ERROR" and second["exc_type"] == "KeyError"
    assert "Traceback" in second["exc_text"] and "KeyError: 'missing'" in second["exc_text"]


def test_values_are_written_as_they_were_at_the_call(logger_to, tmp_path):
    log, handler = logger_to(flush_interval=60)
    tasks = [4, 5]
    log.info("sent tasks %s", tasks, extra={"count": 2})
    tasks.append(6)  # changed before the flush
    handler.flush()
    (event,) = read_events(tmp_path / "out.jsonlog")
    assert event["message"] == "sent tasks [4, 5]" and event["args"] == [[4, 5]]


def test_bad_arguments_never_reach_the_caller(logger_to, tmp_path, monkeypatch):
    log, handler = logger_to()
    # Under test is our handler, which never raises. pytest's own capture handler raises on a bad
    # format when logging.raiseExceptions is set; once in a full run (not reproduced alone) these
    # records reached it although the logger does not propagate. Its raising is not ours to test.
    monkeypatch.setattr(logging, "raiseExceptions", False)

    class Unprintable:
        def __repr__(self):
            raise RuntimeError("no repr")

    log.info(object())
    log.info("two %d %d", 1)
    log.info("thing %s", object(), extra={"blob": {1, 2}, "when": Unprintable(), "big": 2**80})
    log.info("%(a)s and %(b)s", {"a": 1, "b": [2]})
    handler.flush()
    events = read_events(tmp_path / "out.jsonlog")
    assert len(events) == 4
    assert events[0]["message"].startswith("<object object at")
    assert "formatting failed: TypeError" in events[1]["message"] and events[1]["msg"] == "two %d %d"
    assert events[2]["message"].startswith("thing <object object at")
    assert "unrepresentable" in json.dumps(events[2]["when"]) or "Unprintable" in json.dumps(events[2])
    assert events[3]["message"] == "1 and [2]"
    assert handler.dropped_records == 0


def test_unwritable_folder_warns_once_counts_drops_and_goes_on(logger_to, tmp_path, capfd):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    log, handler = logger_to(blocker / "sub" / "out.jsonlog")
    for i in range(5):
        log.info("record %d", i)
        handler.flush()
    log.info("still logging fine")
    handler.flush()
    warnings = [line for line in capfd.readouterr().err.splitlines() if "taskscope: cannot write" in line]
    assert len(warnings) == 1 and str(blocker / "sub" / "out.jsonlog") in warnings[0]
    assert handler.dropped_records == 6 and handler.written_records == 0


def test_file_is_appended_to_never_truncated(logger_to, tmp_path):
    path = tmp_path / "out.jsonlog"
    path.write_text('{"created": 1, "message": "from before"}\n')
    log, handler = logger_to(path)
    log.info("new")
    handler.flush()
    assert [e["message"] for e in read_events(path)] == ["from before", "new"]


def test_a_line_cut_by_a_kill_is_not_glued_to_the_next_writers_line(logger_to, tmp_path):
    path = tmp_path / "out.jsonlog"
    path.write_text('{"created": 1, "message": "complete"}\n{"created": 2, "mess')  # a killed writer's last write
    log, handler = logger_to(path)
    log.info("next writer")
    handler.flush()
    lines = path.read_text().splitlines()
    assert lines[1] == '{"created": 2, "mess' and json.loads(lines[2])["message"] == "next writer"


def test_background_thread_flushes_without_being_asked(logger_to, tmp_path):
    path = tmp_path / "out.jsonlog"
    log, handler = logger_to(path, flush_interval=0.05)
    log.info("written by the flusher")
    deadline = time.monotonic() + 30  # a correctness wait, not a timing assertion
    while not (path.exists() and path.read_text()) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert [e["message"] for e in read_events(path)] == ["written by the flusher"]


WRITER = textwrap.dedent(
    """
    import logging, os, sys, time
    from taskscope.emit import WideEventHandler, get_logger
    handler = WideEventHandler(sys.argv[1], flush_interval=float(sys.argv[3]))
    root = logging.getLogger(); root.addHandler(handler); root.setLevel(logging.DEBUG)
    log = logging.getLogger("writer") if sys.argv[4] == "stdlib" else get_logger("writer")
    mode = sys.argv[2]
    for i in range(1000):
        log.info("early %d", i)
    if mode == "kill":
        deadline = time.monotonic() + 60
        while handler.written_records < 1000 and time.monotonic() < deadline:
            time.sleep(0.01)                        # the flusher writes them, unprompted
        for i in range(100):
            log.info("late %d", i)
        print("ready" if handler.written_records >= 1000 else f"flushed {handler.written_records}", flush=True)
        time.sleep(600)
    for i in range(1000):
        log.info("last %d", i)                     # logged just before the end: still in the buffer
    if mode == "exit":
        sys.exit(3)
    if mode == "raise":
        raise RuntimeError("unhandled")
    if mode == "sigterm":
        print("ready", flush=True)
        time.sleep(600)
    if mode == "fork":
        pid = os.fork()
        if pid == 0:
            log.info("from the child")
            sys.exit(0)
        os.waitpid(pid, 0)
        log.info("parent after fork")
    """
)


LOGGERS = ["stdlib", "fast"]


def run_writer(tmp_path: Path, mode: str, interval: float = 0.5, logger: str = "stdlib") -> tuple[subprocess.Popen, Path]:
    path = tmp_path / f"{mode}.jsonlog"
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    process = subprocess.Popen([sys.executable, str(script), str(path), mode, str(interval), logger],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return process, path


@pytest.mark.parametrize("logger", LOGGERS)
@pytest.mark.parametrize("mode, returncode", [("normal", 0), ("exit", 3), ("raise", 1)])
def test_exits_lose_nothing(tmp_path, mode, returncode, logger):
    process, path = run_writer(tmp_path, mode, interval=30, logger=logger)  # nothing is flushed by the timer
    _, err = process.communicate(timeout=60)
    assert process.returncode == returncode, err
    messages = [e["message"] for e in read_events(path)]
    assert messages == [f"early {i}" for i in range(1000)] + [f"last {i}" for i in range(1000)]


LOGS_AT_EXIT = textwrap.dedent(
    """
    import atexit, sys
    atexit.register(lambda: print(handler.written_records, handler.dropped_records))  # runs last
    import logging
    atexit.register(lambda: log.info("logged at exit"))  # runs after taskscope's exit flush
    from taskscope.emit import WideEventHandler, get_logger
    handler = WideEventHandler(sys.argv[1])
    root = logging.getLogger(); root.addHandler(handler); root.setLevel(logging.INFO)
    log = get_logger("late") if sys.argv[2] == "fast" else logging.getLogger("late")
    """
)


@pytest.mark.parametrize("logger", LOGGERS)
def test_a_record_logged_after_the_exit_flush_is_written_once_and_not_counted_dropped(tmp_path, logger):
    # no flusher runs yet, and Python 3.12+ starts no thread at exit: logging.shutdown's flush writes it
    path = tmp_path / "late.jsonlog"
    done = subprocess.run([sys.executable, "-c", LOGS_AT_EXIT, str(path), logger], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0 and done.stdout.split() == ["1", "0"], done.stderr
    assert [e["message"] for e in read_events(path)] == ["logged at exit"]


@pytest.mark.parametrize("logger", LOGGERS)
def test_sigterm_flushes_then_dies_of_sigterm(tmp_path, logger):
    script = tmp_path / "term.py"
    script.write_text(WRITER.replace("handler = WideEventHandler", "from taskscope.emit import flush_on_sigterm\n"
                                                                   "assert flush_on_sigterm()\nhandler = WideEventHandler"))
    path = tmp_path / "sigterm.jsonlog"
    process = subprocess.Popen([sys.executable, str(script), str(path), "sigterm", "30", logger],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "ready"
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=60)
    assert process.returncode == -signal.SIGTERM
    assert len(read_events(path)) == 2000


@pytest.mark.parametrize("logger", LOGGERS)
def test_sigkill_loses_at_most_the_last_flush_interval(tmp_path, logger):
    process, path = run_writer(tmp_path, "kill", interval=0.2, logger=logger)
    assert process.stdout.readline().strip() == "ready"
    time.sleep(0.0)  # kill at once: the 100 "late" records may still be in the buffer
    process.kill()
    process.communicate(timeout=60)
    lines = path.read_text().splitlines(keepends=True)
    # a kill during a flush's write can cut that write short: only the last line may be incomplete
    assert all(line.endswith("\n") for line in lines[:-1])
    messages = [json.loads(line)["message"] for line in lines if line.endswith("\n")]
    # everything the flusher wrote before the kill is on disk
    assert messages[:1000] == [f"early {i}" for i in range(1000)]
    assert set(messages[1000:]) <= {f"late {i}" for i in range(100)}


@pytest.mark.parametrize("logger", LOGGERS)
def test_forked_child_does_not_rewrite_the_parents_lines(tmp_path, logger):
    process, path = run_writer(tmp_path, "fork", interval=30, logger=logger)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    messages = [e["message"] for e in read_events(path)]
    parents = [f"early {i}" for i in range(1000)] + [f"last {i}" for i in range(1000)]
    assert sorted(messages) == sorted(parents + ["from the child", "parent after fork"])
    child = next(e for e in read_events(path) if e["message"] == "from the child")
    parent = next(e for e in read_events(path) if e["message"] == "parent after fork")
    assert child["process"] != parent["process"]


def test_bind_adds_fields_to_every_record_and_nests(logger_to, tmp_path):
    log, handler = logger_to()
    with bind(run_id="r1", stage="a"):
        log.info("one")
        with bind(stage="b", task_id=3):
            log.info("two", extra={"task_id": 4})  # the call's own extra wins, no KeyError
        log.info("three")
    log.info("outside")
    handler.flush()
    events = read_events(tmp_path / "out.jsonlog")
    assert [(e.get("run_id"), e.get("stage"), e.get("task_id")) for e in events] == [
        ("r1", "a", None), ("r1", "b", 4), ("r1", "a", None), (None, None, None)]
    with pytest.raises(ValueError, match="LogRecord attributes"):
        bind(message="clash")


def test_bound_fields_reach_any_handler():
    seen = []

    class Collect(logging.Handler):
        def emit(self, record):
            seen.append(record)

    logger = logging.getLogger("test.emit.any_handler")
    logger.propagate = False
    logger.addHandler(Collect())
    logger.setLevel(logging.INFO)
    with bind(experiment="e7"):
        logger.info("plain stdlib handler")
    assert seen[0].experiment == "e7"


def test_context_is_separate_per_thread_and_asyncio_task(logger_to, tmp_path):
    log, handler = logger_to()

    def in_thread(name):
        with bind(worker=name):
            time.sleep(0.01)
            log.info("thread %s", name)

    threads = [threading.Thread(target=in_thread, args=(f"t{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    async def coroutine(name):
        async with bind(worker=name):
            await asyncio.sleep(0.01)
            log.info("task %s", name)

    async def main():
        await asyncio.gather(*(coroutine(f"a{i}") for i in range(4)))

    asyncio.run(main())
    handler.flush()
    for event in read_events(tmp_path / "out.jsonlog"):
        assert event["message"].split()[-1] == event["worker"]
    assert current_fields() == {}


def test_spans_record_ids_parents_durations_and_exceptions(logger_to, tmp_path):
    log, handler = logger_to()
    span_logger = log.name
    with span("outer", logger=span_logger, files=3) as outer_id:
        log.info("inside outer")
        with pytest.raises(ZeroDivisionError):
            with span("inner", logger=span_logger):
                time.sleep(0.01)
                1 / 0  # noqa: B018

    @span("decorated", logger=span_logger)
    def work(x):
        return x * 2

    @span("coro", logger=span_logger)
    async def awork(x):
        return x + 1

    assert work(2) == 4 and asyncio.run(awork(1)) == 2
    handler.flush()
    events = read_events(tmp_path / "out.jsonlog")
    by_event = {e.get("event"): e for e in events if e.get("event")}
    assert set(by_event) == {"outer.start", "outer.end", "inner.start", "inner.end",
                             "decorated.start", "decorated.end", "coro.start", "coro.end"}
    assert by_event["outer.start"]["span_id"] == outer_id == by_event["outer.end"]["span_id"]
    assert by_event["outer.start"]["parent_span_id"] is None and by_event["outer.start"]["files"] == 3
    assert by_event["inner.start"]["parent_span_id"] == outer_id
    assert by_event["inner.end"]["outcome"] == "error" and by_event["inner.end"]["exception_type"] == "ZeroDivisionError"
    assert by_event["inner.end"]["levelname"] == "ERROR" and by_event["inner.end"]["duration_s"] >= 0.01
    assert by_event["outer.end"]["outcome"] == "ok" and by_event["outer.end"]["duration_s"] >= by_event["inner.end"]["duration_s"]
    inside = next(e for e in events if e["message"] == "inside outer")
    assert inside["span_id"] == outer_id and inside["files"] == 3
    assert by_event["outer.start"]["funcName"] == "test_spans_record_ids_parents_durations_and_exceptions"


def test_get_logger_carries_fields(logger_to, tmp_path):
    log, handler = logger_to()
    bound = get_logger(log.name, component="solver")
    bound.info("a")
    bound.bind(step=2).warning("b %d", 1, extra={"component": "override"})
    handler.flush()
    first, second = read_events(tmp_path / "out.jsonlog")
    assert first["component"] == "solver" and "step" not in first
    assert (second["component"], second["step"], second["levelname"]) == ("override", 2, "WARNING")


def test_fast_record_factory_makes_the_same_records():
    factory = make_fast_record_factory()
    assert factory is not None  # every supported Python (3.11-3.13) gets the fast records
    args = ("task %d on %s", (3, "h"), None, "fn", None)
    fast = vars(factory("n", logging.INFO, "/a/b/mod.py", 12, *args))
    slow = vars(logging.LogRecord("n", logging.INFO, "/a/b/mod.py", 12, *args))
    timing = {"created", "msecs", "relativeCreated"}
    assert list(fast) == list(slow)
    assert {k: v for k, v in fast.items() if k not in timing} == {k: v for k, v in slow.items() if k not in timing}
    assert abs(fast["created"] - slow["created"]) < 1 and 0 <= fast["msecs"] < 1000


def test_handler_output_ingests_into_columns(logger_to, tmp_path):
    log, handler = logger_to(stamps={"run_id": "run-x", "executor_label": "htex", "host": "node7"})
    with bind(task_id=5, try_id=0):
        log.warning("slow step %s", "stage_in", extra={"elapsed_s": 2.5})
    handler.flush()
    with taskscope.open(":memory:") as store:
        store.ingest(tmp_path / "out.jsonlog")
        row = store.sql("SELECT *, CAST(attrs->>'elapsed_s' AS DOUBLE) AS elapsed_s FROM events").iloc[0]
    assert (row.run_id, row.task_id, row.try_id, row.executor_label, row.host) == ("run-x", "5", 0, "htex", "node7")
    assert (row.level, row.logger, row.message) == ("WARNING", log.name, "slow step stage_in")
    assert row.elapsed_s == 2.5


def test_nan_and_infinities_are_written_by_name_and_read_back_as_numbers(logger_to, tmp_path):
    """JSON has no NaN: they were written as null, so a diverged metric looked missing after ingest."""
    log, handler = logger_to()
    nan, inf = float("nan"), float("inf")
    log.info("loss %s", nan, extra={"loss": nan, "grad": inf, "step": -inf, "missing": None, "lr": 0.5})
    log.info("fine", extra={"loss": 0.25})
    handler.flush()
    first, second = read_events(tmp_path / "out.jsonlog")
    assert (first["loss"], first["grad"], first["step"], first["missing"]) == ("NaN", "Infinity", "-Infinity", None)
    assert first["args"] == ["NaN"] and first["message"] == "loss nan" and second["loss"] == 0.25
    with taskscope.open(":memory:") as store:
        store.ingest(tmp_path / "out.jsonlog")
        rows = store.sql("""SELECT attrs->>'loss' AS loss, TRY_CAST(attrs->>'loss' AS DOUBLE) AS loss_value,
                                   TRY_CAST(attrs->>'grad' AS DOUBLE) AS grad, TRY_CAST(attrs->>'step' AS DOUBLE) AS step,
                                   attrs->>'missing' AS missing, TRY_CAST(attrs->>'lr' AS DOUBLE) AS lr
                            FROM events ORDER BY ts""")
    assert rows.loss.tolist() == ["NaN", "0.25"] and rows.missing.isna().all()
    assert math.isnan(rows.loss_value[0]) and rows.loss_value[1] == 0.25
    assert (rows.grad[0], rows.step[0], rows.lr[0]) == (math.inf, -math.inf, 0.5)
