"""Input formats. One module per format, each with the same small interface, registered here.

Each source module declares a module-level ``SOURCE = Source(...)``: its name, how it
recognises a file (`recognise`, given a `Sample` of the file's name and first bytes), its
reading order, and how it reads:
- a line-oriented source has ``stage_lines(con, table_name, context) -> StageResult``, which
  reads the new lines of a file from the relation `table_name` (columns `line`, the 1-based
  line number, and `txt`, the decoded line without its ending; lines that cannot be decoded
  are already in bad_lines, see `taskscope.ingest.lines`) and inserts its records into the
  staging table;
- a whole-file source (monitoring.db) has ``stage_file(con, context) -> StageResult`` and is
  read again whole whenever the file changes.
The ingest asks the sources in turn (`recognising_source`) and has no branch of its own per
format. Other packages add sources through the entry point group `taskscope.sources`, each
entry naming a `Source` (or a module with a `SOURCE`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import import_module
from importlib.metadata import entry_points
from types import ModuleType
from typing import Any


@dataclass
class StageContext:
    """What a source needs to know about the file it reads."""

    file_id: int
    file: str  # as shown in events.file
    path: str  # absolute path
    component: str | None  # the value of events.source for this file
    stamps: dict[str, str] = field(default_factory=dict)  # executor_label, block_id, ...
    lines_before: int = 0  # lines of this file already ingested
    utc_offset_seconds: float = 0.0  # for formats that log naive local time
    progress: dict = field(default_factory=dict)  # per-source resume state (monitoring.db rowids)
    #: the machine's zone (`Europe/Paris`) when naive local times are read in it at their own
    #: date (no offset given or learned: see `taskscope.local_time`), else None
    local_zone: str | None = None

    def local_epoch_sql(self, timestamp_sql: str, learned_offset: float | None = None) -> str:
        """SQL: epoch seconds of a naive local TIMESTAMP expression: in `local_zone` at its own
        date (daylight saving included), else shifted by a fixed offset (`learned_offset`, or
        `utc_offset_seconds`).

        >>> StageContext(1, "f", "/f", None, utc_offset_seconds=3600).local_epoch_sql("t")
        '(epoch(t) - 3600.0)'
        >>> StageContext(1, "f", "/f", None, local_zone="Europe/Paris").local_epoch_sql("t")
        "epoch(timezone('Europe/Paris', t))"
        """
        if learned_offset is None and self.local_zone:
            return f"epoch(timezone('{self.local_zone.replace(chr(39), chr(39) * 2)}', {timestamp_sql}))"
        offset = self.utc_offset_seconds if learned_offset is None else learned_offset
        return f"(epoch({timestamp_sql}) - {offset_sql(offset)})"


@dataclass
class StageResult:
    """What a source did with its input."""

    events: int = 0
    bad_lines: int = 0
    note: str | None = None
    learned_utc_offset: float | None = None
    values_in_attrs: int = 0  # values that did not fit their typed column (pid: "w-1"), kept in attrs


def offset_sql(seconds: float) -> str:
    """A UTC offset in seconds as a SQL number. Not a parameter as it sits in SQL built in
    pieces; checked, as `nan` or `inf` would read as a column name.

    >>> offset_sql(-3600)
    '-3600.0'
    """
    value = float(seconds)
    if not math.isfinite(value):
        raise ValueError(f"a UTC offset must be a finite number of seconds, not {seconds!r}")
    return repr(value)


def stamp_columns_sql(stamps: dict[str, str]) -> tuple[str, list[str]]:
    """SQL select-list entries (and their parameters) for the ids a file's path gives."""
    names = sorted(stamps)
    return "".join(f", ?::VARCHAR AS {name}" for name in names), [stamps[n] for n in names]


#: how much of a file's start a source sees to recognise it
SAMPLE_BYTES = 16 << 10
#: the most lines of that start a `Sample` offers
SAMPLE_LINES = 100


class Sample:
    """What a source sees of a file to recognise it: its name and its first bytes.

    `name` is the file's name without a compression suffix (`parsl.log` for `parsl.log.gz`);
    `head` is the start of its content (decompressed); `lines` are the complete lines of that
    start, decoded (undecodable bytes replaced), without their endings.

    >>> Sample("app.log", b"2026-01-02 03:04:05 start\\npartial").lines
    ['2026-01-02 03:04:05 start']
    """

    def __init__(self, name: str, head: bytes, path: str = ""):
        self.name = name
        self.head = head
        self.path = path  # as the user would name it (an archive member: `x.tar.gz!000/parsl.log`)
        self._lines: list[str] | None = None

    @property
    def lines(self) -> list[str]:
        if self._lines is None:
            complete = self.head[: self.head.rfind(b"\n") + 1]
            text = complete.decode("utf-8", errors="replace")
            self._lines = [line.rstrip("\r") for line in text.split("\n")[:SAMPLE_LINES] if line.strip()]
        return self._lines

    @property
    def is_text(self) -> bool:
        """True when its start has at least one complete line and no NUL byte."""
        return bool(self.lines) and b"\x00" not in self.head

    @property
    def is_utf16(self) -> bool:
        """True for text in UTF-16 (a byte-order mark, or a NUL byte beside each ASCII one), which
        taskscope does not read: a Windows program's log, PowerShell's `>` redirection.

        >>> Sample("app.log", "2026-01-02 start\\n".encode("utf-16")).is_utf16
        True
        """
        head = self.head[:512]
        if head.startswith((b"\xff\xfe", b"\xfe\xff")):
            return True
        pairs = len(head) // 2
        return pairs >= 8 and max(head[0::2].count(0), head[1::2].count(0)) >= pairs * 0.9


