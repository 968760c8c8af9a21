"""taskscope.emit at the end of a process: exit and SIGTERM wait a bounded time, even for a
write stuck on a pipe nobody reads; a SIGTERM that arrives during the exit flush lets it finish;
multiprocessing children flush when they end, whatever their start method; and every record
logged is always written, dropped, queued or in flight. Processes, pipes and signals are real."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from taskscope.emit import WideEventHandler, get_logger


def reader_that_never_reads(tmp_path: Path) -> tuple[Path, int]:
    """A FIFO and its read end, held open (a writer's open succeeds) and never read (the writer's
    writes block once the pipe's 64 KiB are full): a stuck collector or `tail`."""
    fifo = tmp_path / "pipe.jsonlog"
    os.mkfifo(fifo)
    return fifo, os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)


def read_lines_until_eof(fd: int) -> list[bytes]:
    """Every line the FIFO's writers write until the last of them closes it."""
    os.set_blocking(fd, True)
    data = b""
    while chunk := os.read(fd, 1 << 16):
        data += chunk
    return data.splitlines(keepends=True)


def wait_until(condition, what: str, timeout: float = 60.0) -> None:
    """Wait for `condition` (a correctness wait with a generous bound, not a timing assertion)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.01)


def has_open(pid: int, path: Path) -> bool:
    """Whether process `pid` has `path` open."""
    try:
        return any(os.readlink(f"/proc/{pid}/fd/{fd}") == str(path) for fd in os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return False


EXIT_WITH_A_STUCK_PIPE = textwrap.dedent("""
    import atexit, json, sys
    atexit.register(lambda: print(json.dumps(handler.stats()), flush=True))  # runs last, after logging.shutdown
    import logging
    from taskscope.emit import WideEventHandler, get_logger
    from taskscope.emit import handler as handler_module
    handler_module.EXIT_FLUSH_TIMEOUT = 2.0  # 10 s by default
    handler = WideEventHandler(sys.argv[1], flush_interval=0.05)
    root = logging.getLogger(); root.addHandler(handler); root.setLevel(logging.INFO)
    log = get_logger("stuck")
    for i in range(5000):
        log.info("record %d %s", i, "x" * 100)
""")


@pytest.mark.timeout(180)
def test_exit_waits_a_bounded_time_for_a_write_stuck_on_a_pipe_and_counts_every_record(tmp_path):
    """stdlib's `logging.shutdown()` flushes every handler at exit without a timeout: with a write
    stuck on a pipe nobody reads, the program never ended."""
    fifo, reader = reader_that_never_reads(tmp_path)
    try:
        done = subprocess.run([sys.executable, "-c", EXIT_WITH_A_STUCK_PIPE, str(fifo)], capture_output=True,
                              text=True, timeout=120)  # the bug: no end at all
    finally:
        os.close(reader)
    assert done.returncode == 0, done.stderr
    stats = json.loads(done.stdout)
    assert stats["dropped_records"] > 0
    assert stats["written_records"] + stats["dropped_records"] + stats["queued_records"] + stats["in_flight_records"] == 5000
    assert done.stderr.count("could not be written before the process exited") == 1, done.stderr


EXIT_GIVES_UP_ONCE = textwrap.dedent("""
    import atexit, json, sys, time
    atexit.register(lambda: print(json.dumps({"exit_s": time.monotonic() - exit_began,
                                              "stats": [handler.stats() for handler in handlers]}), flush=True))
    import logging
    from taskscope.emit import WideEventHandler, get_logger
    from taskscope.emit import handler as handler_module
    handler_module.EXIT_FLUSH_TIMEOUT = 3.0  # 10 s by default
    handlers = [WideEventHandler(path, flush_interval=60) for path in sys.argv[1:]]  # only the exit flush writes
    root = logging.getLogger(); root.setLevel(logging.INFO)
    for handler in handlers:
        root.addHandler(handler)
    log = get_logger("stuck")
    for i in range(2000):
        log.info("record %d %s", i, "x" * 100)
    atexit.register(lambda: globals().update(exit_began=time.monotonic()))  # runs just before taskscope's
