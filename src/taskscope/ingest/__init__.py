"""Ingest: files in, events out. Discover inputs and recognise each (see `taskscope.sources`),
read only what is new, let its source stage its records, name them with the rules, move them
to `events`, then relate ids.

Work is committed in batches: after a file once a batch has run two seconds or holds
`FLUSH_ROWS` events, and inside a big file every `FLUSH_ROWS` events. Staged records are named
and moved to `events` (inside the transaction) every `MOVE_ROWS`, so that staging never holds a
whole batch beside its events. A file's events and its offsets in `ingested_files` are always
committed together, so an interrupted ingest keeps every file (or part of a big file) it
committed, exactly, and the next ingest goes on from there. Files whose events are stored but not yet related (the relating comes last) are listed
in `files_to_relate` until a relating succeeds.
"""

from __future__ import annotations

import os
import time
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Callable

import duckdb

from taskscope._sql import registered, scalar
from taskscope.ingest.archives import READ_ERRORS, as_local_file, change_marker, leading_nul_bytes
from taskscope.ingest.archives import MEMBER_SEPARATOR
from taskscope.ingest.discover import ARCHIVE_NOTE, InputFile, KnownSource, discover, recognised_again
from taskscope.ingest.duplicates import same_content_as
from taskscope.ingest.lines import bad_lines_sql, file_size, read_new_lines, usable_lines_sql
from taskscope.ingest.staging import STAGED, create_staging
from taskscope.relations import Relation
from taskscope.relations.engine import RelateReport, relate
from taskscope.relations.notes import user_relation_notes
from taskscope.rules import Rule, apply_rules_sql, load_rules, reapply_rules, user_rule_notes
from taskscope.local_time import local_utc_offset_seconds, local_zone_name
from taskscope.schema import EVENT_COLUMN_NAMES
from taskscope.sources import Source, StageContext, StageResult, source_named

#: a batch is committed once it holds this many events, to bound memory
FLUSH_ROWS = 2_000_000
#: staged rows are named and moved to `events` once there are this many (memory: the 9,000-task
#: JSON run of benchmarks/ingest_bench.py peaked at ~980 MiB when all 369k waited for the commit,
#: ~850 MiB this way)
MOVE_ROWS = 150_000
#: a batch of small files is committed once it has been open this long
COMMIT_SECONDS = 2.0

ProgressCallback = Callable[[InputFile, int, int], None]


@dataclass
class IngestReport:
    """What an ingest did: counts for the closing summary and for scripts."""

    files_read: int = 0
    files_unchanged: int = 0
    files_skipped: int = 0
    files_unreadable: int = 0
    events: int = 0
    lines: int = 0
    bad_lines: int = 0
    partial_lines: int = 0
    values_in_attrs: int = 0  # values that did not fit their typed column, kept in attrs
    #: of `events`, those that replaced a changed whole-read file's earlier ones (monitoring.db
    #: is read whole again when it changes): not new to the store
    events_read_again: int = 0
    files_read_again: list[str] = field(default_factory=list)  # those files, as named in the summary
    notes: list[str] = field(default_factory=list)
    #: why each file not read was left quietly (a script, a CSV, an empty log): `--verbose` lists them
    skipped_notes: list[str] = field(default_factory=list)
    relate: RelateReport | None = None
    #: rules and relations given to this ingest were applied again to every stored event
    reapplied: bool = False
    reapplied_events: int = 0  # stored events the re-applied rules named or gave ids
    #: rules and relations files the store kept from an earlier ingest, read by this one too
    remembered_files: list[str] = field(default_factory=list)
    #: a user's rules and relations that did nothing (or kept values aside), one line each
    config_notes: list[str] = field(default_factory=list)
    #: when nothing under the paths can be read: one line saying what was found there
    nothing_readable: str | None = None

    def as_dict(self) -> dict:
        data = {k: v for k, v in self.__dict__.items() if k != "relate"}
        data["relate"] = self.relate.__dict__ if self.relate else None
        return data


