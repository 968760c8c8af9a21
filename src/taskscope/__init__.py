"""taskscope: observability for Python workflow systems.

>>> import taskscope
>>> store = taskscope.open("run.duckdb")     # doctest: +SKIP
>>> store.ingest("runinfo/")                 # doctest: +SKIP
>>> store.timeline(task_id=358)              # doctest: +SKIP

The store (DuckDB, pandas) is imported on first use, so that `taskscope.emit` and
`taskscope.parsl`, which run inside every Parsl worker, stay light to import.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from taskscope.constants import DEFAULT_STORE, MAX_LINE_BYTES
from taskscope.constants import VERSION as __version__

if TYPE_CHECKING:
    from taskscope.store import Store

__all__ = ["open", "Store", "StoreError", "DEFAULT_STORE", "MAX_LINE_BYTES", "__version__"]


def open(path: str | Path = DEFAULT_STORE, read_only: bool = False) -> "Store":  # noqa: A001 - mirrors duckdb.connect
    """Open (creating if needed) the store at `path`; `":memory:"` for a throw-away one."""
    # imported on first use: the emitter and the Parsl adapter, in every worker, import this package
    from taskscope.store import Store

    return Store(path, read_only=read_only)


def __getattr__(name: str) -> Any:
    if name in ("Store", "StoreError"):
        from taskscope import store  # on first use, as in `open`

        return getattr(store, name)
    raise AttributeError(f"module 'taskscope' has no attribute {name!r}")