""")


@pytest.mark.timeout(180)
def test_exit_gives_up_on_stuck_writes_once_not_once_a_handler(tmp_path):
    """Three handlers writing to pipes nobody reads: the exit waits for a stuck write once, then
    drops and counts what is left in every handler, rather than waiting for each in turn."""
    fifos = [tmp_path / f"pipe{number}.jsonlog" for number in range(3)]
    readers = []
    try:
        for fifo in fifos:
            os.mkfifo(fifo)
            readers.append(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK))
        done = subprocess.run([sys.executable, "-c", EXIT_GIVES_UP_ONCE, *map(str, fifos)], capture_output=True,
                              text=True, timeout=120)
    finally:
        for reader in readers:
            os.close(reader)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    for stats in result["stats"]:
        assert stats["dropped_records"] > 0 and stats["written_records"] + stats["dropped_records"] == 2000, stats
    assert 3.0 <= result["exit_s"] < 6.0  # one wait of 3 s (one a handler: 9 s)


@pytest.mark.timeout(120)  # the bug was a hang (close() wrote to the full pipe, and waited for room for ever)
def test_while_a_write_is_blocked_written_dropped_queued_and_in_flight_add_up_to_every_record(tmp_path):
    fifo, reader = reader_that_never_reads(tmp_path)
    handler = WideEventHandler(fifo, flush_interval=0.05)
    logger = logging.getLogger(f"test.exit.blocked.{id(handler)}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        log = get_logger(logger.name)
        for i in range(3000):
            log.info("record %d %s", i, "x" * 100)
        wait_until(lambda: handler.in_flight_records > 0, "the flusher's write blocked on the full pipe")
        for _ in range(10):  # blocked: the counters stand still, and add up
            assert (handler.written_records + handler.dropped_records + handler.queued_records
                    + handler.in_flight_records) == 3000
            time.sleep(0.02)
        assert handler.queued_records > 0 and handler.dropped_records == 0
        os.set_blocking(reader, True)
        data = b""
        while data.count(b"\n") < 3000:  # the reader reads again: the rest of the cut write comes first
            data += os.read(reader, 1 << 16)
        handler.flush()
        messages = [json.loads(line)["message"] for line in data.splitlines()]
        assert messages == [f"record {i} {'x' * 100}" for i in range(3000)]
        assert (handler.written_records, handler.in_flight_records, handler.queued_records) == (3000, 0, 0)
    finally:
        logger.removeHandler(handler)
        handler.close()
        os.close(reader)


SIGTERM_DURING_THE_EXIT_FLUSH = textwrap.dedent("""
    import atexit, logging, sys
    from taskscope.emit import WideEventHandler, flush_on_sigterm, get_logger
    from taskscope.emit import handler as handler_module
    handler_module.SIGTERM_FLUSH_TIMEOUT = float(sys.argv[2])
    assert flush_on_sigterm()
    handler = WideEventHandler(sys.argv[1], flush_interval=60)  # only the exit flush writes
    handler.stats_path = handler.path.with_name("stats.json")
    root = logging.getLogger(); root.addHandler(handler); root.setLevel(logging.INFO)
    log = get_logger("ending")
    for i in range(5000):
        log.info("record %d %s", i, "x" * 100)
    atexit.register(lambda: print("exit flush starting", flush=True))  # runs just before taskscope's
