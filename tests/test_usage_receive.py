"""Batched receiving (taskscope.usage.receive): every datagram whole, in order, with or without recvmmsg."""

from __future__ import annotations

import random
import socket
import sys

import pytest

from taskscope.usage.receive import batch_receiver


def read_all(receive) -> list[list[bytes]]:
    """Every batch `receive` returns until nothing waits."""
    batches = []
    while True:
        try:
            batches.append(receive())
        except BlockingIOError:
            return batches


@pytest.mark.parametrize("use_recvmmsg", [True, False], ids=["recvmmsg", "recv"])
def test_every_datagram_whole_and_in_order(use_recvmmsg):
    rng = random.Random(6)
    # empty, the largest UDP payload, and a spread between; more than one batch of them
    sent = [b"", b"1" + b"x" * 65506] + [rng.randbytes(rng.randrange(1, 3000)) for _ in range(598)]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as receiver, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        receiver.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 * 1024 * 1024)
        receiver.bind(("127.0.0.1", 0))
        receiver.setblocking(False)
        receive = batch_receiver(receiver, batch=64, use_recvmmsg=use_recvmmsg)
        batches = []
        for start in range(0, len(sent), 100):  # in chunks, so the socket buffer never overflows
            for datagram in sent[start:start + 100]:
                sender.sendto(datagram, receiver.getsockname())
            batches += read_all(receive)
    assert [datagram for batch in batches for datagram in batch] == sent
    largest = max(len(batch) for batch in batches)
    if use_recvmmsg and sys.platform.startswith("linux"):
        assert 1 < largest <= 64  # several datagrams per call, never more than the batch
    else:
        assert largest == 1


def test_nothing_waiting_is_blocking_io_error():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as receiver:
        receiver.bind(("127.0.0.1", 0))
        receiver.setblocking(False)
        with pytest.raises(BlockingIOError):
            batch_receiver(receiver)()
