"""taskscope.emit never crashes, blocks or quietly loses what it could write: forked children,
pipes without a reader, a full disk, a closed handler, records too long for ingest, messages
that are not strings. Filesystems and processes are real (a tmpfs mount, FIFOs, forks)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import taskscope
from conftest import tiny_filesystem
from taskscope import MAX_LINE_BYTES
from taskscope.emit import WideEventHandler, bind, get_logger


def attached(path: Path, name: str) -> tuple[logging.Logger, WideEventHandler]:
    handler = WideEventHandler(path, flush_interval=60)  # only explicit flushes, exits and forks write
    logger = logging.getLogger(f"test.robust.{name}.{id(handler)}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    return logger, handler


def run_clean(script: str, *args: str) -> subprocess.CompletedProcess:
    """Run a forking script in a new interpreter (with warnings shown): in this test process,
    threads of other libraries (DuckDB's, after an ingest test) would make Python 3.12+ warn
    about any fork, whoever else runs threads."""
    return subprocess.run([sys.executable, "-W", "always::DeprecationWarning", "-c", script, *args],
                          capture_output=True, text=True, timeout=120)


def assert_no_fork_warning(stderr: str) -> None:
    assert "multi-threaded" not in stderr and "DeprecationWarning" not in stderr, stderr


MULTIPROCESSING_CHILDREN = textwrap.dedent("""
    import logging, multiprocessing, sys
    from taskscope.emit import WideEventHandler
    handler = WideEventHandler(sys.argv[1], flush_interval=60)  # only the exit flushes write
    log = logging.getLogger("mp"); log.addHandler(handler); log.setLevel(logging.INFO)

    def log_and_return(count):
        for i in range(count):
            log.info("child record %d", i)

    log.info("parent before the fork")  # starts the flusher: it runs when the children are forked
    children = [multiprocessing.get_context("fork").Process(target=log_and_return, args=(25,)) for _ in range(3)]
    for child in children:
        child.start()
    for child in children:
        child.join(60)
    print(*[child.exitcode for child in children])
""")


def test_children_forked_by_multiprocessing_write_their_last_records(tmp_path):
    done = run_clean(MULTIPROCESSING_CHILDREN, str(tmp_path / "mp.jsonlog"))
    assert done.stdout.split() == ["0", "0", "0"], done.stderr
    assert_no_fork_warning(done.stderr)
    messages = [json.loads(line)["message"] for line in (tmp_path / "mp.jsonlog").read_text().splitlines()]
    assert messages.count("child record 24") == 3 and len(messages) == 1 + 3 * 25


FORKER = textwrap.dedent("""
    import logging, os, sys, threading, time
    from taskscope.emit import WideEventHandler, get_logger
    handler = WideEventHandler(sys.argv[1], flush_interval=0.02)
    root = logging.getLogger(); root.addHandler(handler); root.setLevel(logging.INFO)
    log = get_logger("forker") if sys.argv[2] == "fast" else logging.getLogger("forker")

    def flushed(count):  # written by the background thread, not by an explicit flush
        deadline = time.monotonic() + 30
        while handler.written_records < count and time.monotonic() < deadline:
            time.sleep(0.01)
        return handler.written_records >= count

    log.info("before the forks")
    assert flushed(1) and any(t.name == "taskscope-flusher" for t in threading.enumerate())
    pid = os.fork()
    if pid == 0:
        log.info("from the os.fork child")
        os._exit(0 if flushed(handler.written_records + 1) else 1)  # by the child's own flusher
    assert os.waitpid(pid, 0)[1] == 0
    log.info("parent after the forks")
    print("flushed" if flushed(2) else "not flushed", handler.fast_path_records)
""")


@pytest.mark.parametrize("logger_kind", ["stdlib", "fast"])
def test_forking_with_the_flusher_running_warns_of_no_thread_and_flushing_goes_on(tmp_path, logger_kind):
    """The flusher is ended before a fork (Python 3.12+ warns that forking a process that runs
    threads may deadlock the child) and the next record starts it again, in parent and child."""
    path = tmp_path / "fork.jsonlog"
    done = run_clean(FORKER, str(path), logger_kind)
    assert done.returncode == 0, done.stderr
    assert_no_fork_warning(done.stderr)
    assert done.stdout.split() == ["flushed", "2" if logger_kind == "fast" else "0"]
    messages = sorted(json.loads(line)["message"] for line in path.read_text().splitlines())
    assert messages == sorted(["before the forks", "from the os.fork child", "parent after the forks"])


@pytest.mark.timeout(120)  # the bug was a hang: fail rather than stall the suite
def test_a_pipe_without_reader_neither_blocks_exit_nor_fork(tmp_path):
    fifo = tmp_path / "pipe.jsonlog"
    os.mkfifo(fifo)
    script = textwrap.dedent(f"""
        import logging, os
        from taskscope.emit import WideEventHandler
        handler = WideEventHandler({str(fifo)!r}, flush_interval=0.05)
        log = logging.getLogger("fifo"); log.addHandler(handler); log.setLevel(logging.INFO)
        log.info("nobody reads this")
        handler.flush()
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
        print("done", handler.dropped_records)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.split() == ["done", "1"], done.stderr
    assert done.stderr.count("taskscope: cannot write") == 1


def test_a_full_disk_counts_what_was_written_and_writing_resumes_when_space_is_freed(tmp_path, capfd):
    with tiny_filesystem(tmp_path / "small") as small:
        log, handler = attached(small / "app.jsonlog", "full")
        for i in range(3000):
            log.info("record %d of a run that fills its disk %s", i, "x" * 40)
        handler.flush()
        on_disk = (small / "app.jsonlog").read_bytes()
        assert handler.written_records == on_disk.count(b"\n") > 0
        assert handler.written_records + handler.dropped_records == 3000
        (small / "app.jsonlog").unlink()  # space is freed
        log.info("after the space came back")
        handler.flush()
        assert json.loads((small / "app.jsonlog").read_text())["message"] == "after the space came back"
        handler.close()
    assert capfd.readouterr().err.count("taskscope: cannot write") == 1


def test_records_logged_after_close_are_dropped_and_counted_not_queued(tmp_path, capfd):
    log, handler = attached(tmp_path / "closed.jsonlog", "closed")
    log.info("before close")
    handler.close()
    for i in range(1000):
        log.info("after close %d", i)
    assert handler.dropped_records == 1000 and len(handler._queue) == 0  # noqa: SLF001
    assert (tmp_path / "closed.jsonlog").read_text().count("\n") == 1
    assert capfd.readouterr().err.count("after its handler was closed") == 1


@pytest.mark.parametrize("logger_kind", ["stdlib", "fast"])
def test_a_record_too_long_for_ingest_is_cut_and_keeps_its_ids(tmp_path, logger_kind):
    log, handler = attached(tmp_path / "big.jsonlog", f"big{logger_kind}")
    if logger_kind == "fast":
        log = get_logger(log.name)
    log.info("payload %s", "y" * (3 << 20), extra={"task_id": 7, "run_id": "r1"})
    handler.close()
    line = (tmp_path / "big.jsonlog").read_bytes()
    assert len(line) <= MAX_LINE_BYTES
    record = json.loads(line)
    assert record["task_id"] == 7 and "taskscope: cut to fit a line" in record["message"]
    with taskscope.open(":memory:") as store:
        report = store.ingest(tmp_path / "big.jsonlog")
        assert report.bad_lines == 0 and store.sql("SELECT task_id FROM events").task_id.tolist() == ["7"]


@pytest.mark.parametrize("logger_kind", ["stdlib", "fast"])
def test_a_message_that_is_not_a_string_reads_as_str_does(tmp_path, logger_kind):
    log, handler = attached(tmp_path / "obj.jsonlog", f"obj{logger_kind}")
    if logger_kind == "fast":
        log = get_logger(log.name)
    log.error(ValueError("bad thing"))
    handler.close()
    assert json.loads((tmp_path / "obj.jsonlog").read_text())["message"] == "bad thing"


def test_a_relative_path_is_fixed_when_the_handler_is_made(tmp_path, monkeypatch):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    monkeypatch.chdir(tmp_path / "a")
    log, handler = attached(Path("run/app.jsonlog"), "cwd")
    monkeypatch.chdir(tmp_path / "b")
    log.info("written where the handler was made")
    handler.close()
    assert (tmp_path / "a" / "run" / "app.jsonlog").exists() and not (tmp_path / "b" / "run").exists()


@pytest.mark.timeout(60)
def test_sigterm_flush_does_not_wait_forever_for_the_held_lines_lock(tmp_path):
    """SIGTERM's flush runs on the thread it interrupts; if that thread was holding the DFK
    handler's lock on the lines held for the run id, waiting for it would never end."""
    from taskscope.parsl.logconfig import _RunIdLearningHandler

    handler = _RunIdLearningHandler(tmp_path / "parsl.jsonlog")
    logging.getLogger("test.robust.held").addHandler(handler)
    with handler._held_lock:  # noqa: SLF001 - as `handle` holds it when the signal arrives
        handler.flush(timeout=0.5)  # returns (before the fix: waited forever, and the timeout failed the test)
    logging.getLogger("test.robust.held").removeHandler(handler)
    handler.close()


@pytest.mark.parametrize("logger_kind", ["stdlib", "fast"])
def test_a_record_too_long_because_of_its_extras_cuts_them_and_keeps_its_ids_and_other_fields(tmp_path, logger_kind):
    """The biggest values are cut (each marked), not every field but the time, level and logger."""
    log, handler = attached(tmp_path / "extra.jsonlog", f"extra{logger_kind}")
    if logger_kind == "fast":
        log = get_logger(log.name)
    with bind(run_id="r1", task_id="t7", try_id=0):
        log.info("uploaded %s", "result", extra={"executor_label": "htex", "result": "x" * (2 << 20),
                                                   "rows": list(range(300_000))})
    handler.close()
    line = (tmp_path / "extra.jsonlog").read_bytes()
    assert len(line) <= MAX_LINE_BYTES and handler.written_records == 1
    record = json.loads(line)
    assert (record["message"], record["executor_label"], record["funcName"]) == (
        "uploaded result", "htex", "test_a_record_too_long_because_of_its_extras_cuts_them_and_keeps_its_ids_and_other_fields")
    assert record["result"].startswith("xxx") and record["result"].endswith("bytes]")
    assert "taskscope: cut to fit a line" in record["result"] and "taskscope: cut to fit a line" in record["rows"]
    with taskscope.open(":memory:") as store:
        assert store.ingest(tmp_path / "extra.jsonlog").bad_lines == 0
        row = store.sql("SELECT run_id, task_id, try_id, executor_label FROM events").iloc[0]
    assert (row.run_id, row.task_id, row.try_id, row.executor_label) == ("r1", "t7", 0, "htex")


@pytest.mark.parametrize("change", ["removed", "renamed"])
def test_a_log_file_removed_or_rotated_away_is_made_again_at_its_path(tmp_path, change):
    """A deleted file took every later record with it, silently; a logrotate-style rename kept
    them going to the renamed file."""
    path = tmp_path / "app.jsonlog"
    log, handler = attached(path, f"rotate{change}")
    log.info("before")
    handler.flush()
    if change == "removed":
        path.unlink()
    else:
        path.rename(tmp_path / "app.jsonlog.1")
    log.info("after")
    handler.close()
    assert [json.loads(line)["message"] for line in path.read_text().splitlines()] == ["after"]
    if change == "renamed":
        assert [json.loads(line)["message"] for line in (tmp_path / "app.jsonlog.1").read_text().splitlines()] == ["before"]
    assert (handler.written_records, handler.dropped_records) == (2, 0)


@pytest.mark.parametrize("logger_kind", ["stdlib", "fast"])
def test_a_lone_surrogate_costs_its_character_not_the_message(tmp_path, logger_kind):
    log, handler = attached(tmp_path / "surrogate.jsonlog", f"surrogate{logger_kind}")
    if logger_kind == "fast":
        log = get_logger(log.name)
    log.info("surrogate in the message \ud800 and %s", "x", extra={"value": "a\udc00b", "pair": "\ud83c\udf89"})
    handler.close()
    record = json.loads((tmp_path / "surrogate.jsonlog").read_text())
    assert record["message"] == "surrogate in the message \ufffd and x"
    assert (record["value"], record["pair"]) == ("a\ufffdb", "\U0001f389")


def test_each_kind_of_problem_warns_once(tmp_path, capfd):
    """A full disk's warning used to silence the later one about records logged after close."""
    log, handler = attached(Path("/dev/full"), "full")
    log.info("nowhere to go")
    handler.flush()
    handler.close()
    log.info("after close")
    log.info("after close again")
    assert handler.dropped_records == 3
    err = capfd.readouterr().err
    assert err.count("taskscope: cannot write /dev/full") == 1
    assert err.count("after its handler was closed") == 1


APPENDING_PROCESSES = textwrap.dedent("""
    import logging, multiprocessing, os, sys
    from taskscope.emit import WideEventHandler

    def append(path, count):  # each record through a new handler: each opens the file while others append
        log = logging.getLogger("append"); log.setLevel(logging.INFO); log.propagate = False
        for i in range(count):
            handler = WideEventHandler(path, flush_interval=60)
            log.addHandler(handler)
            log.info("process %d line %d %s", os.getpid(), i, "x" * 700)  # lines that cross page boundaries
            handler.close()
            log.removeHandler(handler)

    children = [multiprocessing.get_context("fork").Process(target=append, args=(sys.argv[1], 300)) for _ in range(8)]
    for child in children:
        child.start()
    for child in children:
        child.join(120)
    print(*[child.exitcode for child in children])
""")


def test_processes_opening_a_file_others_append_to_leave_no_empty_line(tmp_path):
    """Opening a file whose last line looks cut ends that line first; a line another process was
    appending at that moment looked cut too, and got an empty line after it."""
    path = tmp_path / "shared.jsonlog"
    done = run_clean(APPENDING_PROCESSES, str(path))
    assert done.stdout.split() == ["0"] * 8, done.stderr
    lines = path.read_bytes().split(b"\n")
    assert lines.pop() == b"" and b"" not in lines
    assert len(lines) == 8 * 300 and all(json.loads(line)["message"].startswith("process ") for line in lines)
