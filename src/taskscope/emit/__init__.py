"""Emit wide events: a fast JSON-lines logging handler and context for any Python code.

>>> import logging
>>> from taskscope.emit import WideEventHandler, bind, span, get_logger
>>> logging.getLogger().addHandler(WideEventHandler("events.jsonlog"))   # doctest: +SKIP
>>> with bind(run_id="r1"), span("stage_in", files=3):                   # doctest: +SKIP
...     get_logger("app").info("copied %d files", 3)

Import cost is small (no DuckDB, no pandas): this runs inside every worker.
"""

from __future__ import annotations

from taskscope.emit.context import bind, current_fields, span
from taskscope.emit.handler import DEFAULT_FLUSH_INTERVAL, WideEventHandler, flush_all, flush_on_sigterm
from taskscope.emit.logger import FastPathLogger, WideEventLogger, get_logger, use_fast_path
from taskscope.emit.records import make_fast_record_factory

BoundLogger = WideEventLogger  # the name get_logger's loggers had before the fast path

__all__ = [
    "WideEventHandler", "bind", "span", "get_logger", "current_fields", "WideEventLogger", "BoundLogger", "flush_all", "flush_on_sigterm",
    "make_fast_record_factory", "DEFAULT_FLUSH_INTERVAL", "FastPathLogger", "use_fast_path",
]