class MissingInputError(FileNotFoundError):
    """A path given to ingest does not exist."""


class IngestInterrupted(KeyboardInterrupt):
    """Ctrl-C (or a DuckDB interrupt) stopped an ingest. What was committed before is kept,
    whole; the batch under way was rolled back.

    >>> print(IngestInterrupted(files_kept=3, events_kept=1200, related=False))
    interrupted: kept 3 files (1,200 events) read before; nothing partial was stored; ids of the kept events are related at the next ingest
    """

    def __init__(self, files_kept: int, events_kept: int, related: bool):
        self.files_kept, self.events_kept, self.related = files_kept, events_kept, related
        super().__init__(self.summary())

    def summary(self) -> str:
        kept = (f"kept {self.files_kept} files ({self.events_kept:,} events) read before"
                if self.files_kept else "kept nothing of this ingest")
        tail = "" if self.related or not self.files_kept else "; ids of the kept events are related at the next ingest"
        return f"interrupted: {kept}; nothing partial was stored{tail}"

    def __str__(self) -> str:
        return self.summary()


def ingest(
    con: duckdb.DuckDBPyConnection,
    paths: list[str],
    rules: list[Rule] | None = None,
    on_progress: ProgressCallback | None = None,
    utc_offset_seconds: float | None = None,
    relations: list[Relation] | None = None,
    reapply: bool = False,
    on_commit: Callable[[], None] | None = None,
) -> IngestReport:
    """Ingest everything new under `paths` into the store behind `con`.

    `on_commit` is called after each commit that made new events visible to other connections
    (each batch that kept events, then relate): a live dashboard drops what it derived before.

    `relations` default to the shipped ones; with `reapply` the rules are applied again to the
    stored events no rule named yet and the whole store is related again (for rules or
    relations given to an existing store).

    `utc_offset_seconds` overrides the offset used for naive local timestamps (otherwise
    learned from the run's logs, else this machine's). Raises `IngestInterrupted` on Ctrl-C
    (what was committed stays, see the module docstring).

    >>> report = ingest(con, ["runinfo/"])  # doctest: +SKIP
    """
    rules = load_rules() if rules is None else rules
    report = IngestReport()
    batch = _Batch(con, rules, report, on_commit)
    try:
        reapply = reapply and bool(scalar(con, "SELECT EXISTS (SELECT 1 FROM events)"))  # a new store: nothing to redo
        con.execute("CREATE TABLE IF NOT EXISTS files_to_relate (file_id INTEGER)")
        known = _known_files(con)
        with discover(paths, {path: KnownSource(k.source, k.size, k.note) for path, k in known.items()}) as found:
            if found.missing:
                raise MissingInputError(f"no such file or folder: {', '.join(found.missing)}")
            batch.begin()
            create_staging(con)
            offsets = _Offsets(utc_offset_seconds)
            for item in found.inputs:
                _ingest_one(con, item, known, report, offsets, batch, on_progress)
                batch.commit_if_due()
            batch.commit()
            report.relate = _relate_stored(con, batch.read, relations, rules if reapply else None, report)
            if report.events or reapply:  # a live folder is ingested every few seconds, mostly for nothing
                report.config_notes = user_rule_notes(con, rules) + user_relation_notes(con, relations or [], report.relate)
            if on_commit is not None and (report.events or reapply):
                on_commit()
    except BaseException as exc:
        batch.rollback()
        if _is_interrupt(exc):
            raise IngestInterrupted(batch.files_kept, batch.events_kept, related=False) from None
        raise
    report.nothing_readable = _nothing_readable(paths, found.inputs, report)
    return report


