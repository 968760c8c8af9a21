"""Compressed files and runinfo archives, read in place.

"Send me a tarball of your runinfo" is how runs travel. A `.gz` file is read through gzip;
a `.tar`, `.tar.gz`/`.tgz` or `.zip` archive is opened and each of its members becomes an
input of its own, named `<archive>!<member>` (`runinfo.tar.gz!000/parsl.log`). What a file
is, is told by its first bytes, not its name. A compressed tar is first unpacked to a
temporary tar file, so that its members can be read in any order without decompressing
the archive again for each.

>>> packing_of(b"PK\\x03\\x04...")
'zip'
"""

from __future__ import annotations

import gzip
import io
import os
import shutil
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import BinaryIO

from taskscope.constants import MAX_LINE_BYTES

#: between an archive's path and a member's name in `events.file` and `ingested_files.path`
MEMBER_SEPARATOR = "!"

Opener = Callable[[], BinaryIO]

#: what reading damaged content raises (a truncated gzip stream or archive, a bad checksum)
READ_ERRORS = (OSError, EOFError, zlib.error, zipfile.BadZipFile, tarfile.TarError)

_GZIP_MAGIC = b"\x1f\x8b"
_ZIP_MAGIC = b"PK\x03\x04"
_TAR_MAGIC_OFFSET = 257  # "ustar" in a POSIX tar header


def packing_of(head: bytes) -> str | None:
    """'zip', 'tar', 'tar.gz', 'gz' or None (a plain file), from a file's first bytes (at
    least 512 for a tar).

    >>> packing_of(b"2026-01-02 03:04:05 hello") is None
    True
    """
    if head.startswith(_ZIP_MAGIC):
        return "zip"
    if head.startswith(_GZIP_MAGIC):
        try:
            inner = zlib.decompressobj(wbits=31).decompress(head, 1024)
        except zlib.error:
            return "gz"  # a damaged or truncated start: reading it reports what is wrong
        return "tar.gz" if _is_tar(inner) else "gz"
    return "tar" if _is_tar(head) else None


def _is_tar(head: bytes) -> bool:
    return head[_TAR_MAGIC_OFFSET : _TAR_MAGIC_OFFSET + 5] == b"ustar"


def file_opener(path: str, packing: str | None) -> Opener:
    """A function opening `path` for reading its content (decompressed for 'gz')."""
    if packing == "gz":
        return lambda: gzip.open(path, "rb")
    return lambda: open(path, "rb")


