"""Naive local times (a log line's `2026-05-01 12:00:00` with no zone) read as UTC.

Without an offset given or learned from the run's own logs, a naive time is read in this
machine's time zone *at that time's date*, daylight saving included, as the program that wrote it
did: a log from May read in December is not an hour off. That needs the zone's name (its rules);
where it cannot be found, the machine's offset now is used for every time.
"""

from __future__ import annotations

import os
from contextlib import suppress
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import duckdb


def local_utc_offset_seconds() -> float:
    """This machine's current offset of local time from UTC, in seconds.

    >>> isinstance(local_utc_offset_seconds(), float)
    True
    """
    offset = datetime.now().astimezone().utcoffset()
    return offset.total_seconds() if offset else 0.0


@lru_cache(maxsize=None)
def _zone_name_for(tz_env: str | None) -> str | None:
    if tz_env is not None:
        candidates = [tz_env.lstrip(":")]
    else:
        candidates = []
        localtime = Path("/etc/localtime")
        if localtime.is_symlink() and "zoneinfo/" in str(localtime.readlink()):
            candidates.append(str(localtime.readlink()).split("zoneinfo/", 1)[1])
        with suppress(OSError):  # no /etc/timezone: nothing to read
            candidates.append(Path("/etc/timezone").read_text().strip())
    for name in candidates:
        if name and _usable(name):
            return name
    return None


def _usable(name: str) -> bool:
    """A zone Python and DuckDB both know, whose offset now is the machine's offset now (so
    that it is the zone this machine's local times are in)."""
    try:
        offset = datetime.now(ZoneInfo(name)).utcoffset()
        with duckdb.connect() as con:
            con.execute("SELECT timezone(?, TIMESTAMP '2000-01-01')", [name])
    except (ZoneInfoNotFoundError, ValueError, duckdb.Error, OSError):
        return False
    return offset is not None and offset.total_seconds() == local_utc_offset_seconds()


def local_zone_name() -> str | None:
    """This machine's time zone by name (`Europe/Paris`), from `TZ` or /etc/localtime, or None
    when it cannot be told.

    >>> local_zone_name() is None or "/" in local_zone_name() or local_zone_name() == "UTC"
    True
    """
    return _zone_name_for(os.environ.get("TZ"))
