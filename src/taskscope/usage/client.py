"""The opt-in usage client: `UsageTracker` sends a start message and, at level 3, an end message.

Sending never blocks or raises in the caller. Datagrams go to one daemon thread per process
(created on first use, re-created in a forked child, flushed for a bounded time at exit); host
names are resolved there with a timeout. Nothing is pickled or spawned, so it works the same
under fork, spawn and forkserver. Every message is logged at INFO on the `taskscope.usage`
logger, sent or not. Imports only the standard library.
"""

from __future__ import annotations

import atexit
import ipaddress
import logging
import os
import queue
import socket
import threading
import time
import uuid
from typing import Any, Mapping

from taskscope.usage import protocol

logger = logging.getLogger("taskscope.usage")

DEFAULT_PORT = 50077
#: seconds to wait for a host name to resolve before the datagram is dropped
DNS_TIMEOUT = 2.0
#: seconds the interpreter waits at exit for datagrams still queued
EXIT_FLUSH_TIMEOUT = 2.0
#: seconds a failed name lookup is remembered, so a dead name does not cost DNS_TIMEOUT per message
NEGATIVE_DNS_TTL = 60.0

_OFF_VALUES = {"0", "off", "false", "no"}
_ON_VALUES = {"1", "true", "yes"}


def opt_out_reason(environ: Mapping[str, str] = os.environ) -> str | None:
    """Why usage tracking is off in this environment (`DO_NOT_TRACK=1`, `TASKSCOPE_USAGE=0`), or None.

    >>> opt_out_reason({"DO_NOT_TRACK": "1"})
    'DO_NOT_TRACK=1'
    >>> opt_out_reason({}) is None
    True
    """
    if environ.get("DO_NOT_TRACK", "").strip().lower() in _ON_VALUES:
        return "DO_NOT_TRACK=1"
    if environ.get("TASKSCOPE_USAGE", "").strip().lower() in _OFF_VALUES:
        return "TASKSCOPE_USAGE=0"
    return None


def local_mode_forced(environ: Mapping[str, str] = os.environ) -> bool:
    """True when `TASKSCOPE_USAGE=local`: messages are built and logged but never sent."""
    return environ.get("TASKSCOPE_USAGE", "").strip().lower() == "local"


def parse_endpoint(endpoint: str | tuple[str, int] | None) -> tuple[str, int] | None:
    """`(host, port)` from "host:port", "host", "[::1]:port" or a tuple; None for local mode.

    >>> parse_endpoint("usage.example.org:9000")
    ('usage.example.org', 9000)
    >>> parse_endpoint("local") is None
    True
    """
    if endpoint is None or endpoint == "local":
        return None
    if isinstance(endpoint, tuple):
        host, port = endpoint
    elif endpoint.startswith("["):
        host, _, rest = endpoint[1:].partition("]")
        port = rest.lstrip(":") or DEFAULT_PORT
    elif endpoint.count(":") == 1:
        host, port = endpoint.split(":")
    else:
        host, port = endpoint, DEFAULT_PORT
    port = int(port)
    if not host or not 0 < port < 65536:
        raise ValueError(f"usage endpoint must be 'host:port', not {endpoint!r}")
    return str(host), port


class Delivery:
    """What became of one datagram. `wait(timeout)` returns True once it was sent or given up.

    `outcome` is "sent", "queued", or why it was not sent.
    """

    __slots__ = ("destination", "outcome", "_done")

    def __init__(self, destination: tuple[str, int] | None):
        self.destination = destination
        self.outcome = "queued"
        self._done = threading.Event()

    def wait(self, timeout: float | None = None) -> bool:
        return self._done.wait(timeout)

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def _finish(self, outcome: str) -> None:
        self.outcome = outcome
        self._done.set()