class _Batch:
    """The transaction under way, and what the committed ones kept."""

    def __init__(self, con: duckdb.DuckDBPyConnection, rules: list[Rule], report: IngestReport,
                 on_commit: Callable[[], None] | None = None):
        self.con, self.rules, self.report, self.on_commit = con, rules, report, on_commit
        self.read: set[int] = set()  # file_ids read by this ingest
        self.files_kept = self.events_kept = 0
        self._opened_at = 0.0
        self._open = False
        # while a COMMIT is under way: what it keeps, and the store's counts once it has gone through
        self._committing: tuple[tuple[int, int], tuple[int, int]] | None = None

    def begin(self) -> None:
        self.con.execute("BEGIN TRANSACTION")
        self._open, self._opened_at = True, time.monotonic()

    def flush(self) -> None:
        _flush(self.con, self.rules)

    def commit(self) -> None:
        """Name the staged records, move them to `events` and commit."""
        self.flush()
        kept = self.report.files_read, self.report.events
        self._committing = kept, self._store_counts()
        self.con.execute("COMMIT")
        kept_new_events = kept[1] > self.events_kept
        self.files_kept, self.events_kept = kept
        self._open = False
        self._committing = None
        if self.on_commit is not None and kept_new_events:
            self.on_commit()

    def _store_counts(self) -> tuple[int, int]:
        """Events, and files kept whole, as this connection sees the store."""
        return self.con.execute("SELECT (SELECT count(*) FROM events), "
                                "(SELECT count(*) FROM ingested_files WHERE size IS NOT NULL)").fetchone()

    def commit_if_due(self) -> None:
        if time.monotonic() - self._opened_at >= COMMIT_SECONDS or self.uncommitted_events() >= FLUSH_ROWS:
            self.commit()
            self.begin()

    def move_if_due(self) -> None:
        """Name the staged records and move them to `events` once there are `MOVE_ROWS`."""
        if _staged_rows(self.con) >= MOVE_ROWS:
            self.flush()

    def uncommitted_events(self) -> int:
        return self.report.events - self.events_kept

    def rollback(self) -> None:
        if not self._open:
            return
        self._open = False
        _quietly(self.con, "ROLLBACK")
        if self._committing is not None:
            # a Ctrl-C that came as COMMIT returned: the store says whether it went through
            (kept, committed_counts), self._committing = self._committing, None
            if self._store_counts() == committed_counts:
                self.files_kept, self.events_kept = kept


def _relate_stored(con: duckdb.DuckDBPyConnection, read: set[int], relations: list[Relation] | None = None,
                   reapply: list[Rule] | None = None, ingest_report: IngestReport | None = None) -> RelateReport:
    """Relate the files this ingest read and any an interrupted one stored but did not relate;
    with `reapply` (rules), apply those to every stored event first and relate the whole store."""
    con.execute("BEGIN TRANSACTION")
    try:
        pending = {row[0] for row in con.execute("SELECT DISTINCT file_id FROM files_to_relate").fetchall()}
        if reapply is not None and ingest_report is not None:
            ingest_report.reapplied = True
            ingest_report.reapplied_events = reapply_rules(con, reapply)
        report = relate(con, None if reapply is not None else sorted(read | pending), relations)
        con.execute("DELETE FROM files_to_relate")
        con.execute("COMMIT")
    except BaseException:
        _quietly(con, "ROLLBACK")
        raise
    return report


def _is_interrupt(exc: BaseException) -> bool:
    """Ctrl-C, as Python raises it or as DuckDB does when it arrives inside a query."""
    # DuckDB reports a Ctrl-C that arrives while it reads a registered Arrow table as an error
    # of its own that names the KeyboardInterrupt
    text = str(exc)
    return isinstance(exc, (KeyboardInterrupt, duckdb.InterruptException)) or (
        isinstance(exc, (RuntimeError, duckdb.Error)) and ("KeyboardInterrupt" in text or "interrupted" in text.lower())
    )


def interrupt_message(exc: BaseException) -> str | None:
    """The one line to print when `exc` is a Ctrl-C that stopped an ingest (None if it is not
    an interrupt): what was kept, and that nothing partial was stored.

    >>> interrupt_message(KeyboardInterrupt())
    'interrupted: kept what earlier commits stored, whole; nothing partial was stored'
    >>> interrupt_message(ValueError("x")) is None
    True
    """
    if isinstance(exc, IngestInterrupted):
        return exc.summary()
    if _is_interrupt(exc):
        return "interrupted: kept what earlier commits stored, whole; nothing partial was stored"
    return None


