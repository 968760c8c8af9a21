"""Find the inputs under the paths a user gives, and what each one is.

A runinfo folder with many runs, one run folder, single files, `.gz` files or archives of
any of these: every file is recognised by its content (its name and first bytes, see
`taskscope.sources.recognising_source`), and its location is read for what it says (the
run folder; for Parsl's logs the executor label, block, manager and worker). Archive members
are inputs of their own (see `taskscope.ingest.archives`).
"""

from __future__ import annotations

import os
import stat
import tarfile
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path, PurePosixPath
from typing import BinaryIO, NamedTuple

from taskscope.ingest.archives import (
    MEMBER_SEPARATOR, Archive, Opener, change_marker, file_opener, packing_of, read_head, read_sample,
)
from taskscope.sources import SAMPLE_BYTES, Sample, Source, recognising_source, source_named

#: a folder holding one of these is a Parsl run folder (a run's other files belong to its run)
RUN_DIR_MARKERS = ("parsl.log", "parsl.jsonlog", "parsl.log.gz", "parsl.jsonlog.gz")

#: how `ingested_files.note` of an archive read to its end begins
ARCHIVE_NOTE = "archive"

#: the reading order of files no source recognises (they are only listed)
_UNREAD_ORDER = 1_000


@dataclass
class InputFile:
    """One input: a file, a compressed file or an archive member, and what is known of it."""

    path: str  # absolute; an archive member's is `<archive>!<member>`
    rel: str  # relative to the path the user gave (what events.file shows)
    source: str | None  # name of the source that reads it; None = not read
    component: str | None = None  # the events' `source`: parsl, interchange, worker, jsonl, text, ...
    run_dir: str | None = None
    stamps: dict[str, str] = field(default_factory=dict)  # executor_label, block_id, ...
    note: str | None = None  # why it is not read
    unreadable: bool = False  # not read because it cannot be read (the user is told)
    unexpected: bool = False  # not read though its name says log (the user is told, as a note)
    opener: Opener | None = None  # how to read its content (None: the plain file at `path`)
    marker: int | None = None  # a compressed file's or member's change marker (its archive's)
    order: int = _UNREAD_ORDER

    @property
    def packed(self) -> bool:
        """Compressed or inside an archive: read whole from its start when it changes."""
        return self.marker is not None

    def open(self) -> BinaryIO:
        return self.opener() if self.opener else open(self.path, "rb")


class KnownSource(NamedTuple):
    """What an earlier ingest learned of a path: its source, size (or change marker), note."""

    source: str | None
    size: int | None
    note: str | None


@dataclass
class Discovery:
    """The inputs found (in reading order) and the paths that do not exist. Archives stay
    open until `close` (or the end of a `with` block)."""

    inputs: list[InputFile]
    missing: list[str]
    archives: list[Archive] = field(default_factory=list)

    def __enter__(self) -> Discovery:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        for archive in self.archives:
            archive.close()
        self.archives.clear()


def discover(paths: list[str], known: Mapping[str, KnownSource] | None = None) -> Discovery:
    """Find and recognise every input under `paths`.

    Inputs come in reading order (each source's `order`, a run's DFK log first among equals),
    then the files nothing reads. A file under two of the paths (a folder and a file in it)
    comes once, named as the first names it. `known` (path -> what an earlier ingest learned)
    spares reading the start of files already recognised.

    >>> discover(["no/such/folder"]).missing
    ['no/such/folder']
    """
    _run_dir_of_folder.cache_clear()  # folders may have gained a parsl.log since the last call
    finder = _Finder(known or {})
    found: list[InputFile] = []
    missing: list[str] = []
    for given in paths:
        root = Path(given)
        if not root.exists():
            missing.append(given)
        elif root.is_dir():
            found.extend(finder.walk(root))
        else:
            found.extend(finder.entry(root, root.name))
    once = list({item.path: item for item in reversed(found)}.values())  # the first of each path wins
    once.sort(key=lambda item: (item.order, item.component != "parsl", item.path))
    return Discovery(once, missing, finder.archives)


