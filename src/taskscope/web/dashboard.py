"""What the pages share: one `Dashboard` (the store, its live ingest, a read view per request,
a cache of what pages derived).

Reads and the live ingest share one DuckDB database in this process (DuckDB allows one
writing process per file): the ingest thread writes through the store's own connection, and
every request reads through a `cursor()` of it, a connection of its own inside one read
transaction, so that all of a request's queries see one state of the store: with a live
ingest, the state a whole ingest left (see `taskscope.web.live`). What pages derive is cached
under that state's `generation`, so a cached answer is always one state's. The usage collector
shares its connection the same way (`taskscope usage collect --ui-port`,
`taskscope.web.server.BackgroundServer`). Pages run only parameterised SELECTs. Without
anything to ingest, the store is opened read-only.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager

import duckdb
from fastapi import Request
from starlette.concurrency import run_in_threadpool

import taskscope
from taskscope.store import Store
from taskscope.web.live import LiveIngest, View, pinned_cursor

#: seconds between two live ingests
DEFAULT_INGEST_INTERVAL_S = 3.0
#: seconds a reader waits before asking again for the view another reader has
VIEW_WAIT_S = 0.01


class Dashboard:
    """What the pages share: the store, the live ingest (if any), and a read view per request.

    >>> dashboard = Dashboard(taskscope.open("run.duckdb", read_only=True))  # doctest: +SKIP
    >>> with dashboard.reader() as con: con.execute("SELECT count(*) FROM events").fetchall()  # doctest: +SKIP
    """

    def __init__(self, store: Store, live: LiveIngest | None = None,
                 committed: Callable[[duckdb.DuckDBPyConnection], int] | None = None):
        """`committed`, when another writer of this process (the usage collector) shares `store`:
        a count that grows with each of its commits, read through the given connection inside
        its transaction (so it is the count of the commits that connection sees), so cached
        pages follow what was stored."""
        self.store = store
        self.live = live
        self._committed = committed
        self._cache: OrderedDict[tuple, object] = OrderedDict()
        self._cache_lock = threading.Lock()
        self._open_views: dict[int, int] = {}  # id of a reader's connection -> its view's generation

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
        if self._committed is None:
            return 0
        with self.reader() as con:
            return self.generation_of(con)

    def generation_of(self, con: duckdb.DuckDBPyConnection) -> int | None:
        """The generation of the store state `con` (a `reader` or `read_connection` connection)
        sees; None for another connection."""
        return self._open_views.get(id(con))

    def cached(self, con: duckdb.DuckDBPyConnection, key: tuple, compute: Callable[[], object], size: int = 16):
        """`compute()` (which reads through `con`, a `reader` or `read_connection` connection), remembered for the
        state of the store `con` sees (the few last keys are kept). Computed anew, and not
        kept, for a connection that is no reader's."""
        generation = self.generation_of(con)
        if generation is None:
            return compute()
        key = (generation, *key)
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

    def try_view(self) -> View | None:
        """A read view of one state of the store (with a live ingest, the one the last complete
        ingest left), or None while every view held of that state is another reader's."""
        if self.live:
            return self.live.try_view()
        con = pinned_cursor(self.store)
        # read inside the transaction: a count read before it began could be older than what it
        # sees (a commit in between), and a page cached under it would stay until the next commit
        return View(con, self._committed(con) if self._committed else 0)

    async def view(self) -> View:
        """`try_view()` until it gives a view, waiting in the event loop, not in a worker thread
        (the reader before may need one to finish)."""
        while (view := await run_in_threadpool(self.try_view)) is None:
            await asyncio.sleep(VIEW_WAIT_S)
        return view

    @contextmanager
    def opened(self, view: View) -> Iterator[duckdb.DuckDBPyConnection]:
        """`view`'s connection, whose generation `cached` and `generation_of` know meanwhile."""
        self._open_views[id(view.con)] = view.generation
        try:
            yield view.con
        finally:
            del self._open_views[id(view.con)]

    @contextmanager
    def reader(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A read connection (outside the web app: the app's requests use `read_connection`):
        every query through it sees one state of the store."""
        while (view := self.try_view()) is None:
            time.sleep(VIEW_WAIT_S)
        try:
            with self.opened(view) as con:
                yield con
        finally:
            view.close()


async def read_connection(request: Request) -> AsyncIterator[duckdb.DuckDBPyConnection]:
    """FastAPI dependency: a read connection for this request, every query through it seeing one
    state of the store (noting that state's generation: `request.state.generation`)."""
    dashboard = request.app.state.dashboard
    view = await dashboard.view()
    try:
        with dashboard.opened(view) as con:
            request.state.generation = view.generation
            yield con
    finally:
        view.close()  # a rollback of a read (milliseconds at most), in the event loop: it runs even when cancelled


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
