"""Deliver Parsl's own usage-tracking messages, to Parsl's server or to a self-hosted collector.

Why Parsl's messages never arrive (Parsl issue #4038, releases since the switch to spawn in
2025.03, including 2026.10.26): `parsl.usage_tracking.usage.udp_messenger` is defined under the
`@async_process` decorator, so the module attribute `udp_messenger` is the decorator's `run`
wrapper, while the function handed to `SpawnProcess(target=fn)` is the undecorated original,
whose `__qualname__` is still `udp_messenger`. The spawn start method pickles the target by
reference (module + qualified name); pickle looks the name up, finds the wrapper, not the
function, and raises `PicklingError: Can't pickle <function udp_messenger ...>: it's not the
same object as parsl.usage_tracking.usage.udp_messenger` in `proc.start()`, in the DFK process,
before any name is resolved. `UsageTracker.send_UDP_message` catches it and logs it at DEBUG,
so nothing is sent and nobody notices. Under fork (before 2025.03) the target was not pickled.

`enable()` replaces that module attribute with a sender that hands the datagram, exactly as
Parsl's `UsageTracker` built it (`b"1"` + JSON), to taskscope's per-process sender thread
(`taskscope.usage.client`): no process, no pickling, a DNS timeout, and a handle that Parsl's
`UsageTracker.close()` can join, so the end message is out before the DFK finishes cleanup.

To Parsl's server (tracking.parsl-project.org:50077), or to your own `taskscope usage collect`:

>>> from taskscope.parsl.usage import enable
>>> enable()                                     # doctest: +SKIP
>>> enable(endpoint="usage.example.org:50077")   # doctest: +SKIP

Then set `Config(usage_tracking=1|2|3, project_name=...)` as usual. `DO_NOT_TRACK=1` or
`TASKSCOPE_USAGE=0` stop every message; `endpoint="local"` or `TASKSCOPE_USAGE=local` keeps them
in `messages()` and the log without sending.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import parsl.usage_tracking.usage as parsl_usage

from taskscope.usage import client

logger = logging.getLogger("taskscope.usage")

_state: dict[str, Any] = {"original": None, "messages": []}


class _SentDatagram:
    """Stands in for the process Parsl's `udp_messenger` returns: `UsageTracker.close()` joins it."""

    def __init__(self, delivery: client.Delivery):
        self.delivery = delivery

    def join(self, timeout: float | None = None) -> None:
        self.delivery.wait(timeout)

    def is_alive(self) -> bool:
        return not self.delivery.done

    def kill(self) -> None:
        """Nothing to kill: an unfinished send is abandoned by its daemon thread."""

    def close(self) -> None:
        """Nothing to release."""

    def __repr__(self) -> str:
        return f"<taskscope usage datagram: {self.delivery.outcome}>"


def enable(endpoint: str | tuple[str, int] | None = None, dns_timeout: float = client.DNS_TIMEOUT) -> bool:
    """Make Parsl's usage tracking deliver its messages from this process; True if it could.

    `endpoint` None sends where Parsl asks (its server); "host:port" sends to a collector
    instead; "local" sends nothing but keeps and logs every message. Call it before
    `parsl.load(config)`. Returns False (and logs why) for a Parsl without `udp_messenger`.

    >>> enable(endpoint="127.0.0.1:50077")       # doctest: +SKIP
    True
    """
    if not callable(getattr(parsl_usage, "udp_messenger", None)):
        logger.warning("this Parsl has no parsl.usage_tracking.usage.udp_messenger; usage adapter not enabled")
        return False
    local = endpoint == "local"
    override = None if local or endpoint is None else client.parse_endpoint(endpoint)
    if _state["original"] is None:
        _state["original"] = parsl_usage.udp_messenger

    def udp_messenger(domain_name: str, UDP_PORT: int, sock_timeout: int, message: bytes) -> _SentDatagram:  # noqa: N803 - Parsl's names
        return _deliver(message, override or (domain_name, int(UDP_PORT)), local, dns_timeout)

    parsl_usage.udp_messenger = udp_messenger
    return True


def disable() -> None:
    """Put Parsl's own `udp_messenger` back."""
    if _state["original"] is not None:
        parsl_usage.udp_messenger = _state["original"]
        _state["original"] = None


def messages() -> list[dict[str, Any]]:
    """Every Parsl usage message this process built since `enable()`, sent or not (decoded)."""
    return list(_state["messages"])


def _deliver(message: bytes, destination: tuple[str, int], local: bool, dns_timeout: float) -> _SentDatagram:
    delivery = client.Delivery(destination)
    try:
        _state["messages"].append(json.loads(message[1:]))
        off = client.opt_out_reason()
        text = message[1:].decode(errors="replace")
        if off:
            logger.info("Parsl usage message not sent (%s): %s", off, text)
            delivery._finish(f"not sent: {off}")
        elif local or client.local_mode_forced():
            logger.info("Parsl usage message (local mode, not sent): %s", text)
            delivery._finish("not sent: local mode")
        else:
            logger.info("Parsl usage message to %s:%s: %s", *destination, text)
            delivery = client.send_datagram(destination, message, dns_timeout)
    except Exception as exc:  # noqa: BLE001 - usage tracking must never break a workflow
        delivery._finish(f"not sent: {exc}")
    return _SentDatagram(delivery)