class _Sender:
    """One daemon thread that resolves names (with a timeout) and sends queued datagrams."""

    def __init__(self) -> None:
        self.queue: queue.SimpleQueue = queue.SimpleQueue()
        self.addresses: dict[tuple[str, int], tuple[Any, float]] = {}
        self.sockets: dict[int, socket.socket] = {}
        self.thread = threading.Thread(target=self._run, name="taskscope-usage-sender", daemon=True)
        self.thread.start()

    def submit(self, destination: tuple[str, int] | None, payload: bytes | None, dns_timeout: float) -> Delivery:
        delivery = Delivery(destination)
        self.queue.put((delivery, payload, dns_timeout))
        return delivery

    def flush(self, timeout: float) -> bool:
        """Wait until everything queued before now is done (the queue is FIFO)."""
        return self.submit(None, None, 0).wait(timeout)

    def _run(self) -> None:
        while True:
            delivery, payload, dns_timeout = self.queue.get()
            if payload is None:
                delivery._finish("flushed")
                continue
            try:
                delivery._finish(self._send(delivery.destination, payload, dns_timeout))
            except Exception as exc:  # noqa: BLE001 - a usage datagram must never break anything
                delivery._finish(f"not sent: {exc}")
            if delivery.outcome != "sent":
                logger.debug("usage datagram to %s:%s %s", *delivery.destination, delivery.outcome)

    def _send(self, destination: tuple[str, int], payload: bytes, dns_timeout: float) -> str:
        address = self._resolve(destination, dns_timeout)
        if isinstance(address, str):
            return f"not sent: {destination[0]} {address}"
        family, sockaddr = address
        sock = self.sockets.get(family)
        if sock is None:
            sock = self.sockets[family] = socket.socket(family, socket.SOCK_DGRAM)
            sock.setblocking(False)  # a full send buffer drops the datagram instead of waiting
        sock.sendto(payload, sockaddr)
        return "sent"

    def _resolve(self, destination: tuple[str, int], timeout: float):
        host, port = destination
        try:
            ip = ipaddress.ip_address(host)
            return (socket.AF_INET6 if ip.version == 6 else socket.AF_INET), (host, port)
        except ValueError:
            pass
        cached = self.addresses.get(destination)
        if cached and (not isinstance(cached[0], str) or time.monotonic() < cached[1]):
            return cached[0]
        address = _resolve_with_timeout(host, port, timeout)
        self.addresses[destination] = (address, time.monotonic() + NEGATIVE_DNS_TTL)
        return address


def _resolve_with_timeout(host: str, port: int, timeout: float) -> tuple | str:
    """getaddrinfo in a daemon thread, abandoned after `timeout` (getaddrinfo itself has none):
    (family, address), or why not ("did not resolve: <the resolver's error>" when the lookup
    failed, "did not resolve within N s" when it took too long)."""
    found: list = []

    def lookup() -> None:
        try:
            info = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
            found.append((info[0][0], info[0][4]))
        except OSError as exc:
            found.append(f"did not resolve: {exc.strerror or exc}")

    resolver = threading.Thread(target=lookup, name="taskscope-usage-dns", daemon=True)
    resolver.start()
    resolver.join(timeout)
    return found[0] if found else f"did not resolve within {timeout:g} s"


_sender_lock = threading.Lock()
_sender_state: dict[str, Any] = {"sender": None}


def _get_sender() -> _Sender:
    with _sender_lock:
        if _sender_state["sender"] is None:
            _sender_state["sender"] = _Sender()
        return _sender_state["sender"]


def _forget_sender_after_fork() -> None:
    # the parent's sender thread does not exist in a forked child; its queue was the parent's
    global _sender_lock
    _sender_lock = threading.Lock()
    _sender_state["sender"] = None


def _flush_at_exit() -> None:
    sender = _sender_state["sender"]
    if sender is not None:
        sender.flush(EXIT_FLUSH_TIMEOUT)


os.register_at_fork(after_in_child=_forget_sender_after_fork)
atexit.register(_flush_at_exit)


def send_datagram(destination: tuple[str, int], payload: bytes, dns_timeout: float = DNS_TIMEOUT) -> Delivery:
    """Queue one datagram for `destination` from this process's sender thread; never blocks or raises.

    >>> send_datagram(("127.0.0.1", 9), b'1{}').wait(2)     # doctest: +SKIP
    True
    """
    try:
        return _get_sender().submit(destination, payload, dns_timeout)
    except Exception as exc:  # noqa: BLE001 - e.g. no threads left at interpreter shutdown
        delivery = Delivery(destination)
        delivery._finish(f"not sent: {exc}")
        return delivery


def flush(timeout: float = EXIT_FLUSH_TIMEOUT) -> bool:
    """Wait up to `timeout` s until every datagram queued in this process so far is sent or given up."""
    sender = _sender_state["sender"]
    return True if sender is None else sender.flush(timeout)


