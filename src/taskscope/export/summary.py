"""What every export returns and raises: a summary of what was written, and the one error type a
user can fix (an existing output, an unwritable path)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

#: called as `on_progress(description, done, total)` while an export runs (total None: unknown)
ProgressCallback = Callable[[str, int, Optional[int]], None]


def report(on_progress: ProgressCallback | None, description: str, done: int = 0, total: int | None = None) -> None:
    """Tell `on_progress`, if any, how far an export is."""
    if on_progress is not None:
        on_progress(description, done, total)


class ExportError(RuntimeError):
    """The export cannot be written where asked (folder not empty, path not writable, ...)."""


@dataclass
class ExportSummary:
    """What an export wrote: the format, where, how many store events it covered, how many runs,
    and format-specific counts in `details` (files, trace events, lines, ...)."""

    format: str
    path: Path
    events: int
    runs: int
    details: dict[str, int] = field(default_factory=dict)

    def line(self) -> str:
        """One human line, as the CLI prints it.

        >>> ExportSummary("otlp", Path("logs.jsonl"), 10, 1, {"lines": 1}).line()
        'wrote otlp to logs.jsonl: 10 events of 1 run (lines: 1)'
        """
        extra = ", ".join(f"{key.replace('_', ' ')}: {value:,}" for key, value in self.details.items())
        runs = f"{self.runs} run" + ("" if self.runs == 1 else "s")
        return f"wrote {self.format} to {self.path}: {self.events:,} events of {runs}" + (f" ({extra})" if extra else "")

    def as_dict(self) -> dict:
        return {"format": self.format, "path": str(self.path), "events": self.events, "runs": self.runs, **self.details}


def writable_file(path: str | Path) -> Path:
    """`path` as a Path, after checking its folder exists and is writable (so an export fails
    before any work, with a message that says why)."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise ExportError(f"{path} is a folder: give a file name")
    if not folder.is_dir():
        raise ExportError(f"cannot write {path}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise ExportError(f"cannot write {path}: permission denied")
    return path
