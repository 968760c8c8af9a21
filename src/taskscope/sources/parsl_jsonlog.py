"""Parsl JSON logs (`*.jsonlog`, written by `parsl.logconfigs.JSONLogging` or taskscope's
`WideEventLogging`): the DFK, interchange, manager, worker and database manager.

Each record's `parsl.*` fields (`parsl.task`, `parsl.dfk`, `parsl.executor_task`, ...) map to
columns (see `json_fields`); ids the path gives (executor label, block, manager, worker)
fill what the record does not say.
"""

from __future__ import annotations

from taskscope.sources.jsonlines import stage_lines

__all__ = ["stage_lines"]