def _nothing_readable(paths: list[str], inputs: list[InputFile], report: IngestReport) -> str | None:
    """One line naming what was found under `paths` when none of it is read by any source."""
    if any(item.source is not None for item in inputs):
        return None
    where = ", ".join(paths)
    if not inputs:
        return f"nothing taskscope can read in {where}: no files found"
    listed = ", ".join(f"{item.rel} ({item.note or 'not read'})" for item in inputs[:5])
    more = f" and {len(inputs) - 5} more" if len(inputs) > 5 else ""
    return f"nothing taskscope can read in {where}: {len(inputs)} files: {listed}{more}"


class _Offsets:
    """UTC offsets for naive local times: forced, learned per run folder (a file outside any, such
    as a runinfo's `monitoring.db`, takes what its sibling run folders taught), or the machine's."""

    def __init__(self, forced: float | None):
        self.forced = forced
        self.by_run_dir: dict[str | None, float] = {}
        self.last_learned: float | None = None

    def for_item(self, item: InputFile) -> float:
        if self.forced is not None:
            return self.forced
        learned = self._learned_for(item)
        return learned if learned is not None else local_utc_offset_seconds()

    def zone_for_item(self, item: InputFile) -> str | None:
        """The machine's zone, when its naive times are read in it (no offset given or learned)."""
        if self.forced is not None or self._learned_for(item) is not None:
            return None
        return local_zone_name()

    def _learned_for(self, item: InputFile) -> float | None:
        """The offset its own run folder taught, else the last one its sibling run folders taught
        (two runinfos made in two zones and ingested together each keep their own), else the
        last one any taught."""
        if item.run_dir in self.by_run_dir:
            return self.by_run_dir[item.run_dir]
        folder = os.path.dirname(item.path)
        siblings = [offset for run_dir, offset in self.by_run_dir.items()
                    if run_dir is not None and os.path.dirname(run_dir) == folder]
        return siblings[-1] if siblings else self.last_learned

    def learn(self, item: InputFile, offset: float) -> None:
        self.by_run_dir[item.run_dir] = offset
        self.last_learned = offset


_FILE_COLUMNS = "file_id, source, size, bytes_read, lines_read, pending_bytes, note, head"

#: how much of a file's start is kept to recognise it: a file that grew keeps its first bytes,
#: one replaced by another (a rotated log, a copy over it) almost never does
HEAD_BYTES = 256


@dataclass
class _KnownFile:
    """What `ingested_files` says about a file seen before (or just registered)."""

    file_id: int
    source: str | None
    size: int | None
    bytes_read: int
    lines_read: int
    pending_bytes: int
    note: str | None
    head: bytes | None


def _known_files(con: duckdb.DuckDBPyConnection) -> dict[str, _KnownFile]:
    """path -> what is known of every file seen before: read in one query, since a live folder
    is ingested every few seconds and one query per file cost ~1 ms each (0.29 s for the 237
    files of 17 runs)."""
    rows = con.execute(f"SELECT path, {_FILE_COLUMNS} FROM ingested_files").fetchall()
    return {row[0]: _KnownFile(*row[1:]) for row in rows}


