"""Reading many datagrams per system call: `recvmmsg(2)` on Linux, one `recv` each elsewhere.

A Python `recv` loop pays a system call and an interpreter round trip per datagram, and needs
the GIL for each; under a burst that is most of a receiver's time. `recvmmsg` fills up to
`BATCH` buffers in one call (made through ctypes, releasing the GIL), so the receiver needs the
GIL once per batch: it keeps up even while other threads (the writer, a served dashboard) run.
No sender address is asked for (`msg_name` is NULL), so none is ever read.

Datagrams come back already laid out as records of the collector's spool (`taskscope.usage.spool`:
a header, then the payload), ready to be written with one `writev`, with no Python object per datagram.

>>> receive = batch_receiver(sock)                          # doctest: +SKIP
>>> received = receive()  # BlockingIOError when nothing waits (non-blocking socket)  # doctest: +SKIP
>>> spool_writer.write(received.records)                    # doctest: +SKIP
"""

from __future__ import annotations

import ctypes
import mmap
import socket
import time
from typing import Callable

import numpy as np

from taskscope.usage import spool
from taskscope.usage._libc import IoVec, last_error, libc_function

#: larger than any UDP payload, so an oversized datagram is seen (and spooled) whole
RECEIVE_BUFFER = 65536
#: datagrams read by one recvmmsg call at most
BATCH = 1024
_MSG_DONTWAIT = 0x40
#: what a ~500-byte datagram takes of a socket's receive buffer on Linux (its skb's truesize)
KERNEL_BYTES_PER_DATAGRAM = 2304
#: datagrams/s a bare Python recv loop reads on loopback (the rate a pause must allow for)
FLAT_OUT_RATE = 200_000
MAX_PAUSE = 0.005


# the spool's record header (spool.HEADER, "<dI") as a numpy record, for filling many at once
_HEADER_DTYPE = np.dtype([("ts", "<f8"), ("length", "<u4")])
assert _HEADER_DTYPE.itemsize == spool.HEADER.size


class _MsgHdr(ctypes.Structure):
    _fields_ = [("msg_name", ctypes.c_void_p), ("msg_namelen", ctypes.c_uint32),
                ("msg_iov", ctypes.POINTER(IoVec)), ("msg_iovlen", ctypes.c_size_t),
                ("msg_control", ctypes.c_void_p), ("msg_controllen", ctypes.c_size_t),
                ("msg_flags", ctypes.c_int)]


class _MMsgHdr(ctypes.Structure):
    _fields_ = [("msg_hdr", _MsgHdr), ("msg_len", ctypes.c_uint)]


_RECVMMSG = libc_function("recvmmsg", [ctypes.c_int, ctypes.POINTER(_MMsgHdr), ctypes.c_uint, ctypes.c_int,
                                       ctypes.c_void_p], ctypes.c_int)


class Received:
    """The datagrams one call read, each already laid out as a spool record.

    `records` is what `SpoolWriter.write` puts in the spool as is: for each datagram the spool
    header (`stamp`, the payload's length) followed by the payload, as a list of buffers or as
    `spool.Scattered` iovecs into the receiver's memory, valid only until its next call.
    `lengths` holds the payload lengths.
    """

    __slots__ = ("records", "lengths", "stamp")

    def __init__(self, records: list, lengths: np.ndarray, stamp: float):
        self.records, self.lengths, self.stamp = records, lengths, stamp

    def __len__(self) -> int:
        return len(self.records)

    def buffers(self) -> list:
        """The records as Python buffers (header, then payload), in the order received."""
        return self.records.buffers() if isinstance(self.records, spool.Scattered) else self.records

    def payloads(self) -> list[bytes]:
        """The payloads as bytes (copies), in the order received."""
        return [bytes(record[spool.HEADER.size:]) for record in self.buffers()]


def batch_receiver(sock: socket.socket, batch: int = BATCH, use_recvmmsg: bool = True) -> Callable[[], Received]:
    """A function returning the datagrams waiting on `sock` (at least one) as spool records.

    It raises `BlockingIOError` when none waits: put `sock` in non-blocking mode and wait with
    `select` between calls. Its `batch` is the most one call returns: without recvmmsg (not
    Linux, or `use_recvmmsg=False`), 1.

    >>> sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); sock.bind(("127.0.0.1", 0))
    >>> sock.setblocking(False); _ = sock.sendto(b"1{}", sock.getsockname())
    >>> batch_receiver(sock)().payloads()
    [b'1{}']
    >>> sock.close()
    """
    if not (use_recvmmsg and _RECVMMSG is not None):
        return _OneByOne(sock)
    return _MMsgReceiver(sock, batch)


