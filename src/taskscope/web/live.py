"""Live ingest: read what a running workflow appends to its logs, every few seconds, while
pages read only what whole ingests committed.

An ingest commits in steps: its batches of events, then the relating of their ids, then the
run digests (see `taskscope.ingest` and `Store.ingest`). A page that read between two steps, or
read one step's result beside another's, would show a mix (a run `failed` beside no failed
task). So every read goes through a `View`: one read transaction, begun at a point where the
store is as a whole ingest left it, and `generation` (how many ingests added events) says
which point that is. While an ingest runs (and after one failed, until one succeeds), readers
share a few connections held from before it began; between ingests each reader begins its own.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import duckdb

from taskscope.store import Store

#: cursor() of one connection is not safe to call from two threads at once
_CURSOR_LOCK = threading.Lock()


def pinned_cursor(store: Store) -> duckdb.DuckDBPyConnection:
    """A connection of its own on `store` inside a read transaction that already sees the store
    (DuckDB takes a transaction's snapshot at its first read, not at BEGIN)."""
    with _CURSOR_LOCK:
        con = store.con.cursor()
    con.execute("SET TimeZone = 'UTC'")
    con.execute("BEGIN TRANSACTION")
    con.execute("SELECT 1 FROM events LIMIT 1").fetchall()
    return con


class View:
    """A read connection (`con`) whose every query sees one state of the store, the one of
    `generation`; `close()` when done.

    >>> with live.try_view() as view: view.con.execute("SELECT count(*) FROM events").fetchall()  # doctest: +SKIP
    """

    def __init__(self, con: duckdb.DuckDBPyConnection, generation: int,
                 release: Callable[[], None] | None = None):
        self.con, self.generation = con, generation
        self._release = release

    def close(self) -> None:
        if self._release is not None:  # a held view: others use the connection after us
            self._release()
            return
        self.con.execute("ROLLBACK")  # it only read
        self.con.close()

    def __enter__(self) -> "View":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


#: readers that can read the held state side by side while an ingest runs (each has a connection
#: of its own, begun before the ingest: DuckDB runs their queries in parallel)
HELD_READERS = 4


class _Slot:
    """One pinned connection of a `HeldView`, and whether a reader has it."""

    def __init__(self, con: duckdb.DuckDBPyConnection):
        self.con = con
        self.turn = threading.Lock()  # one reader at a time
        self.closed = self.broken = False


class HeldView:
    """The store as the last complete ingest left it, held while the next one runs: `readers`
    pinned connections, all begun before the ingest, that readers take in turn. A connection is
    closed once the view is retired and no reader has it, or once a reader's query failed on it
    (DuckDB then refuses every query of its transaction). `broken`: every one failed so."""

    def __init__(self, store: Store, generation: int, readers: int = HELD_READERS):
        self.generation = generation
        self._slots = [_Slot(pinned_cursor(store)) for _ in range(readers)]
        self._state = threading.Lock()  # guards the flags
        self._retired = False

    @property
    def closed(self) -> bool:
        return all(slot.closed for slot in self._slots)

    @property
    def broken(self) -> bool:
        return all(slot.broken for slot in self._slots)

    def try_enter(self) -> View | None:
        """This view for one reader, or None while every connection is another reader's or once
        it is `closed`."""
        for slot in self._slots:
            if not slot.turn.acquire(blocking=False):
                continue
            with self._state:
                if not slot.closed:
                    return View(slot.con, self.generation, release=lambda slot=slot: self._leave(slot))
            slot.turn.release()
        return None

    def _leave(self, slot: _Slot) -> None:
        with self._state:
            if not slot.closed and not _usable(slot.con):
                slot.broken = True
            if self._retired or slot.broken:
                _close(slot)
            slot.turn.release()

    def retire(self) -> None:
        """No new reader will ask for it: close its connections now, or each when its reader is done."""
        with self._state:
            self._retired = True
            for slot in self._slots:
                if slot.turn.acquire(blocking=False):
                    _close(slot)
                    slot.turn.release()


def _usable(con: duckdb.DuckDBPyConnection) -> bool:
    try:
        con.execute("SELECT 1").fetchall()
    except duckdb.Error:
        return False
    return True


def _close(slot: _Slot) -> None:
    if not slot.closed:
        slot.closed = True
        slot.con.close()


class LiveIngest(threading.Thread):
    """A daemon thread calling `store.ingest(*paths)` every `interval_s` seconds, and handing
    out read views of what complete ingests stored (`try_view()`).

    It writes through `store.con`; views are cursors of it. `generation` grows whenever an ingest
    added events, `last_ingest_ts` is the time of the last finished ingest and `last_error` the
    last failure (the thread keeps going: a log rotated mid-read is read again next time).

    >>> live = LiveIngest(store, ["runinfo/"], interval_s=3); live.start()  # doctest: +SKIP
    """

    def __init__(self, store: Store, paths: list[str], interval_s: float = 3.0):
        super().__init__(name="taskscope-live-ingest", daemon=True)
        self.store = store
        self.paths = list(paths)
        self.interval_s = interval_s
        self.generation = 0
        self.last_ingest_ts: float | None = time.time()
        self.last_error: str | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()  # guards `generation` and the two below
        # odd from just before an ingest may commit until one has completed: a view begun
        # meanwhile could see part of it
        self._ingests_begun_and_done = 0
        self._held: HeldView | None = None

    def run(self) -> None:
        while not self._stopping.wait(self.interval_s):
            self.ingest_once()

    def ingest_once(self) -> None:
        """One ingest of `paths`; readers see its result once all of it is committed."""
        try:
            self._hold()
            report = self.store.ingest(*self.paths)
        except Exception as exc:  # noqa: BLE001 - a live view must survive one bad ingest
            self.last_error = f"{type(exc).__name__}: {exc}"
            if self._held is not None and self._held.broken:
                self._completed(True)  # no view of the last complete ingest is left: read what there is
            return  # readers keep the view of the last complete ingest
        self._completed(bool(report.events or report.reapplied))
        self.last_error = None
        self.last_ingest_ts = time.time()

    def _hold(self) -> None:
        """Before an ingest commits anything: hold the store's current state for the readers
        (unless a failed ingest left one held: the store may hold part of that one)."""
        with self._lock:
            if self._held is None:
                self._held = HeldView(self.store, self.generation)
                self._ingests_begun_and_done += 1

    def _completed(self, added_events: bool) -> None:
        with self._lock:
            if added_events:
                self.generation += 1
            self._ingests_begun_and_done += 1
            held, self._held = self._held, None
        if held is not None:
            held.retire()

    def try_view(self) -> View | None:
        """A read view of the store as the last complete ingest left it (close it when done), or
        None while every connection held of that state is another reader's (ask again shortly)."""
        while True:
            with self._lock:
                held, count, generation = self._held, self._ingests_begun_and_done, self.generation
            if held is not None:
                view = held.try_enter()
                if view is not None or not held.closed or held.broken:
                    return view  # None: busy, or broken (no view of that state is left until the ingest completes)
                continue  # retired meanwhile: the next one is current
            con = pinned_cursor(self.store)
            with self._lock:
                unchanged = self._ingests_begun_and_done == count
            if unchanged:  # no ingest began before the transaction saw the store
                return View(con, generation)
            con.execute("ROLLBACK")
            con.close()

    def stop(self, timeout_s: float = 30.0) -> None:
        """Ask the thread to stop after its current ingest, and wait for it (a held view is
        closed once its reader is done, so the store's file can be opened again)."""
        self._stopping.set()
        if self.is_alive():
            self.join(timeout_s)
        with self._lock:
            held, self._held = self._held, None
        if held is not None:
            held.retire()