""")


def start_ending_with_a_sigterm(fifo: Path, sigterm_flush_timeout: float) -> subprocess.Popen:
    """A process whose exit flush is blocked on the FIFO (nobody reads it yet) when SIGTERM arrives."""
    process = subprocess.Popen([sys.executable, "-c", SIGTERM_DURING_THE_EXIT_FLUSH, str(fifo), str(sigterm_flush_timeout)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "exit flush starting"
    wait_until(lambda: has_open(process.pid, fifo), "the exit flush opened the FIFO")
    process.send_signal(signal.SIGTERM)  # inside the exit flush, which holds the write lock and records in flight
    return process


@pytest.mark.timeout(180)
def test_a_sigterm_during_the_exit_flush_lets_it_finish_then_dies_of_sigterm(tmp_path):
    """As when `Pool.terminate()` stops a worker that is ending: SIGTERM's handler waited for the
    write lock its own thread held, gave up and killed the process with the records in flight."""
    fifo, reader = reader_that_never_reads(tmp_path)
    try:
        process = start_ending_with_a_sigterm(fifo, sigterm_flush_timeout=60)
        lines = read_lines_until_eof(reader)  # the reader reads again: the interrupted flush goes on
        _, err = process.communicate(timeout=120)
    finally:
        os.close(reader)
    assert process.returncode == -signal.SIGTERM, err
    assert len(lines) == 5000
    assert [json.loads(line)["message"] for line in lines] == [f"record {i} {'x' * 100}" for i in range(5000)]
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert (stats["written_records"], stats["dropped_records"]) == (5000, 0)


@pytest.mark.timeout(180)
def test_a_sigterm_flush_that_cannot_finish_is_bounded_and_counts_what_it_could_not_write(tmp_path):
    fifo, reader = reader_that_never_reads(tmp_path)
    try:
        process = start_ending_with_a_sigterm(fifo, sigterm_flush_timeout=1.0)
        _, err = process.communicate(timeout=120)  # nobody ever reads: the process still ends
    finally:
        os.close(reader)
    assert process.returncode == -signal.SIGTERM, err
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert stats["dropped_records"] > 0 and stats["written_records"] + stats["dropped_records"] == 5000
    assert (stats["queued_records"], stats["in_flight_records"]) == (0, 0)
    assert err.count("could not be written before SIGTERM ended the process") == 1, err


CHILDREN = textwrap.dedent("""
    import concurrent.futures, logging, multiprocessing, sys
    from taskscope.emit import WideEventHandler, get_logger

    def attach(path):
        root = logging.getLogger()
        if not any(isinstance(handler, WideEventHandler) for handler in root.handlers):
            root.setLevel(logging.INFO)
            root.addHandler(WideEventHandler(path, flush_interval=60))  # only the flush as the child ends writes

    def process(path, number):
        attach(path)
        get_logger("child").info("process %d", number)

    def task(number):
        get_logger("child").info("task %d", number)
        return number

    if __name__ == "__main__":
        path, method = sys.argv[1], sys.argv[2]
        context = multiprocessing.get_context(method)
        children = [context.Process(target=process, args=(path, number)) for number in range(3)]
        for child in children:
            child.start()
        for child in children:
            child.join(60)
        with concurrent.futures.ProcessPoolExecutor(2, mp_context=context, initializer=attach, initargs=(path,)) as pool:
            assert sorted(pool.map(task, range(10))) == list(range(10))
        pool = context.Pool(2, initializer=attach, initargs=(path,))
        assert pool.map(task, range(10, 20)) == list(range(10, 20))
        pool.close()
        pool.join()
        print(*[child.exitcode for child in children])