class UsageTracker:
    """Opt-in usage tracking for a research software product, wire-compatible with Parsl's.

    Levels (as in Parsl): 0 off (the default); 1 product version, Python version, platform;
    2 adds `components` (the names of the parts in use); 3 adds an end message with the task
    count, failures and execution time, correlated with the start message by `correlator`.
    `DO_NOT_TRACK=1` or `TASKSCOPE_USAGE=0` in the environment turn it off whatever the level;
    `endpoint="local"` (the default: a product names its own collector) or `TASKSCOPE_USAGE=local`
    builds and logs the messages but sends nothing. Every message is kept in `messages` and
    logged at INFO on the `taskscope.usage` logger.

    >>> with UsageTracker("mytool", "1.2", level=3, endpoint="usage.example.org:50077") as usage:
    ...     for _ in range(10):
    ...         usage.record_task(failed=False)                # doctest: +SKIP

    A bad `level` or `endpoint` raises ValueError here; sending never raises.
    """

    def __init__(
        self, product: str, version: str, level: int = 0, project_name: str | None = None,
        endpoint: str | tuple[str, int] | None = "local", components: list[Any] | None = None,
        dns_timeout: float = DNS_TIMEOUT,
    ):
        self.product, self.version = str(product), str(version)
        self.requested_level = protocol.check_level(level)
        self.project_name = project_name
        self.components = list(components or [])
        self.destination = parse_endpoint(endpoint)
        self.dns_timeout = dns_timeout
        self.correlator = str(uuid.uuid4())
        self.off_reason = opt_out_reason() or ("level 0" if self.requested_level == 0 else None)
        self.local = self.destination is None or local_mode_forced()
        self.messages: list[dict[str, Any]] = []
        self.deliveries: list[Delivery] = []
        self.task_count = 0
        self.failures = 0
        self.start_time: int | None = None
        self.ended = False
        logger.debug("usage tracking for %s: level %d%s", self.product, self.level,
                     f" (off: {self.off_reason})" if self.off_reason else "")

    @property
    def level(self) -> int:
        """The level in effect: 0 when opted out, else the level asked for."""
        return 0 if self.off_reason else self.requested_level

    def record_task(self, failed: bool = False) -> None:
        """Count one finished task (and a failure) for the level-3 end message."""
        self.task_count += 1
        self.failures += bool(failed)

    def start(self, components: list[Any] | None = None) -> dict[str, Any] | None:
        """Send the start message (once); return it, or None when tracking is off."""
        if self.level == 0 or self.start_time is not None:
            return None
        try:
            self.start_time = int(time.time())
            if components is not None:
                self.components = list(components)
            return self._emit(protocol.start_message(
                self.correlator, self.product, self.version, self.level, self.project_name,
                self.components, self.start_time,
            ))
        except Exception as exc:  # noqa: BLE001
            logger.debug("usage start message not built: %s", exc)
            return None

    def end(self, task_count: int | None = None, failures: int | None = None) -> dict[str, Any] | None:
        """Send the end message (level 3 only, once, after `start`); return it or None.

        Counts default to what `record_task` counted.
        """
        if self.level < protocol.LEVEL_EXECUTION or self.start_time is None or self.ended:
            return None
        self.ended = True
        try:
            return self._emit(protocol.end_message(
                self.correlator, self.product, self.project_name, self.components, self.start_time,
                int(time.time()), self.task_count if task_count is None else int(task_count),
                self.failures if failures is None else int(failures),
            ))
        except Exception as exc:  # noqa: BLE001
            logger.debug("usage end message not built: %s", exc)
            return None

    def close(self, timeout: float | None = None) -> bool:
        """Wait (at most `timeout` s, default the DNS timeout plus one) until every message is sent or given up."""
        deadline = time.monotonic() + (self.dns_timeout + 1 if timeout is None else timeout)
        return all(d.wait(max(0.0, deadline - time.monotonic())) for d in self.deliveries)

    def _emit(self, message: dict[str, Any]) -> dict[str, Any]:
        payload = protocol.encode(message)
        self.messages.append(message)
        if self.local:
            logger.info("usage message (local mode, not sent): %s", payload[1:].decode())
        else:
            logger.info("usage message to %s:%s: %s", *self.destination, payload[1:].decode())
            self.deliveries.append(send_datagram(self.destination, payload, self.dns_timeout))
        return message

    def __enter__(self) -> "UsageTracker":
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.end()
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        # deliveries hold threading.Events; a tracker sent to another process starts with none
        state = dict(self.__dict__)
        state["deliveries"] = []
        return state