def change_marker(path: str) -> int:
    """A number any write to the file changes: its mtime (µs) plus its size."""
    stat = os.stat(path)
    return int(stat.st_mtime_ns // 1000) + stat.st_size


@dataclass
class Member:
    """A regular file inside an archive."""

    name: str  # its path inside the archive, without a leading `./`
    size: int  # bytes, as stored (a `.gz` member: compressed)


class Archive:
    """An open tar or zip archive: its members, and a way to read each.

    >>> with Archive("runinfo.tar.gz", "tar.gz") as archive:  # doctest: +SKIP
    ...     names = [member.name for member in archive.members()]
    """

    def __init__(self, path: str, packing: str):
        self.path = path
        self._spool: BinaryIO | None = None
        #: what stopped the reading of a damaged archive (the members before it are read)
        self.damage: str | None = None
        #: (name, why) of the members that are no regular file and are not read
        self.skipped: list[tuple[str, str]] = []
        if packing == "zip":
            self._zip: zipfile.ZipFile | None = zipfile.ZipFile(path)
            self._tar: tarfile.TarFile | None = None
            self._infos: dict = {_clean(info.filename): info for info in self._zip.infolist() if not info.is_dir()}
            return
        self._zip = None
        if packing == "tar.gz":
            self._spool = tempfile.TemporaryFile(prefix="taskscope-archive-")
            self.damage = _gunzip_until_damage(path, self._spool)
            self._spool.seek(0)
            self._tar = tarfile.open(fileobj=self._spool, mode="r:")
        else:
            self._tar = tarfile.open(path, mode="r:")
        self._infos = self._tar_members()
        self._tar_bytes = os.fstat(self._spool.fileno()).st_size if self._spool else os.path.getsize(path)

    def _tar_members(self) -> dict:
        """The tar's members that have content: regular files, and links to one inside it (a
        hard link, as GNU tar stores a file's second name). Those read before any damage."""
        assert self._tar is not None
        infos: dict = {}
        try:
            for info in self._tar:
                name = _clean(info.name)
                if info.isreg():
                    infos[name] = info
                elif info.islnk() or info.issym():
                    try:
                        self._tar._find_link_target(info)  # noqa: SLF001 - what extractfile will follow
                        infos[name] = info
                    except KeyError:
                        self.skipped.append((name, f"a link to {info.linkname}, which is not in the archive: not read"))
                elif not info.isdir():
                    self.skipped.append((name, "not a regular file (a device or a pipe): not read"))
        except tarfile.TarError as exc:  # a truncated tar: its members before the damage are whole
            self.damage = self.damage or str(exc)
        return infos

    def __enter__(self) -> Archive:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def members(self) -> list[Member]:
        """The archive's regular files, in the archive's order."""
        return [Member(name, getattr(info, "file_size", None) or getattr(info, "size", 0))
                for name, info in self._infos.items()]

    def opener(self, name: str) -> Opener:
        """A function opening member `name` for reading (through gzip if it is compressed)."""
        def open_member() -> BinaryIO:
            raw = self._open_raw(name)
            if raw.peek(2)[:2] == _GZIP_MAGIC:  # zip's and tar's member files both buffer
                return gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[return-value]
            return raw

        return open_member

    def _open_raw(self, name: str) -> BinaryIO:
        if self._zip is not None:
            return self._zip.open(self._infos[name])  # type: ignore[return-value]
        assert self._tar is not None
        info = self._infos[name]
        if info.isreg() and not info.sparse and info.offset_data + info.size > self._tar_bytes:
            # the member a truncated archive cut: what it holds up to the cut (tarfile refuses it whole)
            return self._cut_member(info)
        handle = self._tar.extractfile(info)
        assert handle is not None  # a regular file always has content
        return handle  # type: ignore[return-value]

    def _cut_member(self, info: tarfile.TarInfo) -> BinaryIO:
        raw = os.fdopen(os.dup(self._spool.fileno()), "rb") if self._spool else open(self.path, "rb")
        raw.seek(info.offset_data)
        return io.BufferedReader(_Prefix(raw, self._tar_bytes - info.offset_data))  # type: ignore[return-value]

    def close(self) -> None:
        for handle in (self._zip, self._tar, self._spool):
            if handle is not None:
                handle.close()


def _gunzip_until_damage(path: str, spool: BinaryIO) -> str | None:
    """Decompress the gzip file at `path` into `spool`; what stopped it early (a truncated or
    corrupt .tar.gz), if anything, as text. Everything before the damage is written: zlib,
    unlike `gzip.GzipFile.read`, gives what it decompressed before an error."""
    decompressor, fed = zlib.decompressobj(wbits=31), False
    with open(path, "rb") as packed:
        while piece := packed.read(1 << 20):
            while piece:
                fed = True
                try:
                    spool.write(decompressor.decompress(piece))
                except zlib.error as exc:
                    return f"corrupt compressed data: {exc}"
                piece = b""
                if decompressor.eof:  # gzip members may follow one another; zeros may pad the end
                    piece = decompressor.unused_data.lstrip(b"\0")
                    decompressor, fed = zlib.decompressobj(wbits=31), False
    return "the compressed data ends early (truncated)" if fed else None


class _Prefix(io.RawIOBase):
    """The first `length` bytes of an open binary file, from where it stands."""

    def __init__(self, raw: BinaryIO, length: int):
        self._raw, self._left = raw, length

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if self._left <= 0:
            return 0
        data = self._raw.read(min(len(buffer), self._left))
        buffer[: len(data)] = data
        self._left -= len(data)
        return len(data)

    def close(self) -> None:
        self._raw.close()
        super().close()


def _clean(name: str) -> str:
    while name.startswith("./"):
        name = name[2:]
    return name.lstrip("/")


def read_head(opener: Opener, length: int) -> bytes | None:
    """The first `length` bytes of what `opener` opens, or None when it cannot be read."""
    try:
        with opener() as handle:
            return handle.read(length)
    except READ_ERRORS:
        return None


#: a recognising sample reads past a first line this long at most, to see the lines after it
SAMPLE_SCAN_LIMIT = 64 << 20


def read_sample(opener: Opener, length: int, first_bytes: bytes | None = None) -> bytes | None:
    """What recognising a file needs of its start: its first `length` bytes after any run of
    NUL bytes it starts with (see `leading_nul_bytes`), and, when its first line is longer than
    that, the whole first line (up to 1 MiB, a line the reader keeps) or else the `length`
    bytes after it (the start of that line, as a line, when nothing follows it). None when it
    cannot be read.

    `first_bytes`, the content's first `length` bytes when the caller has them already,
    saves a read for the usual file (no NUL start, a newline among them).
    """
    if first_bytes is not None and not first_bytes.startswith(b"\0") and (
            len(first_bytes) < length or b"\n" in first_bytes):
        return first_bytes[:length]
    try:
        with opener() as handle:
            _skip_nul_bytes(handle)
            head = handle.read(length)
            if len(head) < length or b"\n" in head:
                return head
            kept, scanned = [head], len(head)
            while scanned < SAMPLE_SCAN_LIMIT:  # a long first line: read on to its end
                piece = handle.read(1 << 20)
                if not piece:
                    return b"".join(kept)
                newline = piece.find(b"\n")
                if newline >= 0:
                    after = piece[newline + 1:] + handle.read(length)
                    if scanned + newline + 1 > MAX_LINE_BYTES:  # a line kept aside: the lines after it tell,
                        return after[:length] if after.strip() else head + b"\n"  # or its start if it is alone
                    return b"".join(kept) + piece[: newline + 1] + after[:length]
                scanned += len(piece)
                if scanned <= MAX_LINE_BYTES:
                    kept.append(piece)
            return head
    except READ_ERRORS:
        return None


def leading_nul_bytes(opener: Opener) -> int:
    """How many NUL bytes the content starts with: the gap a copytruncate rotation leaves when
    the program writing the log does not append (it goes on writing at its old offset, and the
    truncated file reads as NULs up to there). 0 when it cannot be read.

    >>> import io
    >>> leading_nul_bytes(lambda: io.BytesIO(b"\\0\\0\\0line\\n"))
    3
    """
    try:
        with opener() as handle:
            return _skip_nul_bytes(handle)
    except READ_ERRORS:
        return 0


def _skip_nul_bytes(handle: BinaryIO) -> int:
    """Move `handle` past the NUL bytes it starts at; returns how many there were."""
    position = 0
    if type(handle) is io.BufferedReader and isinstance(handle.raw, io.FileIO):
        try:  # a plain file's hole (a sparse gap) is skipped at once, not read
            position = os.lseek(handle.fileno(), 0, os.SEEK_DATA)
        except OSError:  # no data at all (ENXIO), or no SEEK_DATA here: read through
            position = 0
        handle.seek(position)
    size = 4096  # most files start with text: a small first read tells
    while True:
        block = handle.read(size)
        size = 1 << 20
        kept = block.lstrip(b"\0")
        position += len(block) - len(kept)
        if not block or kept:
            handle.seek(position)
            return position


@contextmanager
def as_local_file(opener: Opener, path: str) -> Iterator[str]:
    """A path on disk with the content `opener` gives: `path` itself for a plain file, else a
    temporary copy (a monitoring.db inside an archive, which SQLite can only open as a file)."""
    if os.path.isfile(path):
        yield path
        return
    handle, temporary = tempfile.mkstemp(prefix="taskscope-member-")
    try:
        with os.fdopen(handle, "wb") as out, opener() as member:
            shutil.copyfileobj(member, out, 1 << 20)
        yield temporary
    finally:
        os.unlink(temporary)