def _file_row(con: duckdb.DuckDBPyConnection, item: InputFile, known: dict[str, _KnownFile],
              notes: list[str]) -> _KnownFile:
    if item.path in known:
        return known[item.path]
    renamed = _renamed_from(item, known)
    if renamed is not None:  # rotation moved it (parsl.log -> parsl.log.1): read on where it was
        seen = known.pop(renamed)
        con.execute("UPDATE ingested_files SET path = ?, file = ?, run_dir = ? WHERE file_id = ?",
                    [item.path, item.rel, item.run_dir, seen.file_id])
        for table in ("events", "bad_lines"):
            con.execute(f"UPDATE {table} SET file = ? WHERE file_id = ?", [item.rel, seen.file_id])
        notes.append(f"{item.rel}: the file read before as {renamed} (renamed away, as rotation does): "
                     f"its {seen.lines_read:,} lines read then are not read again")
        known[item.path] = seen
        return seen
    # fetchall, not fetchone: DuckDB keeps a half-read result open, which blocks register()
    return _KnownFile(*con.execute(
        f"""INSERT INTO ingested_files (path, file, source, run_dir) VALUES (?, ?, ?, ?)
            RETURNING {_FILE_COLUMNS}""",
        [item.path, item.rel, item.source, item.run_dir],
    ).fetchall()[0])


def _renamed_from(item: InputFile, known: dict[str, _KnownFile]) -> str | None:
    """The path of the one file read before that `item` (a plain file new to the store) is,
    renamed: that path is gone, `item` begins with the first bytes kept of it and holds at least
    what was read of it. None for a new file (or when two gone files would fit)."""
    # only a regular file taskscope reads (opening a FIFO would block the ingest)
    head = None if item.packed or item.source is None or not os.path.isfile(item.path) else _read_head(item.path)
    if not head:
        return None
    size = file_size(item.path)
    fits = [path for path, seen in known.items()  # the stat last: only for a file whose head fits
            if seen.head and seen.bytes_read and size >= seen.bytes_read and head.startswith(seen.head)
            and MEMBER_SEPARATOR not in path and not os.path.exists(path)]
    return fits[0] if len(fits) == 1 else None


@dataclass
class _Reading:
    """How far a file has been read, as the read goes on."""

    bytes_read: int
    lines_read: int
    events: int = 0
    bad: int = 0
    notes: list[str] = field(default_factory=list)


