"""Read the complete lines a file has gained since the last ingest, as an Arrow table.

Lines are found with numpy (one vectorised pass for the newlines) and handed to DuckDB as
zero-copy Arrow columns (binary, and string views where every line is good text), so that decoding, validation and parsing happen in DuckDB's
vectorised engine rather than in a Python loop per line. A Python loop over lines was the
prototype's method and is ~5x slower (see benchmarks/ingest_bench.py).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import BinaryIO, Callable, Iterator

import numpy as np
import pyarrow as pa

from taskscope.constants import MAX_LINE_BYTES  # lines longer than this are kept aside in bad_lines

#: how much of a file is read at once; a chunk always ends at a newline
CHUNK_BYTES = 64 << 20
#: rows per Arrow record batch of decoded lines: DuckDB scans batches in parallel, one per thread
BATCH_ROWS = 16_384


@dataclass
class LineChunk:
    """A run of complete lines from one file.

    `table` has columns `line` (1-based line number in the file) and `raw` (the bytes of
    the line including its newline). `overlong` lists (line, first bytes) of lines over
    MAX_LINE_BYTES, which the parsers must leave out (see `usable_lines_sql`).
    `text`, when every line of the chunk is usable (valid UTF-8, no NUL byte, none
    overlong: the usual case), is the same lines already decoded, as columns `line` and
    `txt` without the line ending, so that no SQL has to decode or check them.
    """

    table: pa.Table
    first_line: int
    end_offset: int
    overlong: list[tuple[int, bytes]] = field(default_factory=list)
    text: pa.Table | None = None

    @property
    def n_lines(self) -> int:
        return self.table.num_rows  # overlong lines are rows of `table` too


def read_new_lines(
    path: str, offset: int, lines_before: int, chunk_bytes: int = CHUNK_BYTES,
    opener: Callable[[], BinaryIO] | None = None, final: bool = False,
) -> Iterator[LineChunk]:
    """Chunks of the complete lines of `path` (or of what `opener` opens: a compressed file,
    an archive member) after byte `offset` of its content.

    The file is opened now, so a file that cannot be read raises OSError here rather than
    at the first chunk. A partial last line (no newline yet) is not yielded: it waits for
    the next ingest, unless the content is `final` (compressed or archived: it will not grow),
    where it is the last line.

    >>> chunks = list(read_new_lines("/etc/hostname", 0, 0))
    """
    handle = opener() if opener else open(path, "rb")
    if offset:
        handle.seek(offset)
    return _chunks(handle, offset, lines_before, chunk_bytes, final)


def _chunks(handle: BinaryIO, offset: int, lines_before: int, chunk_bytes: int, final: bool) -> Iterator[LineChunk]:
    line_no = lines_before
    damage: Exception | None = None
    with handle:
        carry = b""
        while True:
            if damage is not None:
                raise damage
            block, damage = _read_block(handle, chunk_bytes) if final else (handle.read(chunk_bytes), None)
            if not block and damage is not None:
                raise damage
            if not block:
                if final and carry:  # the last line of content that will not grow
                    chunk = _split_lines(carry + b"\n", line_no + 1)
                    chunk.end_offset = offset + len(carry)
                    yield chunk
                return
            data = carry + block if carry else block
            last_newline = data.rfind(b"\n")
            if last_newline < 0:
                carry = data
                continue
            # the chunk's lines stay in `data` (slicing them out would copy them all); only
            # the partial last line is carried to the next block
            chunk = _split_lines(data, line_no + 1, end=last_newline + 1)
            carry = data[last_newline + 1 :]
            line_no += chunk.n_lines
            offset += last_newline + 1
            chunk.end_offset = offset
            yield chunk


#: compressed content is read in pieces of this size, so that damage loses only the piece it is in
_STREAM_PIECE = 64 << 10


def _read_block(handle: BinaryIO, size: int) -> tuple[bytes, Exception | None]:
    """Up to `size` bytes of a compressed stream, and the error that stopped it early, if any
    (a truncated .gz raises at its end: the lines before the damage are still read)."""
    pieces: list[bytes] = []
    total = 0
    while total < size:
        try:
            piece = handle.read(min(_STREAM_PIECE, size - total))
        except Exception as exc:  # noqa: BLE001 - the caller decides which errors are damage
            return b"".join(pieces), exc
        if not piece:
            break
        pieces.append(piece)
        total += len(piece)
    return b"".join(pieces), None


def _split_lines(data: bytes, first_line: int, end: int | None = None) -> LineChunk:
    """Split `data[:end]` (ending in a newline) into lines without copying them.

    Each Arrow value keeps its trailing newline (the offsets are simply the positions after
    each newline); the SQL that reads the table strips it. Lines over MAX_LINE_BYTES stay in
    the table but are listed in `overlong` so the reader can skip them.
    """
    end = len(data) if end is None else end
    newlines = np.flatnonzero(np.frombuffer(data, dtype=np.uint8, count=end) == 10)
    offsets = np.empty(len(newlines) + 1, dtype=np.int64)
    offsets[0] = 0
    offsets[1:] = newlines + 1
    numbers = np.arange(first_line, first_line + len(newlines), dtype=np.int64)
    raw = pa.LargeBinaryArray.from_buffers(
        pa.large_binary(), len(newlines), [None, pa.py_buffer(offsets), pa.py_buffer(data)]
    )
    overlong = [
        (int(numbers[i]), data[offsets[i] : offsets[i] + 200])
        for i in np.flatnonzero(np.diff(offsets) - 1 > MAX_LINE_BYTES)
    ]
    table = pa.table({"line": pa.array(numbers), "raw": raw})
    text = None if overlong else _decoded_lines(data, newlines, offsets, numbers)
    return LineChunk(table=table, first_line=first_line, end_offset=0, overlong=overlong, text=text)


def _decoded_lines(data: bytes, newlines: np.ndarray, offsets: np.ndarray, numbers: np.ndarray) -> pa.Table | None:
    """(line, txt) of `data` with each line's ending (LF or CRLF) removed, or None if a line
    is not valid UTF-8 or holds a NUL byte (those take the checked path in SQL).

    `txt` is an Arrow string-view column: each value is a 16-byte view (length, and either the
    string itself when it is 12 bytes or shorter, or its first 4 bytes and its place in `data`),
    so the lines stay where they are in `data`, line endings and all. Cutting the endings out
    into a contiguous copy, as an ordinary string column needs, cost more than all of the rest
    of reading a file. Arrow checks the UTF-8.
    """
    end = int(offsets[-1])
    if len(newlines) == 0 or data.find(b"\0", 0, end) >= 0:
        return None
    buffer = np.frombuffer(data, dtype=np.uint8, count=end)
    starts = offsets[:-1]
    before = newlines - 1
    has_cr = np.zeros(len(newlines), dtype=bool)
    not_empty = before >= starts
    has_cr[not_empty] = buffer[before[not_empty]] == 13
    lengths = newlines - starts - has_cr
    txt = pa.Array.from_buffers(
        pa.string_view(), len(newlines), [None, pa.py_buffer(_string_views(buffer, starts, lengths)), pa.py_buffer(data)]
    )
    try:
        txt.validate(full=True)
    except pa.ArrowInvalid:
        return None
    table = pa.table({"line": pa.array(numbers), "txt": txt})
    return pa.Table.from_batches(table.to_batches(max_chunksize=BATCH_ROWS))  # zero-copy slices


#: Arrow's string views hold a string of up to this many bytes inline, a longer one by reference
_INLINE_BYTES = 12


def _string_views(buffer: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The 16-byte Arrow string views of the strings at `starts` (with `lengths`) in `buffer`,
    which is the views' only data buffer (number 0)."""
    views = np.zeros((len(starts), 16), dtype=np.uint8)
    inline = lengths <= _INLINE_BYTES
    shown = np.where(inline, lengths, 4)  # bytes copied into the view: all, or the prefix
    last = len(buffer) - 1
    for k in range(_INLINE_BYTES):
        byte = buffer[np.minimum(starts + k, last)]
        views[:, 4 + k] = np.where(k < shown, byte, 0)
    words = views.view("<i4")  # (n, 4): length, prefix, buffer index, offset
    words[:, 0] = lengths
    by_reference = ~inline
    words[by_reference, 2] = 0
    words[by_reference, 3] = starts[by_reference]
    return views