def pause_after_partial_batch(sock: socket.socket) -> float:
    """Seconds a receiver may sleep after a call that returned less than a full batch.

    Sleeping lets a batch gather in the kernel, so a steady stream costs one wake-up (and one
    GIL acquisition) per batch rather than per datagram; the pause is what fills at most a quarter
    of the socket's receive buffer at `FLAT_OUT_RATE` datagrams/s, capped at `MAX_PAUSE`.

    >>> sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    >>> 0 < pause_after_partial_batch(sock) <= MAX_PAUSE
    True
    """
    granted = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    return min(MAX_PAUSE, granted / 4 / KERNEL_BYTES_PER_DATAGRAM / FLAT_OUT_RATE)


class _OneByOne:
    """One `recv` per call, where recvmmsg is missing."""

    batch = 1

    def __init__(self, sock: socket.socket):
        self.recv = sock.recv

    def __call__(self) -> Received:
        payload = self.recv(RECEIVE_BUFFER)
        stamp = time.time()
        return Received([spool.record(stamp, payload)],
                        np.array([len(payload)], dtype=np.uint32), stamp)


class _MMsgReceiver:
    """`batch` slots, each room for a spool header then RECEIVE_BUFFER bytes of payload, filled
    by one recvmmsg call.

    The kernel writes each payload just after its slot's header room; the headers are then
    filled for the whole batch at once (numpy, over a strided view of the slots), as are the
    lengths of the iovecs handed to the spool's writev (`spool.Scattered`), so a datagram costs
    no Python work at all. Building each record in Python (a header `pack`, a bytes copy, a
    join) cost ~0.9 µs per datagram, and even a memoryview slice per record ~1 µs, as much as
    receiving it.
    """

    def __init__(self, sock: socket.socket, batch: int):
        self.sock = sock  # kept so the descriptor outlives us
        self.fd = sock.fileno()
        self.batch = batch
        self.room = spool.HEADER.size
        self.stride = self.room + RECEIVE_BUFFER
        # anonymous memory: a page is only allocated once a datagram lands in it, so resident
        # memory follows the traffic (about 4 KB per slot for ~500-byte datagrams), not the 64 KB slots
        self.memory = mmap.mmap(-1, self.stride * batch)
        self.buffer = (ctypes.c_char * (self.stride * batch)).from_buffer(self.memory)
        self.view = memoryview(self.memory)
        self.headers = np.ndarray((batch,), dtype=_HEADER_DTYPE, buffer=self.memory, strides=(self.stride,))
        self.iovecs = (IoVec * batch)()  # where recvmmsg puts each payload
        self.messages = (_MMsgHdr * batch)()
        # each slot's record (header room, then payload) for the spool's writev; only the lengths change per call
        self.record_iovecs = (IoVec * batch)()
        base = ctypes.addressof(self.buffer)
        for number in range(batch):
            self.iovecs[number].iov_base = base + number * self.stride + self.room
            self.iovecs[number].iov_len = RECEIVE_BUFFER
            self.messages[number].msg_hdr.msg_iov = ctypes.pointer(self.iovecs[number])
            self.messages[number].msg_hdr.msg_iovlen = 1
            self.record_iovecs[number].iov_base = base + number * self.stride
        self.record_lengths = np.ndarray((batch,), dtype=np.uint64, buffer=self.record_iovecs,
                                         offset=IoVec.iov_len.offset, strides=(ctypes.sizeof(IoVec),))
        # msg_len of every message, as an array (a strided view: no ctypes attribute access per datagram)
        self.lengths = np.ndarray((batch,), dtype=np.uint32, buffer=self.messages,
                                  offset=_MMsgHdr.msg_len.offset, strides=(ctypes.sizeof(_MMsgHdr),))

    def __call__(self) -> Received:
        count = _RECVMMSG(self.fd, self.messages, self.batch, _MSG_DONTWAIT, None)
        if count < 0:  # BlockingIOError when nothing waits
            raise last_error()
        stamp = time.time()
        lengths = self.lengths[:count].copy()
        self.headers["ts"][:count] = stamp
        self.headers["length"][:count] = lengths
        self.record_lengths[:count] = lengths + self.room
        total = int(self.record_lengths[:count].sum())
        return Received(spool.Scattered(self.record_iovecs, count, total, lambda: self._slices(lengths)), lengths, stamp)

    def _slices(self, lengths: np.ndarray) -> list[memoryview]:
        view, size = self.view, self.room
        return [view[start:start + size + length]
                for start, length in zip(range(0, len(lengths) * self.stride, self.stride), lengths.tolist())]
