"""The collector's append-only spool: every datagram received, before anything parses it.

The spool is a folder of segment files named by their UTC creation time
(`20261026T120000.123456Z.spool`), so they sort in the order written. A segment starts with
`MAGIC`; each record is a little-endian header (receive time as a double, payload length as an
unsigned 32-bit int) followed by the payload bytes exactly as received. No sender address is
written. A record cut short by a crash is ignored when read; the collector starts a new
segment on every start, so a cut tail is never appended to.
"""

from __future__ import annotations

import ctypes
import os
import struct
import tempfile  # noqa: F401 - used by the doctests
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa

from taskscope.usage._libc import last_error, libc_function

MAGIC = b"TSUSPOOL1\n"
HEADER = struct.Struct("<dI")
SUFFIX = ".spool"
#: a segment is closed and a new one started past this size or age
SEGMENT_MAX_BYTES = 256 * 1024 * 1024
SEGMENT_MAX_SECONDS = 24 * 3600


def _iov_max() -> int:
    """Buffers one writev takes at most: POSIX's IOV_MAX (1024 on Linux)."""
    try:
        granted = os.sysconf("SC_IOV_MAX")
    except (AttributeError, ValueError, OSError):
        return 16  # POSIX's minimum
    return granted if granted > 0 else 16


_IOV_MAX = _iov_max()


_WRITEV = libc_function("writev", [ctypes.c_int, ctypes.c_void_p, ctypes.c_int], ctypes.c_ssize_t)


class Scattered:
    """Records lying apart in memory (e.g. in a receiver's slots), given as `count` iovecs of
    `iovecs` whose lengths sum to `total`; `buffers()` makes them Python buffers.

    `SpoolWriter.write` hands the iovecs to libc's `writev` as they are: a Python buffer per
    record (a memoryview slice, then `os.writev` asking each for its buffer) cost ~1.2 µs per
    datagram, as much as receiving it.
    """

    __slots__ = ("iovecs", "count", "total", "buffers")

    def __init__(self, iovecs: ctypes.Array, count: int, total: int, buffers):
        self.iovecs, self.count, self.total, self.buffers = iovecs, count, total, buffers

    def __len__(self) -> int:
        return self.count


class CorruptSpool(ValueError):
    """Records in a segment are not where, or as long as, the reader was told."""


def record(ts: float, payload: bytes) -> bytes:
    """One spool record: the header (receive time `ts`, payload length), then the payload.

    >>> record(1.5, b"hi")[HEADER.size:]
    b'hi'
    """
    return HEADER.pack(ts, len(payload)) + payload


class SpoolWriter:
    """Appends batches of (receive time, payload) records to the current segment of `directory`."""

    def __init__(self, directory: str | Path, max_bytes: int = SEGMENT_MAX_BYTES,
                 max_seconds: float = SEGMENT_MAX_SECONDS):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.max_bytes, self.max_seconds = max_bytes, max_seconds
        self.file = None
        self._open_segment()

    def _open_segment(self) -> None:
        if self.file is not None:
            self.close()
        now = datetime.now(timezone.utc)
        path = self.directory / (now.strftime("%Y%m%dT%H%M%S.%fZ") + SUFFIX)
        while path.exists():  # two segments within a microsecond: keep them apart
            path = path.with_name(path.stem + "_" + SUFFIX)
        self.file = open(path, "xb", buffering=0)
        self.file.write(MAGIC)
        self.segment = path.name
        self.size = len(MAGIC)
        self.records = 0
        self.opened_at = time.monotonic()

    def write(self, records: "list | Scattered") -> tuple[str, int, int, int]:
        """Append `records` (buffers, each a header and its payload, or the same as `Scattered`
        iovecs, as `Received.records` holds them) with as few system calls as `writev` allows.

        Returns (segment, index of the first record, offset where the first starts, end offset);
        record indexes count from 1 within a segment.

        >>> writer = SpoolWriter(tempfile.mkdtemp())
        >>> writer.write([record(1.5, b"hi")])[1:]
        (1, 10, 24)
        """
        if self.size > self.max_bytes or time.monotonic() - self.opened_at > self.max_seconds:
            self._open_segment()
        start = self.size
        if isinstance(records, Scattered):
            self._write_scattered(records)
        else:
            self._write_buffers(records)
        index = self.records + 1
        self.records += len(records)
        return self.segment, index, start, self.size

    def _write_buffers(self, records: list) -> None:
        fd = self.file.fileno()
        for first in range(0, len(records), _IOV_MAX):
            part = records[first:first + _IOV_MAX]
            expected = sum(map(len, part))
            written = os.writev(fd, part)
            if written < expected:  # a regular file writes all unless interrupted or full
                _write_rest(fd, part, written)
            self.size += expected

    def _write_scattered(self, records: Scattered) -> None:
        if _WRITEV is None or records.count > _IOV_MAX:
            self._write_buffers(records.buffers())
            return
        written = _WRITEV(self.file.fileno(), ctypes.addressof(records.iovecs), records.count)
        if written < 0:
            raise last_error()
        if written < records.total:  # cut short (disk full, a signal)
            _write_rest(self.file.fileno(), records.buffers(), written)
        self.size += records.total

    def sync(self) -> None:
        """Ask the OS to put what was written on disk (fsync)."""
        os.fsync(self.file.fileno())

    def close(self) -> None:
        """Close the current segment; one that holds no record is deleted (a start and stop
        without datagrams leaves no file behind)."""
        if self.file is not None:
            self.sync()
            self.file.close()
            self.file = None
            if self.records == 0:
                (self.directory / self.segment).unlink(missing_ok=True)