def file_size(path: str) -> int:
    """Size in bytes, or -1 when the file cannot be stat'ed."""
    try:
        return os.stat(path).st_size
    except OSError:
        return -1


def usable_lines_sql(table_name: str) -> str:
    """SQL selecting (line, txt) of the lines of an Arrow table from `read_new_lines`
    (what `LineChunk.text` holds directly when the chunk has no bad line).

    Strips the newline (and a CR), decodes UTF-8, and leaves out overlong lines and lines
    that are not valid UTF-8 or contain NUL bytes (`bad_lines_sql` reports those).
    """
    return f"""
        SELECT line, CASE WHEN ends_with(txt, chr(13)) THEN txt[1:-2] ELSE txt END AS txt FROM (
            SELECT line, try(decode(raw[1:-2])) AS txt, octet_length(raw) AS n FROM {table_name}
        ) WHERE n - 1 <= {MAX_LINE_BYTES} AND txt IS NOT NULL AND strpos(txt, chr(0)) = 0
    """


def bad_lines_sql(table_name: str) -> str:
    """SQL selecting (line, reason, head) of the undecodable lines of the table."""
    return f"""
        SELECT line,
               CASE WHEN txt IS NULL THEN 'invalid UTF-8' ELSE 'binary data (NUL byte)' END AS reason,
               raw[1:200] AS head
        FROM (SELECT line, raw, try(decode(raw[1:-2])) AS txt, octet_length(raw) AS n FROM {table_name})
        WHERE n - 1 <= {MAX_LINE_BYTES} AND (txt IS NULL OR strpos(txt, chr(0)) > 0)
    """