def _ingest_one(con, item: InputFile, known: dict[str, _KnownFile], report: IngestReport, offsets: _Offsets,
                batch: _Batch, on_progress: ProgressCallback | None) -> None:
    """Read what is new in `item` with its source and record how far it was read."""
    seen = _file_row(con, item, known, report.notes)
    source = source_named(item.source) if item.source else None
    size = -1 if item.packed else file_size(item.path)
    if source is None or (size < 0 and not item.packed):
        _skip(con, item, seen, size, report, None if source is None else "cannot be read")
        return
    whole = item.packed or source.reads_whole_file
    # what `ingested_files.size` records: a plain log's bytes, else a marker of any change
    seen_size = item.marker if item.packed else change_marker(item.path) if source.reads_whole_file else size
    # a log whose last line was cut (a killed program) is unchanged while its size is: its
    # partial line was said once, not at every ingest
    if seen.source == source.name and seen_size == seen.size and (whole or (
            size == seen.bytes_read + seen.pending_bytes and not _head_changed(item, seen))):
        report.files_unchanged += 1
        return
    if seen.size is None and not seen.bytes_read and not seen.lines_read:  # new to the store
        copied = same_content_as(item.open, None if item.packed else size, source.name,
                                 [(path, k.source, k.head) for path, k in known.items() if path != item.path])
        if copied is not None:
            _record_copy(con, item, seen, source, seen_size, size, copied, report)
            return
    reading = _Reading(seen.bytes_read, seen.lines_read)
    restart = _why_read_again(item, size, seen, source, whole)
    if restart and not whole:  # another file took its name: what it is now is told by its content
        fresh = recognised_again(item)
        if fresh.source != source.name:
            removed = _forget_file(con, seen.file_id)
            con.execute("UPDATE ingested_files SET source = NULL, bytes_read = 0, lines_read = 0, head = NULL "
                        "WHERE file_id = ?", [seen.file_id])
            fresh_source = source_named(fresh.source) if fresh.source else None
            if fresh_source is None:
                report.notes.append(f"{item.rel}: {restart}, and taskscope cannot read what it holds now "
                                    f"({fresh.note}): its {removed:,} earlier events were removed from the store")
                fresh.unexpected = False  # said above
                _skip(con, fresh, seen, size, report)
                return
            item, source = fresh, fresh_source
            restart = f"{restart}, now read as {source.name}"
    replaced = 0  # earlier events of a changed whole-read file, which its new read replaces
    if whole or restart:
        removed = _forget_file(con, seen.file_id)
        replaced = 0 if restart else removed
        reading.bytes_read = reading.lines_read = 0
        if restart:
            reading.notes.append(f"{restart}: read again from the start"
                                 + (f" (its {removed:,} earlier events replaced)" if removed else ""))
    context = StageContext(
        file_id=seen.file_id, file=item.rel, path=item.path, component=item.component, stamps=item.stamps,
        lines_before=reading.lines_read, utc_offset_seconds=offsets.for_item(item),
        local_zone=offsets.zone_for_item(item),
    )
    if source.stage_file is not None:
        batch.flush()
        with as_local_file(item.open, item.path) as local:
            context.path = local
            _count(reading, source.stage_file(con, context), report)
    else:
        if reading.bytes_read == 0:
            _skip_leading_gap(item, reading)
        try:
            chunks = read_new_lines(item.path, reading.bytes_read, reading.lines_read,
                                    opener=item.opener, final=item.packed)
        except OSError as exc:  # readable by stat, not by open (permissions, a vanished file)
            _skip(con, item, seen, size, report, f"cannot be read: {exc.strerror or exc}")
            return
        try:
            for chunk in chunks:
                _stage_lines_of(con, item, chunk, source, context, reading, report, offsets)
                if on_progress:
                    on_progress(item, reading.bytes_read, max(size, reading.bytes_read))
                if not whole and batch.uncommitted_events() >= FLUSH_ROWS:  # a big file: keep what is read so far
                    _record(con, item, seen, source, reading, size, restart, partial=True)
                    reading.events = reading.bad = 0
                    batch.commit()
                    batch.begin()
                else:
                    batch.move_if_due()
        except READ_ERRORS as exc:  # damaged content (a truncated .gz): what came before it is kept
            reading.notes.append(f"read stopped at line {reading.lines_read + 1}: {exc}")
    pending = 0 if whole else max(0, size - reading.bytes_read)
    report.partial_lines += 1 if pending else 0
    report.files_read += 1
    if replaced:
        report.events_read_again += min(replaced, reading.events)
        report.files_read_again.append(item.rel)
    note = "; ".join(reading.notes) or None
    if note:
        report.notes.append(f"{item.rel}: {note}")
    head = _record(con, item, seen, source, reading, seen_size, restart, pending=pending)
    # what a copy of it read later in this ingest is compared with
    known[item.path] = _KnownFile(seen.file_id, source.name, seen_size, reading.bytes_read, reading.lines_read,
                                  pending, note, head)
    batch.read.add(seen.file_id)
    if on_progress:
        on_progress(item, max(size, reading.bytes_read), max(size, reading.bytes_read))


def _skip_leading_gap(item: InputFile, reading: _Reading) -> None:
    """Start reading after the NUL bytes a file starts with (a copytruncate rotation's gap),
    saying so: they are no line of the log."""
    gap = leading_nul_bytes(item.open)
    if gap:
        reading.bytes_read = gap
        reading.notes.append(f"skipped the {gap:,} NUL bytes it starts with (the gap a copytruncate "
                             "rotation leaves when the program writing the log does not append)")


def _stage_lines_of(con, item: InputFile, chunk, source: Source, context: StageContext, reading: _Reading,
                    report: IngestReport, offsets: _Offsets) -> None:
    """Stage one chunk of lines and move the file's reading past it."""
    learned = _count(reading, _stage_chunk(con, source, chunk, context), report)
    if learned is not None:
        offsets.learn(item, learned)
        context.utc_offset_seconds = learned
    reading.lines_read += chunk.n_lines
    context.lines_before = reading.lines_read
    reading.bytes_read = chunk.end_offset
    report.lines += chunk.n_lines


