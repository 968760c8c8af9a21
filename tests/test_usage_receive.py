"""Batched receiving (taskscope.usage.receive): every datagram whole, in order, with or without recvmmsg."""

from __future__ import annotations

import contextlib
import random
import socket
import subprocess
import sys
import threading
import time

import pytest

from taskscope.usage.collector import Collector
from taskscope.usage import spool
from taskscope.usage.receive import batch_receiver


def read_all(receive) -> list[list[bytes]]:
    """The payloads of every batch `receive` returns until nothing waits; each record's header
    must hold its payload's length and a receive time of this second."""
    batches = []
    while True:
        try:
            received = receive()
        except BlockingIOError:
            return batches
        payloads = received.payloads()
        headers = [spool.HEADER.unpack(bytes(record[:spool.HEADER.size])) for record in received.buffers()]
        assert [length for _, length in headers] == [len(payload) for payload in payloads] == received.lengths.tolist()
        assert all(abs(ts - time.time()) < 60 and ts == received.stamp for ts, _ in headers)
        batches.append(payloads)


@contextlib.contextmanager
def receiving(batch: int, use_recvmmsg: bool):
    """(receive, send): a batch receiver on a non-blocking socket of 127.0.0.1, and a function
    sending it one datagram."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as receiver, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        receiver.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 * 1024 * 1024)
        receiver.bind(("127.0.0.1", 0))
        receiver.setblocking(False)
        yield (batch_receiver(receiver, batch=batch, use_recvmmsg=use_recvmmsg),
               lambda datagram: sender.sendto(datagram, receiver.getsockname()))


@pytest.mark.parametrize("use_recvmmsg", [True, False], ids=["recvmmsg", "recv"])
def test_every_datagram_whole_and_in_order(use_recvmmsg):
    rng = random.Random(6)
    # empty, the largest UDP payload, and a spread between; more than one batch of them
    sent = [b"", b"1" + b"x" * 65506] + [rng.randbytes(rng.randrange(1, 3000)) for _ in range(598)]
    with receiving(batch=64, use_recvmmsg=use_recvmmsg) as (receive, send):
        batches = []
        for start in range(0, len(sent), 100):  # in chunks, so the socket buffer never overflows
            for datagram in sent[start:start + 100]:
                send(datagram)
            batches += read_all(receive)
    assert [datagram for batch in batches for datagram in batch] == sent
    largest = max(len(batch) for batch in batches)
    if use_recvmmsg and sys.platform.startswith("linux"):
        assert 1 < largest <= 64  # several datagrams per call, never more than the batch
    else:
        assert largest == 1


@pytest.mark.parametrize("use_recvmmsg", [True, False], ids=["recvmmsg", "recv"])
def test_received_batches_written_to_the_spool_read_back_whole(tmp_path, use_recvmmsg):
    rng = random.Random(7)
    sent = [b"", b"1{}"] + [rng.randbytes(rng.randrange(1, 2000)) for _ in range(200)]
    writer = spool.SpoolWriter(tmp_path)
    with receiving(batch=32, use_recvmmsg=use_recvmmsg) as (receive, send):
        for datagram in sent:
            send(datagram)
        written, calls = [], 0
        while True:
            try:
                received = receive()
            except BlockingIOError:
                break
            segment, first, start, end = writer.write(received.records)  # before the next call reuses the slots
            assert first == len(written) + 1 and end - start == sum(received.lengths.tolist()) + spool.HEADER.size * len(received)
            written += received.payloads()
            calls += 1
    writer.close()
    assert written == sent
    if use_recvmmsg and sys.platform.startswith("linux"):
        assert calls < len(sent)  # batches, each written with one writev of its slots
    assert [payload for *_, payload in spool.read_segment(tmp_path / segment)] == sent


def test_nothing_waiting_is_blocking_io_error():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as receiver:
        receiver.bind(("127.0.0.1", 0))
        receiver.setblocking(False)
        with pytest.raises(BlockingIOError):
            batch_receiver(receiver)()


SENDER = r"""
import socket, sys, time
host, port, count, rate = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
started = time.perf_counter()
for number in range(count):
    if number % 50 == 0:
        time.sleep(max(0.0, started + number / rate - time.perf_counter()))
    # about the size of a Parsl level-3 message
    sock.sendto(b'1{"correlator": "busy-%d", "tracking_level": 3, "pad": "%s"}' % (number, b"x" * 400), (host, port))
"""


def collect_beside_busy_threads(tmp_path, count: int = 30_000, rate: float = 10_000) -> int:
    """Datagrams stored of `count` sent at `rate`/s while two threads of this process run pure
    Python throughout, as a dashboard served by the collector (`--ui-port`) does while it renders."""
    stop = threading.Event()

    def busy() -> None:
        while not stop.is_set():
            sum(number * number for number in range(10_000))

    collector = Collector(tmp_path / "busy.duckdb", port=0).start()
    threads = [threading.Thread(target=busy, daemon=True) for _ in range(2)]
    for thread in threads:
        thread.start()
    try:
        host, port = collector.address
        subprocess.run([sys.executable, "-c", SENDER, host, str(port), str(count), str(rate)], check=True, timeout=120)
        time.sleep(0.5)  # the last datagrams reach the receiver
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        stats = collector.stop()
    assert stats.received == stats.parsed  # everything received is stored
    return stats.parsed


@pytest.mark.alone  # other tests' load beside it (pytest-xdist workers) drops datagrams in the kernel
def test_busy_python_threads_do_not_starve_the_receiver(tmp_path):
    """The receiver needs the GIL once per batch, not once per datagram: 10,000 datagrams/s for
    3 s beside two threads that never stop running Python are all stored. (A one-`recv`-per-datagram
    receiver lost 8-91 % of 100,000 at 20,000/s beside them, though not reliably enough to assert.)"""
    assert collect_beside_busy_threads(tmp_path) == 30_000
