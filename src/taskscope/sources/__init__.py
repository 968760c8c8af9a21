"""Input formats. One module per format, each with the same small interface.

A line-oriented source exposes ``stage_lines(con, table_name, context) -> StageResult``,
which reads the new lines of a file from the relation `table_name` (columns `line`, the
1-based line number, and `txt`, the decoded line without its ending; lines that cannot be
decoded are already in bad_lines, see `taskscope.ingest.lines`) and inserts its records
into the staging table.
A whole-file source (monitoring.db) exposes ``stage_file(con, context) -> StageResult``.
"""

from __future__ import annotations

from dataclasses import dataclass, field


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


@dataclass
class StageResult:
    """What a source did with its input."""

    events: int = 0
    bad_lines: int = 0
    note: str | None = None
    learned_utc_offset: float | None = None


def stamp_columns_sql(stamps: dict[str, str]) -> tuple[str, list[str]]:
    """SQL select-list entries (and their parameters) for the ids a file's path gives."""
    names = sorted(stamps)
    return "".join(f", ?::VARCHAR AS {name}" for name in names), [stamps[n] for n in names]