""")


@pytest.mark.timeout(300)
@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_multiprocessing_children_that_make_their_handler_flush_when_they_end(tmp_path, method):
    """A `forkserver` child (Python 3.14's default on Linux) ends with os._exit, without atexit,
    and was forked by no process of ours: it lost every record."""
    script = tmp_path / "children.py"
    script.write_text(CHILDREN)
    path = tmp_path / "children.jsonlog"
    done = subprocess.run([sys.executable, str(script), str(path), method], capture_output=True, text=True,
                          timeout=240, cwd=tmp_path)
    assert done.returncode == 0 and done.stdout.split() == ["0", "0", "0"], done.stderr
    messages = sorted(json.loads(line)["message"] for line in path.read_text().splitlines())
    assert messages == sorted([f"process {number}" for number in range(3)] + [f"task {number}" for number in range(20)])


SIGTERM_WHILE_A_THREAD_LOGS_WITHOUT_PAUSE = textwrap.dedent("""
    import logging, sys, threading, time
    from taskscope.emit import WideEventHandler, flush_on_sigterm, get_logger
    assert flush_on_sigterm()
    handler = WideEventHandler(sys.argv[1], flush_interval=0.05)
    handler.stats_path = handler.path.with_name("stats.json")
    root = logging.getLogger(); root.addHandler(handler); root.setLevel(logging.INFO)
    fast, stdlib = get_logger("busy"), logging.getLogger("busy.stdlib")

    def without_pause():  # as Parsl's manager's monitoring thread once its queue's server is gone
        number = 0
        while True:
            fast.info("record %d", number)
            try:
                raise EOFError("the queue's server has gone")
            except EOFError:
                stdlib.exception("record %d failed", number)
            number += 1

    threading.Thread(target=without_pause, daemon=True).start()
    print("logging", flush=True)
    time.sleep(120)
""")


def test_what_another_thread_logs_while_the_last_flush_writes_is_left_queued_not_dropped(tmp_path, monkeypatch, capsys):
    """The last flush (SIGTERM's, exit's) counted as dropped, with a warning that a write did not
    end in time, what other threads logged while it wrote, though no write was stuck: Parsl's
    manager, stopped with SIGTERM, has a thread that logs in a loop once its queue's server is
    gone (`dropped_records` 5, 8, 20 and 112 in loaded runs of tests/test_wide_parsl.py)."""
    handler = WideEventHandler(tmp_path / "last.jsonlog", flush_interval=3600)
    logger = logging.getLogger(f"test.exit.last.{id(handler)}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    log = get_logger(logger.name)
    for number in range(10):
        log.info("before %d", number)
    real_write, during = handler._write, []  # noqa: SLF001

    def write_while_another_thread_logs(data, count, *wait):
        if not during:  # the flush has taken the queue: another thread logs while it writes
            during.append(threading.Thread(target=log.info, args=("during",)))
            during[0].start()
            during[0].join()
        return real_write(data, count, *wait)

    monkeypatch.setattr(handler, "_write", write_while_another_thread_logs)
    try:
        handler._flush_before_end("before SIGTERM ended the process", count_in_flight=True)  # noqa: SLF001 - as SIGTERM does
        assert (handler.written_records, handler.dropped_records, handler.queued_records) == (10, 0, 1)
        assert "could not be written" not in capsys.readouterr().err
    finally:
        logger.removeHandler(handler)
        handler.close()
    assert [json.loads(line)["message"] for line in (tmp_path / "last.jsonlog").read_text().splitlines()] == [
        *[f"before {number}" for number in range(10)], "during"]  # close() wrote it


@pytest.mark.timeout(180)
def test_a_sigterm_while_another_thread_logs_without_pause_drops_nothing(tmp_path):
    """The same in a real process (as Parsl's manager): the SIGTERM flush writes what was logged
    before it began; what the other thread logs while it runs dies with the process, as in a
    SIGKILL's last flush interval, and is not a drop."""
    path = tmp_path / "busy.jsonlog"
    process = subprocess.Popen([sys.executable, "-c", SIGTERM_WHILE_A_THREAD_LOGS_WITHOUT_PAUSE, str(path)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "logging"
    wait_until(lambda: path.exists() and path.stat().st_size > 100_000, "the flusher wrote some records")
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == -signal.SIGTERM, err
    assert "could not be written" not in err, err
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert stats["dropped_records"] == 0, stats
    messages = [json.loads(line)["message"] for line in path.read_text().splitlines()]
    assert len(messages) >= stats["written_records"] > 0
    assert messages == [f"record {number // 2}" + (" failed" if number % 2 else "") for number in range(len(messages))]


EXIT_WITH_A_SLOW_READER = textwrap.dedent("""
    import atexit, json, sys
    atexit.register(lambda: print(json.dumps(handler.stats()), flush=True))  # runs last, after logging.shutdown
    import logging
    from taskscope.emit import WideEventHandler, get_logger
    from taskscope.emit import handler as handler_module
    handler_module.EXIT_FLUSH_TIMEOUT = 1.0  # 10 s by default
    handler = WideEventHandler(sys.argv[1], flush_interval=60)  # only the exit flush writes
    root = logging.getLogger(); root.addHandler(handler); root.setLevel(logging.INFO)
    log = get_logger("slow")
    for i in range(2000):
        log.info("record %d %s", i, "x" * 50)
""")


@pytest.mark.timeout(180)
def test_exit_waits_for_a_pipe_that_takes_its_lines_slowly_for_longer_than_its_bound(tmp_path):
    """Exit's bound is on a write that makes no progress, not on the exit's total time: a reader
    that keeps reading, more slowly than the exit flush writes, got every line up to the bound
    and the rest was dropped (under load, so did a file whose flush waited for a slow write)."""
    fifo = tmp_path / "pipe.jsonlog"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        process = subprocess.Popen([sys.executable, "-c", EXIT_WITH_A_SLOW_READER, str(fifo)],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        data, started = b"", None
        while True:  # 4 KiB every 10 ms: about 3 s for the exit flush's 1 MB, three times its bound
            time.sleep(0.01)
            try:
                chunk = os.read(reader, 4096)
            except BlockingIOError:
                continue
            if chunk:
                started = started or time.monotonic()
                data += chunk
            elif process.poll() is not None:
                break
        out, err = process.communicate(timeout=60)
    finally:
        os.close(reader)
    assert process.returncode == 0, err
    stats = json.loads(out)
    assert (stats["written_records"], stats["dropped_records"]) == (2000, 0), (stats, err)
    assert [json.loads(line)["message"] for line in data.splitlines()] == [f"record {i} {'x' * 50}" for i in range(2000)]
    assert time.monotonic() - started > 1.5  # the reader took longer than the bound


@pytest.mark.timeout(120)
def test_a_flush_writes_what_was_queued_when_it_began_and_ends_while_another_thread_logs(tmp_path, monkeypatch):
    """A flush took records from the queue until it was empty: a thread logging faster than the
    file took the lines kept the flush (and exit and SIGTERM, which wait for it) going for ever."""
    handler = WideEventHandler(tmp_path / "busy.jsonlog", flush_interval=3600)
    logger = logging.getLogger(f"test.exit.busy.{id(handler)}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    real_write, slow = handler._write, threading.Event()  # noqa: SLF001
    slow.set()

    def slow_write(data, count, *wait):  # a disk that takes 5 000 records a second
        if slow.is_set():
            time.sleep(0.1)
        return real_write(data, count, *wait)

    monkeypatch.setattr(handler, "_write", slow_write)
    log, stop = get_logger(logger.name), threading.Event()

    def without_pause():  # about 50 000 records a second
        number = 0
        while not stop.is_set():
            for _ in range(50):
                log.info("record %d", number)
                number += 1
            time.sleep(0.001)

    busy = threading.Thread(target=without_pause)
    busy.start()
    flushing = threading.Thread(target=handler.flush)
    try:
        wait_until(lambda: handler.queued_records > 2000, "records queued")
        flushing.start()
        flushing.join(10)
        went_on = flushing.is_alive()
    finally:
        stop.set()
        slow.clear()
        busy.join()
        if flushing.ident is not None:
            flushing.join()
        logger.removeHandler(handler)
        handler.close()
    assert not went_on, "the flush went on while the other thread logged"
    assert handler.written_records + handler.dropped_records + handler.queued_records == handler.fast_path_records
    assert handler.dropped_records == 0
