"""taskscope: observability for Python workflow systems.

>>> import taskscope
>>> store = taskscope.open("run.duckdb")     # doctest: +SKIP
>>> store.ingest("runinfo/")                 # doctest: +SKIP
>>> store.timeline(task_id=358)              # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path

from taskscope.store import DEFAULT_STORE, Store, StoreError

__version__ = "0.1.0"
__all__ = ["open", "Store", "StoreError", "DEFAULT_STORE", "__version__"]


def open(path: str | Path = DEFAULT_STORE, read_only: bool = False) -> Store:  # noqa: A001 - mirrors duckdb.connect
    """Open (creating if needed) the store at `path`; `":memory:"` for a throw-away one."""
    return Store(path, read_only=read_only)