def _count(reading: _Reading, result: StageResult, report: IngestReport) -> float | None:
    """Add a source's result to the file's and the ingest's counts; returns the UTC offset it
    learned, if any."""
    reading.events += result.events
    reading.bad += result.bad_lines
    report.events += result.events
    report.bad_lines += result.bad_lines
    report.values_in_attrs += result.values_in_attrs
    if result.note and result.note not in reading.notes:
        reading.notes.append(result.note)
    return result.learned_utc_offset


def _record(con, item: InputFile, seen: _KnownFile, source: Source, reading: _Reading, size: int,
            restart: str | None, pending: int = 0, partial: bool = False) -> bytes | None:
    """Write how far `item` was read, in the transaction that holds its events; returns the first
    bytes kept of it."""
    keep_head = seen.head is not None and len(seen.head) == HEAD_BYTES and not restart
    whole = item.packed or source.reads_whole_file
    # a whole-read plain file's first bytes too: a copy of it is told by them (`same_content_as`)
    head = None if item.packed else seen.head if keep_head and not whole else _read_head(item.path)
    note = None if partial else "; ".join(reading.notes) or None
    # a file read from its start has only this read's note; one that grew keeps what an earlier
    # read noted (a rotation, skipped NUL bytes) until something new is to be said
    from_start = whole or restart is not None
    con.execute(
        """UPDATE ingested_files SET source = ?, run_dir = ?, size = ?, bytes_read = ?, lines_read = ?,
                  events = events + ?, bad_lines = bad_lines + ?, pending_bytes = ?,
                  note = CASE WHEN ? THEN ? ELSE coalesce(?, note) END, head = ?, ingested_at = current_timestamp
           WHERE file_id = ?""",
        [source.name, item.run_dir, size, reading.bytes_read, reading.lines_read, reading.events, reading.bad,
         pending, from_start, note, note, head, seen.file_id],
    )
    con.execute("INSERT INTO files_to_relate VALUES (?)", [seen.file_id])
    return head


def _record_copy(con, item: InputFile, seen: _KnownFile, source: Source, seen_size: int, size: int, copied: str,
                 report: IngestReport) -> None:
    """Keep `item`, whose bytes are those of `copied` (read before), as read, without reading it:
    its events are stored already. Said once; should the copy grow, what it gains is read."""
    first, lines = con.execute("SELECT file, lines_read FROM ingested_files WHERE path = ?", [copied]).fetchall()[0]
    note = f"the same bytes as {first}, read before: not read again (its events would be stored twice)"
    report.notes.append(f"{item.rel}: {note}")
    report.files_unchanged += 1
    packed = item.packed
    con.execute(
        """UPDATE ingested_files SET source = ?, run_dir = ?, size = ?, bytes_read = ?, lines_read = ?, pending_bytes = 0,
                  note = ?, head = ?, ingested_at = current_timestamp WHERE file_id = ?""",
        [source.name, item.run_dir, seen_size, 0 if packed else size, 0 if packed else lines, note,
         None if packed else _read_head(item.path), seen.file_id])


def _skip(con, item: InputFile, seen: _KnownFile, size: int, report: IngestReport, note: str | None = None) -> None:
    """Count a file that is not read: unrelated to taskscope (quietly), named like a log but
    of no known format (a note), or unreadable (the user is told); its note is kept in
    `ingested_files`."""
    unreadable = item.unreadable or note is not None
    note = note or item.note
    if unreadable:
        report.files_unreadable += 1
        report.notes.append(f"{item.rel}: {note}")
    else:
        if not (note or "").startswith(ARCHIVE_NOTE):  # an archive is not skipped: its files are read
            report.files_skipped += 1
        (report.notes if item.unexpected else report.skipped_notes).append(f"{item.rel}: {note}")
    size = item.marker if item.packed else size
    if (size, note) != (seen.size, seen.note):
        con.execute("UPDATE ingested_files SET size = ?, note = ? WHERE file_id = ?", [size, note, seen.file_id])


