"""The collector's append-only spool: every datagram received, before anything parses it.

The spool is a folder of segment files named by their UTC creation time
(`20261026T120000.123456Z.spool`), so they sort in the order written. A segment starts with
`MAGIC`; each record is a little-endian header (receive time as a double, payload length as an
unsigned 32-bit int) followed by the payload bytes exactly as received. No sender address is
written. A record cut short by a crash is ignored when read; the collector starts a new
segment on every start, so a cut tail is never appended to.
"""

from __future__ import annotations

import os
import struct
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

MAGIC = b"TSUSPOOL1\n"
HEADER = struct.Struct("<dI")
SUFFIX = ".spool"
#: a segment is closed and a new one started past this size or age
SEGMENT_MAX_BYTES = 256 * 1024 * 1024
SEGMENT_MAX_SECONDS = 24 * 3600


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

    def append(self, times: list[float], payloads: list[bytes]) -> tuple[str, int, int]:
        """Write the records in one system call; return (segment, index of the first, end offset).

        Record indexes count from 1 within a segment.
        """
        if self.size > self.max_bytes or time.monotonic() - self.opened_at > self.max_seconds:
            self._open_segment()
        pack = HEADER.pack
        chunk = b"".join([part for ts, payload in zip(times, payloads) for part in (pack(ts, len(payload)), payload)])
        view = memoryview(chunk)
        while view:  # a raw file may write less than asked
            view = view[self.file.write(view):]
        first = self.records + 1
        self.records += len(payloads)
        self.size += len(chunk)
        return self.segment, first, self.size

    def sync(self) -> None:
        """Ask the OS to put what was written on disk (fsync)."""
        os.fsync(self.file.fileno())

    def close(self) -> None:
        if self.file is not None:
            self.sync()
            self.file.close()
            self.file = None


def segments(directory: str | Path) -> list[Path]:
    """The segment files of a spool folder, oldest first."""
    directory = Path(directory)
    return sorted(directory.glob("*" + SUFFIX)) if directory.is_dir() else []


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