class _Finder:
    """Walks folders and recognises what it finds; keeps the archives it opened."""

    def __init__(self, known: Mapping[str, KnownSource]):
        self.known = known
        self.archives: list[Archive] = []
        self._members_known: dict[str, list[tuple[str, KnownSource]]] | None = None  # by archive path

    def walk(self, root: Path) -> Iterator[InputFile]:
        """Every file below `root`, following symbolic links to folders (a runinfo on scratch
        space is often linked in) but never into a folder twice; unreadable folders are
        reported as inputs that cannot be read rather than left out in silence."""
        unreadable: list[OSError] = []
        seen: set[str] = set()
        for dirpath, dirnames, filenames in os.walk(root, onerror=unreadable.append, followlinks=True):
            real = os.path.realpath(dirpath)
            if real in seen:  # a link loop, or a second link to the same folder
                dirnames.clear()
                continue
            seen.add(real)
            dirnames.sort()
            for name in sorted(filenames):
                full = Path(dirpath, name)
                yield from self.entry(full, str(full.relative_to(root)))
        for error in unreadable:
            folder = Path(error.filename or root)
            rel = str(folder.relative_to(root)) if folder != root else folder.name
            yield InputFile(path=str(folder.resolve()), rel=rel, source=None, unreadable=True,
                            note=f"folder cannot be read: {error.strerror or error}")

    def entry(self, path: Path, rel: str) -> Iterator[InputFile]:
        """The input(s) of one directory entry: a regular file, or each member of an archive.
        Anything else (a broken link, a FIFO, a socket, a device) is skipped with a note, since
        opening it could fail or block."""
        try:
            mode = path.stat().st_mode
        except (OSError, RuntimeError) as exc:  # a dangling link or a link loop
            reason = getattr(exc, "strerror", None) or str(exc)
            yield InputFile(path=str(path.absolute()), rel=rel, source=None, unreadable=True,
                            note=f"cannot be read: {reason}")
            return
        if not stat.S_ISREG(mode):
            yield InputFile(path=str(path.absolute()), rel=rel, source=None,
                            note="not a regular file (a pipe, socket or device): not read")
            return
        yield from self.file(path.resolve(), rel)

    def file(self, path: Path, rel: str) -> Iterator[InputFile]:
        item = InputFile(path=str(path), rel=rel, source=None, run_dir=find_run_dir(path))
        known = self.known.get(item.path)
        if known is not None and (known.note or "").startswith(ARCHIVE_NOTE):
            members = self.unchanged_members(item, known)
            if members is not None:  # read whole before and unchanged since: not opened again
                yield from members
                return
        if known is not None and not path.name.endswith(".gz") and _still_known(known, path):
            yield _recognised(item, source_named(known.source) if known.source else None, known.note)
            return
        try:
            with item.open() as handle:
                head = handle.read(max(SAMPLE_BYTES, 512))
        except OSError as exc:  # readable by stat, not by open (permissions)
            item.unreadable, item.note = True, f"cannot be read: {exc.strerror or exc}"
            yield item
            return
        packing = packing_of(head)
        if packing in ("tar", "tar.gz", "zip"):
            yield from self.archive(item, packing)
            return
        if packing == "gz":
            item.opener, item.marker = file_opener(item.path, "gz"), change_marker(item.path)
            head = read_head(item.open, SAMPLE_BYTES)
        yield _sniffed(item, head)

    def unchanged_members(self, item: InputFile, known: KnownSource) -> list[InputFile] | None:
        """The members of an archive an earlier ingest read whole, as it recorded them, if the
        archive has not changed since (None if it has, or was not read to its end)."""
        marker = change_marker(item.path)
        if self._members_known is None:
            self._members_known = {}
            for path, seen in self.known.items():
                archive, separator, name = path.partition(MEMBER_SEPARATOR)
                if separator:
                    self._members_known.setdefault(archive, []).append((name, seen))
        members = self._members_known.get(item.path, [])
        if known.size != marker or any(seen.size != marker for _, seen in members):
            return None
        found = [_recognised(InputFile(path=f"{item.path}{MEMBER_SEPARATOR}{name}",
                                       rel=f"{item.rel}{MEMBER_SEPARATOR}{name}", source=None, marker=marker),
                             source_named(seen.source) if seen.source else None, seen.note)
                 for name, seen in members]
        if any(member.source is None and seen.source for member, (_, seen) in zip(found, members)):
            return None  # a plug-in that read a member is gone: look again
        item.marker, item.note = marker, known.note
        return [*found, item]

    def archive(self, item: InputFile, packing: str) -> Iterator[InputFile]:
        """Each member of the archive at `item.path` as an input of its own, then the archive
        itself (recorded last, so that a record of it says every member before was read)."""
        try:
            archive = Archive(item.path, packing)
        except (OSError, EOFError, tarfile.TarError, zipfile.BadZipFile) as exc:
            item.unreadable, item.note = True, f"cannot be read as a {packing} archive: {exc}"
            yield item
            return
        self.archives.append(archive)
        marker = change_marker(item.path)
        members = archive.members()
        names = {member.name for member in members}
        for member in members:
            path = f"{item.path}{MEMBER_SEPARATOR}{member.name}"
            run_folder = _run_folder_in(member.name, names)
            child = InputFile(
                path=path, rel=f"{item.rel}{MEMBER_SEPARATOR}{member.name}", source=None,
                run_dir=None if run_folder is None else f"{item.path}{MEMBER_SEPARATOR}{run_folder}",
                opener=archive.opener(member.name), marker=marker,
            )
            known = self.known.get(path)
            if known is not None and known.size == marker:
                yield _recognised(child, source_named(known.source) if known.source else None, known.note)
                continue
            head = read_head(child.open, max(SAMPLE_BYTES, 512))
            if head is not None and packing_of(head) in ("tar", "tar.gz", "zip"):
                child.note = "an archive inside an archive: not read"
                yield child
                continue
            yield _sniffed(child, head)
        for name, why in archive.skipped:
            yield InputFile(path=f"{item.path}{MEMBER_SEPARATOR}{name}", rel=f"{item.rel}{MEMBER_SEPARATOR}{name}",
                            source=None, marker=marker, note=why, unexpected=True)
        damage = f"; damaged ({archive.damage}): the files before the damage are read" if archive.damage else ""
        item.marker = marker
        item.note = f"{ARCHIVE_NOTE} of {len(members)} files, read as {item.rel}{MEMBER_SEPARATOR}<file>{damage}"
        item.unexpected = bool(damage)
        yield item