def share_matching(lines: list[str], pattern: re.Pattern[str]) -> float:
    """The share of `lines` that `pattern` matches at their start (0.0 for no lines).

    >>> share_matching(["a1", "b2", "a3"], re.compile("a"))
    0.6666666666666666
    """
    return sum(1 for line in lines if pattern.match(line)) / len(lines) if lines else 0.0


PathInfo = Callable[[str], tuple[str | None, dict[str, str]]]


def no_path_info(path: str) -> tuple[str | None, dict[str, str]]:
    """A `Source.from_path` for sources whose files' location says nothing."""
    return None, {}


@dataclass(frozen=True)
class Source:
    """One input format, as the ingest sees it.

    - `name`: what `ingested_files.source` records (by convention the module's name);
    - `recognise(sample) -> bool`: whether a file is of this format, from its name and start;
    - `order`: reading order, lower first (logs with epoch times teach the UTC offset to those
      with naive local times; monitoring.db, whole and re-read on change, comes last);
    - `stage_lines` or `stage_file`: how it reads (see the module docstring);
    - `component`: the default `events.source` of its events;
    - `from_path(path) -> (component, stamps)`: what a file's location says (Parsl's
      `<label>/block-N/<manager>/worker_M.log`), overriding `component` when not None;
    - `fallback`: asked only when no other source recognises the file (generic formats).

    >>> Source("csv_events", lambda sample: sample.name.endswith(".csv"), stage_lines=print).reads_whole_file
    False
    """

    name: str
    recognise: Callable[[Sample], bool]
    order: int = 50
    stage_lines: Callable[..., StageResult] | None = None
    stage_file: Callable[..., StageResult] | None = None
    component: str | None = None
    from_path: PathInfo = no_path_info
    fallback: bool = False

    @property
    def reads_whole_file(self) -> bool:
        return self.stage_file is not None

    def path_info(self, path: str) -> tuple[str | None, dict[str, str]]:
        """(events.source, stamps) of the file at `path` (an archive member's `a.tgz!x/y.log`)."""
        component, stamps = self.from_path(path)
        return component or self.component, stamps


#: the sources taskscope ships, by module name under `taskscope.sources`, in the order they are
#: asked: Academy's JSON logs (known by content) before Parsl's (any other `*.jsonlog`)
BUILT_IN = ("academy_jsonlog", "parsl_jsonlog", "parsl_textlog", "jsonlines", "monitoring_db", "timestamped_text")
ENTRY_POINT_GROUP = "taskscope.sources"


class SourceError(Exception):
    """A registered source cannot be used (its entry point fails to load, or names no Source)."""


@lru_cache(maxsize=1)
def registered_sources() -> tuple[Source, ...]:
    """Every source: the built-in ones, then those of the `taskscope.sources` entry points,
    in the order they are asked (specific formats first, fallbacks last).

    >>> [source.name for source in registered_sources()][:3]
    ['academy_jsonlog', 'parsl_jsonlog', 'parsl_textlog']
    """
    found = [_as_source(import_module(f"taskscope.sources.{name}"), name) for name in BUILT_IN]
    for entry in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        try:
            loaded = entry.load()
        except Exception as exc:  # noqa: BLE001 - a broken plug-in is named, not a traceback
            raise SourceError(f"source {entry.name!r} ({entry.value}) cannot be loaded: {exc}") from exc
        found.append(_as_source(loaded, entry.name))
    names = [source.name for source in found]
    duplicated = {name for name in names if names.count(name) > 1}
    if duplicated:
        raise SourceError(f"two sources are named {', '.join(sorted(duplicated))}")
    return tuple(sorted(found, key=lambda source: source.fallback))  # stable: built-ins first


def _as_source(loaded: Any, name: str) -> Source:
    source = getattr(loaded, "SOURCE", None) if isinstance(loaded, ModuleType) else loaded
    if not isinstance(source, Source):
        raise SourceError(f"source {name!r} names no taskscope.sources.Source")
    if (source.stage_lines is None) == (source.stage_file is None):
        raise SourceError(f"source {name!r} needs exactly one of stage_lines and stage_file")
    return source


def source_named(name: str) -> Source | None:
    """The registered source called `name`, or None."""
    return next((source for source in registered_sources() if source.name == name), None)


def recognising_source(sample: Sample) -> Source | None:
    """The first source that recognises `sample` (specific formats before fallbacks), or None.

    >>> recognising_source(Sample("w.jsonlog", b"")).name
    'parsl_jsonlog'
    """
    return next((source for source in registered_sources() if source.recognise(sample)), None)
