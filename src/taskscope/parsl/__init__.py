"""Parsl integration. Needs Parsl (`pip install taskscope[parsl]`); the rest of taskscope does not.

>>> from parsl.config import Config
>>> from taskscope.parsl import WideEventLogging
>>> config = Config(executors=[...], initialize_logging=WideEventLogging())   # doctest: +SKIP
"""

from __future__ import annotations

from taskscope.parsl.logconfig import WideEventLogging, process_stamps

__all__ = ["WideEventLogging", "process_stamps"]