def _write_rest(fd: int, buffers: list, written: int) -> None:
    """Write what a `writev` of `buffers` left unwritten after its first `written` bytes."""
    rest = memoryview(b"".join(buffers))[written:]
    while rest:
        rest = rest[os.write(fd, rest):]


def segments(directory: str | Path) -> list[Path]:
    """The segment files of a spool folder, oldest first."""
    directory = Path(directory)
    return sorted(directory.glob("*" + SUFFIX)) if directory.is_dir() else []


def read_records(path: str | Path, start: int, end: int, lengths: np.ndarray) -> tuple[np.ndarray, pa.Array]:
    """(receive times, payloads) of the records lying between offsets `start` and `end` of a
    segment, whose payload lengths are `lengths` (as `SpoolWriter.write` was given them).

    One read, and no Python work per record: the bytes become an Arrow array whose values are
    the headers and payloads in turn, from which the payloads are taken; the times are read out
    of the headers with numpy. Records that disagree with `lengths` raise `CorruptSpool`.

    >>> folder = tempfile.mkdtemp(); writer = SpoolWriter(folder)
    >>> segment, _, start, end = writer.write([record(1.5, b"hi"), record(2.5, b"")])
    >>> times, payloads = read_records(Path(folder) / segment, start, end, np.array([2, 0]))
    >>> times.tolist(), payloads.to_pylist()
    ([1.5, 2.5], [b'hi', b''])
    """
    with open(path, "rb") as file:
        data = os.pread(file.fileno(), end - start, start)
    count = len(lengths)
    sizes = np.empty(2 * count, dtype=np.int64)
    sizes[0::2] = HEADER.size
    sizes[1::2] = lengths
    offsets = np.zeros(2 * count + 1, dtype=np.int64)
    np.cumsum(sizes, out=offsets[1:])
    if offsets[-1] != len(data):
        raise CorruptSpool(f"{path}: {len(data)} bytes at {start}..{end}, records need {offsets[-1]}")
    headers = np.frombuffer(data, dtype=np.uint8)[offsets[0:-1:2, None] + np.arange(HEADER.size)]
    header_lengths = headers[:, 8:].copy().view("<u4").ravel()
    if not np.array_equal(header_lengths, lengths):
        raise CorruptSpool(f"{path}: record headers at {start}..{end} do not match the lengths given")
    both = pa.LargeBinaryArray.from_buffers(pa.large_binary(), 2 * count,
                                            [None, pa.py_buffer(offsets), pa.py_buffer(data)])
    payloads = both.take(pa.array(np.arange(1, 2 * count, 2)))
    return headers[:, :8].copy().view("<f8").ravel(), payloads


def read_segment(path: str | Path, offset: int = 0, first_index: int = 1,
                 max_records: int | None = None) -> Iterator[tuple[int, int, float, bytes]]:
    """(record index, end offset, receive time, payload) for each complete record from `offset`.

    `offset` 0 means the start of the segment; `first_index` is the index of the record there.
    """
    with open(path, "rb") as file:
        data = file.read()
    if not data.startswith(MAGIC):
        return
    position, index, count = max(offset, len(MAGIC)), first_index, 0
    while position + HEADER.size <= len(data) and (max_records is None or count < max_records):
        ts, length = HEADER.unpack_from(data, position)
        end = position + HEADER.size + length
        if end > len(data):  # cut short by a crash while writing
            return
        yield index, end, ts, data[position + HEADER.size:end]
        position, index, count = end, index + 1, count + 1
