"""Opt-in usage tracking: a client, its wire format, a self-hosted collector, aggregate reports.

>>> from taskscope.usage import UsageTracker
>>> with UsageTracker("mytool", "1.2", level=1, endpoint="usage.example.org:50077"):
...     pass                                                  # doctest: +SKIP

Only the client is imported here (standard library only); the collector (`taskscope.usage.collector`)
and the reports (`taskscope.usage.reports`) need DuckDB and pandas.
"""

from __future__ import annotations

from taskscope.usage.client import UsageTracker, flush, opt_out_reason, send_datagram
from taskscope.usage.protocol import MalformedDatagram, UsageMessage, decode, encode

__all__ = ["UsageTracker", "send_datagram", "flush", "opt_out_reason", "encode", "decode",
           "MalformedDatagram", "UsageMessage"]
