"""What the pages share: one `Dashboard` (the store, its live ingest, a read connection per
request, a cache of what pages derived).

Reads and the live ingest share one DuckDB database in this process (DuckDB allows one
writing process per file): the ingest thread writes through the store's own connection, and
every request reads through a `cursor()` of it, a connection of its own that sees the last
committed ingest. The usage collector shares its connection the same way
(`taskscope usage collect --ui-port`, `taskscope.web.server.BackgroundServer`). Pages run only
parameterised SELECTs. Without anything to ingest, the store is opened read-only.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator

import duckdb
from fastapi import Request

import taskscope
from taskscope.store import Store
from taskscope.web.live import LiveIngest

#: seconds between two live ingests
DEFAULT_INGEST_INTERVAL_S = 3.0


class Dashboard:
    """What the pages share: the store, the live ingest (if any), and a read connection per request.

    >>> dashboard = Dashboard(taskscope.open("run.duckdb", read_only=True))  # doctest: +SKIP
    >>> with dashboard.reader() as con: con.execute("SELECT count(*) FROM events").fetchall()  # doctest: +SKIP
    """

    def __init__(self, store: Store, live: LiveIngest | None = None, committed: Callable[[], int] | None = None):
        """`committed`, when another writer of this process (the usage collector) shares `store`:
        a count that grows with each of its commits, so cached pages follow what it stored."""
        self.store = store
        self.live = live
        self._committed = committed
        self._cursor_lock = threading.Lock()
        self._cache: OrderedDict[tuple, object] = OrderedDict()
        self._cache_lock = threading.Lock()

    @property
    def watching(self) -> bool:
        """True while new lines of the ingested folders are being read."""
        return self.live is not None and self.live.is_alive()

    @property
    def generation(self) -> int:
        """Grows whenever an ingest (or the writer sharing the store) added events (a cache key for
        anything derived)."""
        if self.live:
            return self.live.generation
        return self._committed() if self._committed else 0

    def cached(self, key: tuple, compute: Callable[[], object], size: int = 16):
        """`compute()`, remembered until an ingest adds events (the few last keys are kept)."""
        key = (self.generation, *key)
        with self._cache_lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        value = compute()
        with self._cache_lock:
            self._cache[key] = value
            while len(self._cache) > size:
                self._cache.popitem(last=False)
        return value

    def reader(self) -> "_Reader":
        """A read connection of its own for one request (a context manager)."""
        with self._cursor_lock:  # cursor() itself is not safe to call from two threads at once
            con = self.store.con.cursor()
        con.execute("SET TimeZone = 'UTC'")
        return _Reader(con)


class _Reader:
    def __init__(self, con: duckdb.DuckDBPyConnection):
        self.con = con

    def __enter__(self) -> duckdb.DuckDBPyConnection:
        return self.con

    def __exit__(self, *exc) -> None:
        self.con.close()


def read_connection(request: Request) -> Iterator[duckdb.DuckDBPyConnection]:
    """FastAPI dependency: a read connection for this request (noting, first, the generation it
    sees at least: `request.state.generation`)."""
    request.state.generation = request.app.state.dashboard.generation
    with request.app.state.dashboard.reader() as con:
        yield con


def open_dashboard(store_path: str, paths: list[str] | None = None,
                   interval_s: float = DEFAULT_INGEST_INTERVAL_S, on_progress=None) -> Dashboard:
    """Open the store; with `paths`, ingest them now and keep ingesting in the background.

    >>> dashboard = open_dashboard("run.duckdb", ["runinfo/"])  # doctest: +SKIP
    """
    if not paths:
        return Dashboard(taskscope.open(store_path, read_only=True))
    store = taskscope.open(store_path)
    store.ingest(*paths, on_progress=on_progress)
    live = LiveIngest(store, paths, interval_s)
    live.start()
    return Dashboard(store, live)