def recognised_again(item: InputFile) -> InputFile:
    """A plain file's input as its content says now (another file took its name).

    >>> recognised_again(InputFile(path="/no/such.log", rel="such.log", source="parsl_textlog")).unreadable
    True
    """
    fresh = InputFile(path=item.path, rel=item.rel, source=None, run_dir=item.run_dir)
    return _sniffed(fresh, read_head(fresh.open, SAMPLE_BYTES))


def _still_known(known: KnownSource, path: Path) -> bool:
    """Whether what an earlier ingest recognised still holds without reading the file again:
    a recognised file stays what it was (one replaced by another is found out when read); an
    unrecognised one, as long as its size is the same."""
    if known.source is not None:
        return source_named(known.source) is not None  # a plug-in may have been uninstalled
    try:
        return known.size == path.stat().st_size
    except OSError:
        return False


#: what a DuckDB database file (a taskscope store among them) holds at byte 8
DUCKDB_MAGIC = b"DUCK"


def _sniffed(item: InputFile, head: bytes | None) -> InputFile:
    """`item` recognised from its first bytes (`head`, None if it could not be read)."""
    if head is None:
        item.unreadable, item.note = True, "cannot be read"
        return item
    name = PurePosixPath(item.path.replace(MEMBER_SEPARATOR, "/")).name
    sampled = read_sample(item.open, SAMPLE_BYTES, head) if head else head
    sample = Sample(name.removesuffix(".gz") if item.packed else name, head if sampled is None else sampled, item.rel)
    source = recognising_source(sample)
    if source is not None:
        return _recognised(item, source, None)
    if not head:
        note = "empty"
    elif head[8:12] == DUCKDB_MAGIC:
        note = "unknown format (a DuckDB database: a store is not read as an input)"
    elif sample.is_utf16:
        note = "unknown format (UTF-16 text: taskscope reads UTF-8; convert it with iconv -f UTF-16 -t UTF-8)"
    elif not sample.lines:
        note = "unknown format (binary)" if b"\x00" in head + sample.head else "unknown format (no complete line yet)"
    else:
        note = "unknown format" if sample.is_text else "unknown format (binary)"
    item.note = note
    # a file named like a log that is not one is worth a word; a script or a CSV is not
    item.unexpected = head != b"" and sample.name.endswith((".log", ".jsonlog", ".jsonl"))
    return item


def _recognised(item: InputFile, source: Source | None, note: str | None) -> InputFile:
    """`item` as read by `source` (None: not read, with `note`)."""
    if source is None:
        item.note = note
        return item
    item.source, item.order = source.name, source.order
    item.component, item.stamps = source.path_info(item.path.replace(MEMBER_SEPARATOR, "/"))
    return item


def find_run_dir(path: Path) -> str | None:
    """The nearest folder at or above `path` that holds a DFK log (parsl.log / parsl.jsonlog)."""
    return _run_dir_of_folder(str(path.parent))


@lru_cache(maxsize=4096)
def _run_dir_of_folder(folder: str) -> str | None:
    if any(os.path.exists(os.path.join(folder, marker)) for marker in RUN_DIR_MARKERS):
        return folder
    parent = os.path.dirname(folder)
    return None if parent == folder else _run_dir_of_folder(parent)


def _run_folder_in(member: str, names: set[str]) -> str | None:
    """The nearest folder of the archive at or above `member` that holds a DFK log ('' for the
    archive's top), or None."""
    folder = PurePosixPath(member).parent
    while True:
        prefix = "" if str(folder) == "." else f"{folder}/"
        if any(f"{prefix}{marker}" in names for marker in RUN_DIR_MARKERS):
            return prefix.rstrip("/")
        if str(folder) == ".":
            return None
        folder = folder.parent
