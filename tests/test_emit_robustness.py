"""taskscope.emit never crashes, blocks or quietly loses what it could write: forked children,
pipes without a reader, a full disk, a closed handler, records too long for ingest, messages
that are not strings. Filesystems and processes are real (a tmpfs mount, FIFOs, forks)."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import taskscope
from conftest import tiny_filesystem
from taskscope import MAX_LINE_BYTES
from taskscope.emit import WideEventHandler, get_logger


def attached(path: Path, name: str) -> tuple[logging.Logger, WideEventHandler]:
    handler = WideEventHandler(path, flush_interval=60)  # only explicit flushes, exits and forks write
    logger = logging.getLogger(f"test.robust.{name}.{id(handler)}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    return logger, handler


def log_and_return(name: str, count: int) -> None:
    log = logging.getLogger(name)
    for i in range(count):
        log.info("child record %d", i)


def test_children_forked_by_multiprocessing_write_their_last_records(tmp_path):
    log, handler = attached(tmp_path / "mp.jsonlog", "mp")
    log.info("parent before the fork")
    children = [multiprocessing.get_context("fork").Process(target=log_and_return, args=(log.name, 25))
                for _ in range(3)]
    for child in children:
        child.start()
    for child in children:
        child.join(60)
        assert child.exitcode == 0
    handler.close()
    messages = [json.loads(line)["message"] for line in (tmp_path / "mp.jsonlog").read_text().splitlines()]
    assert messages.count("child record 24") == 3 and len(messages) == 1 + 3 * 25


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
        assert report.bad_lines == 0 and store.sql("SELECT task_id FROM events").task_id.tolist() == [7]


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
