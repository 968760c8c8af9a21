"""Parsl integration. Needs Parsl (`pip install taskscope[parsl]`); the rest of taskscope does not.

>>> from parsl.config import Config
>>> from taskscope.parsl import WideEventLogging
>>> config = Config(executors=[...], initialize_logging=WideEventLogging())   # doctest: +SKIP

The LogConfig module is imported on first use, not with this package: Parsl releases before
`parsl.logconfigs` existed still import `taskscope.parsl.usage` (usage tracking) from here.
"""

from __future__ import annotations

from typing import Any

__all__ = ["WideEventLogging", "process_stamps"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from taskscope.parsl import logconfig

        return getattr(logconfig, name)
    raise AttributeError(f"module 'taskscope.parsl' has no attribute {name!r}")