def _why_read_again(item: InputFile, size: int, seen: _KnownFile, source: Source, whole: bool) -> str | None:
    """Why a file read before must be read again from its start, or None if it only grew:
    another source reads it now; a compressed file or an archive changed; a log shrank, or its
    first bytes changed (another file took its name)."""
    if not seen.bytes_read and not seen.lines_read and seen.size is None:
        return None
    if seen.source is not None and seen.source != source.name:
        return f"now read as {source.name} (was {seen.source})"
    if item.packed:
        return "changed since it was read" if seen.source is not None else None
    if whole or not seen.bytes_read:
        return None
    if size < seen.bytes_read:
        return "file shrank (rotated or rewritten)"
    if _head_changed(item, seen):
        return "file was replaced (its first bytes changed)"
    return None


def _head_changed(item: InputFile, seen: _KnownFile) -> bool:
    """True when the first bytes of a plain file differ from those kept when it was read: another
    file took its name, perhaps of the same size (an unreadable head says nothing: the open that
    follows reports the file as unreadable)."""
    head = _read_head(item.path, len(seen.head)) if seen.head is not None else None
    return head is not None and head != seen.head


def _read_head(path: str, length: int = HEAD_BYTES) -> bytes | None:
    try:
        with open(path, "rb") as handle:
            return handle.read(length)
    except OSError:
        return None


def _stage_chunk(con, source: Source, chunk, context: StageContext) -> StageResult:
    """Hand the chunk's usable lines to the source as the relation `chunk_text` (line, txt);
    keep the others aside in bad_lines."""
    if chunk.text is not None:
        with registered(con, "chunk_text", chunk.text):
            return source.stage_lines(con, "chunk_text", context)
    with registered(con, "chunk_lines", chunk.table):
        undecodable = scalar(
            con,
            f"INSERT INTO bad_lines SELECT ?, line, reason, head, ?::INTEGER FROM ({bad_lines_sql('chunk_lines')})",
            [context.file, context.file_id],
        )
        for line, head in chunk.overlong:
            con.execute(
                "INSERT INTO bad_lines VALUES (?, ?, ?, ?, ?)",
                [context.file, line, "line longer than 1 MiB", head, context.file_id],
            )
        con.execute(f"CREATE OR REPLACE TEMP TABLE chunk_text AS {usable_lines_sql('chunk_lines')}")
    try:
        result = source.stage_lines(con, "chunk_text", context)
    except BaseException:
        _quietly(con, "DROP TABLE IF EXISTS chunk_text")
        raise
    con.execute("DROP TABLE chunk_text")
    result.bad_lines += int(undecodable) + len(chunk.overlong)
    return result


def _quietly(con: duckdb.DuckDBPyConnection, sql: str) -> None:
    """Run a clean-up statement while another error propagates (see `taskscope._sql.registered`)."""
    with suppress(duckdb.Error):
        con.execute(sql)


def _staged_rows(con) -> int:
    return int(scalar(con, f"SELECT count(*) FROM {STAGED}"))


def _flush(con, rules: list[Rule]) -> None:
    """Name the staged records with the rules and move them to `events`."""
    columns = ", ".join(EVENT_COLUMN_NAMES)
    con.execute(f"INSERT INTO events ({columns}) {apply_rules_sql(rules, STAGED)}")
    con.execute(f"DELETE FROM {STAGED}")


def _forget_file(con, file_id: int) -> int:
    """Drop what a file gave before it is read again from its start; returns how many events."""
    removed = int(scalar(con, "DELETE FROM events WHERE file_id = ?", [file_id]))  # a DELETE returns its count
    for table in ("bad_lines", "event_task_links"):
        con.execute(f"DELETE FROM {table} WHERE file_id = ?", [file_id])
    con.execute("UPDATE ingested_files SET events = 0, bad_lines = 0 WHERE file_id = ?", [file_id])
    return removed
