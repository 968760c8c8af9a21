"""Find the inputs under the paths a user gives, and what each file's location tells.

A runinfo folder with many runs, one run folder, or single files: every file below is
classified by name into a source (see `taskscope.sources`), and its path is read for the
ids Parsl encodes in it: the run folder, the executor label, `block-N`, the manager id and
the worker number.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

RUN_DIR_MARKERS = ("parsl.log", "parsl.jsonlog")

# <label>/block-<N>/<manager uid>/(manager|worker_<M>).(log|jsonlog)
_EXECUTOR_SIDE = re.compile(
    r"(?:^|/)(?P<label>[^/]+)/block-(?P<block>[^/]+)/(?P<manager>[^/]+)/"
    r"(?:manager|worker_(?P<worker>\d+))\.(?:log|jsonlog)$"
)
_INTERCHANGE = re.compile(r"(?:^|/)(?P<label>[^/]+)/(?:interchange|monitoring_zmq_router)\.(?:log|jsonlog)$")


@dataclass
class InputFile:
    """One input: a file (or a monitoring.db) and what its path says about it."""

    path: str  # absolute
    rel: str  # relative to the path the user gave (what events.file shows)
    source: str | None  # name of the source module that reads it; None = skipped
    component: str | None = None  # parsl, interchange, manager, worker, dbm, router, ...
    run_dir: str | None = None
    stamps: dict[str, str] = field(default_factory=dict)  # executor_label, block_id, ...
    note: str | None = None  # why it is skipped
    unreadable: bool = False  # skipped because it cannot be read (the user is told), not as unrelated


def discover(paths: list[str]) -> tuple[list[InputFile], list[str]]:
    """Classify every file under `paths`. Returns (inputs, missing paths).

    Inputs come in the order they should be read: logs with epoch timestamps first (they
    teach the run's UTC offset to the formats with local times), monitoring.db last. A file
    under two of the paths (a folder and a file in it) comes once, named as the first names it.

    >>> inputs, missing = discover(["runinfo/"])
    """
    _run_dir_of_folder.cache_clear()  # folders may have gained a parsl.log since the last call
    found: list[InputFile] = []
    missing: list[str] = []
    for given in paths:
        root = Path(given)
        if not root.exists():
            missing.append(given)
        elif root.is_dir():
            found.extend(_walk(root))
        else:
            found.append(_classify_entry(root, root.name))
    once = list({item.path: item for item in reversed(found)}.values())  # the first of each path wins
    once.sort(key=_read_order)
    return once, missing


def _walk(root: Path) -> Iterator[InputFile]:
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
            yield _classify_entry(full, str(full.relative_to(root)))
    for error in unreadable:
        folder = Path(error.filename or root)
        rel = str(folder.relative_to(root)) if folder != root else folder.name
        yield InputFile(path=str(folder.resolve()), rel=rel, source=None, unreadable=True,
                        note=f"folder cannot be read: {error.strerror or error}")


def _classify_entry(path: Path, rel: str) -> InputFile:
    """`classify` for a regular file; anything else (a broken link, a FIFO, a socket, a device)
    is skipped with a note, since opening it could fail or block."""
    try:
        mode = path.stat().st_mode
    except (OSError, RuntimeError) as exc:  # a dangling link or a link loop
        reason = getattr(exc, "strerror", None) or str(exc)
        return InputFile(path=str(path.absolute()), rel=rel, source=None, unreadable=True,
                         note=f"cannot be read: {reason}")
    if not stat.S_ISREG(mode):
        return InputFile(path=str(path.absolute()), rel=rel, source=None,
                         note="not a regular file (a pipe, socket or device): not read")
    return classify(path.resolve(), rel)


def _read_order(item: InputFile) -> tuple[int, str]:
    rank = {"parsl_jsonlog": 0, "parsl_textlog": 1, "jsonlines": 2, "monitoring_db": 3}
    first = 0 if item.component == "parsl" else 1
    return (rank.get(item.source or "", 4) * 2 + first, item.path)


def classify(path: Path, rel: str) -> InputFile:
    """Decide which source reads `path` and what its location stamps on its events."""
    name = path.name
    run_dir = find_run_dir(path)
    item = InputFile(path=str(path), rel=rel, source=None, run_dir=run_dir)
    if name == "monitoring.db" or (name.endswith(".db") and _is_sqlite(path)):
        item.source, item.component = "monitoring_db", "monitoring"
        return item
    if name.endswith(".jsonlog"):
        item.source = "parsl_jsonlog"
    elif name.endswith(".log"):
        item.source = "parsl_textlog"
    elif name.endswith((".jsonl", ".ndjson")):
        item.source, item.component = "jsonlines", "jsonl"
        return item
    else:
        item.note = "not a log format taskscope reads"
        return item
    item.component, item.stamps = _component_and_stamps(str(path))
    return item


def _component_and_stamps(path: str) -> tuple[str, dict[str, str]]:
    stem = Path(path).name.rsplit(".", 1)[0]
    match = _EXECUTOR_SIDE.search(path)
    if match:
        stamps = {
            "executor_label": match["label"],
            "block_id": match["block"],
            "manager_id": match["manager"],
        }
        if match["worker"] is not None:
            stamps["worker_id"] = match["worker"]
            return "worker", stamps
        return "manager", stamps
    match = _INTERCHANGE.search(path)
    if match:
        component = "interchange" if stem == "interchange" else "router"
        return component, {"executor_label": match["label"]}
    if stem == "parsl":
        return "parsl", {}
    if stem == "database_manager":
        return "dbm", {}
    if stem.startswith("monitoring_"):
        return "router", {}
    return "log", {}


def find_run_dir(path: Path) -> str | None:
    """The nearest folder at or above `path` that holds a DFK log (parsl.log / parsl.jsonlog)."""
    return _run_dir_of_folder(str(path.parent))


@lru_cache(maxsize=4096)
def _run_dir_of_folder(folder: str) -> str | None:
    if any(os.path.exists(os.path.join(folder, marker)) for marker in RUN_DIR_MARKERS):
        return folder
    parent = os.path.dirname(folder)
    return None if parent == folder else _run_dir_of_folder(parent)


def _is_sqlite(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            return handle.read(16) == b"SQLite format 3\x00"
    except OSError:
        return False
