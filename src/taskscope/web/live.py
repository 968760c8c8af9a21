"""Live ingest: read what a running workflow appends to its logs, every few seconds."""

from __future__ import annotations

import threading
import time

from taskscope.store import Store


class LiveIngest(threading.Thread):
    """A daemon thread calling `store.ingest(*paths)` every `interval_s` seconds.

    It writes through `store.con`; readers use cursors of that connection (see
    `taskscope.web.dashboard`). `generation` grows whenever an ingest added events, `last_ingest_ts`
    is the time of the last finished ingest and `last_error` the last failure (the thread keeps
    going: a log rotated mid-read is read again next time).

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

    def run(self) -> None:
        while not self._stopping.wait(self.interval_s):
            try:
                # the generation grows at each commit, not only once the whole ingest is done: a
                # page assembled in between would mix what was cached before it with fresh data
                self.store.ingest(*self.paths, on_commit=self._committed)
            except Exception as exc:  # noqa: BLE001 - a live view must survive one bad ingest
                self.last_error = f"{type(exc).__name__}: {exc}"
                continue
            self.last_error = None
            self.last_ingest_ts = time.time()

    def _committed(self) -> None:
        """An ingest committed new events (called by `Store.ingest`)."""
        self.generation += 1

    def stop(self, timeout_s: float = 30.0) -> None:
        """Ask the thread to stop after its current ingest, and wait for it."""
        self._stopping.set()
        if self.is_alive():
            self.join(timeout_s)
