"""Batching HTTP sender with a local spool: what the Dask plugin hands its messages to.

Messages go ``submit()`` -> an in-memory queue -> (background thread) batches of at most
`protocol.MAX_BATCH_BYTES`, each with a fresh ``batch_id`` -> appended to a JSON-lines spool file
-> POSTed to ``{server}/api/v1/ingest`` -> marked sent in the spool on ``200``. A batch the server
could not take (down, 5xx, timeout, 401) stays in the spool and is resent later, also by a later
process for the same server and token (it adopts spool files whose owner has exited). A batch the
server refuses for good (400 malformed, 409 another user's cluster, 413 too large) is moved to
``rejected/batches.jsonl`` in the spool folder and counted.

The caller's thread (the scheduler's event loop) only ever does a ``queue.put``: no I/O, no
exception. The spool is bounded (``max_spool_bytes``); batches beyond it are dropped and counted.

Spool layout: ``{spool_dir}/{sha256(server + token)[:16]}/{owner}.jsonl`` holding lines
``{"batch": {...}}`` and ``{"sent": "<batch_id>"}``; an owner holds an exclusive ``flock`` on its
file while alive, which is how a later sender knows the file is free to adopt.
"""

from __future__ import annotations

import fcntl
import gzip
import hashlib
import json
import logging
import os
import queue
import ssl
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from taskscope.fleet import protocol

logger = logging.getLogger(__name__)

DEFAULT_SPOOL_DIR = Path("~/.cache/taskscope/fleet")
DEFAULT_MAX_SPOOL_BYTES = 64 * 1024 * 1024
#: seconds to wait before retrying an unreachable server (doubles up to `RETRY_MAX_S`)
RETRY_MIN_S = 1.0
RETRY_MAX_S = 60.0
#: room left in a batch for the envelope (cluster identity, ids) around the messages
ENVELOPE_ROOM_BYTES = 16 * 1024
#: a message bigger than this is cut down field by field until it fits `protocol.MAX_MESSAGE_BYTES`
TRUNCATION_MARK = "... [truncated by taskscope]"
#: bodies above this are sent gzipped (the server bounds the decompressed size)
GZIP_ABOVE_BYTES = 64 * 1024

#: answers that refuse a batch for good (malformed, another user's cluster, too large): kept aside, not resent
SET_ASIDE_STATUSES = (400, 409, 413)

_FLUSH = object()


@dataclass
class SenderStats:
    """Counters a caller can read (and the plugin reports): nothing is lost silently."""

    batches_sent: int = 0
    messages_sent: int = 0
    batches_dropped: int = 0
    messages_dropped: int = 0
    batches_rejected: int = 0
    send_failures: int = 0
    messages_truncated: int = 0


def encoded_size(value: object) -> int:
    """Bytes of `value` as compact JSON (the size the server will see)."""
    return len(json.dumps(value, separators=(",", ":"), default=str).encode())


def bound_message(message: dict, limit: int = protocol.MAX_MESSAGE_BYTES) -> dict:
    """Return `message` cut down to at most `limit` bytes of JSON: long strings and lists inside it are
    shortened (tracebacks, code, profiles, event payloads), halving the allowance until it fits.
    ``kind`` and ``ts`` are never touched.

    >>> small = bound_message({"kind": "exception", "ts": 1.0, "traceback_text": "x" * 10_000}, limit=2_000)
    >>> len(json.dumps(small)) <= 2_000, small["traceback_text"].endswith(TRUNCATION_MARK)
    (True, True)
    """
    if encoded_size(message) <= limit:
        return message
    allowance = limit // 2
    while allowance >= 16:
        cut = {key: (value if key in ("kind", "ts") else _shorten(value, allowance)) for key, value in message.items()}
        cut["truncated"] = True
        if encoded_size(cut) <= limit:
            return cut
        allowance //= 2
    return {"kind": message["kind"], "ts": message["ts"], "truncated": True}


def _shorten(value: object, allowance: int) -> object:
    """Shorten strings to `allowance` characters and containers to what fits in `allowance` bytes."""
    if isinstance(value, str):
        return value if len(value) <= allowance else value[:allowance] + TRUNCATION_MARK
    if isinstance(value, list):
        kept, used = [], 0
        for item in value:
            item = _shorten(item, allowance)
            used += encoded_size(item)
            if used > allowance:
                break
            kept.append(item)
        return kept
    if isinstance(value, dict):
        kept, used = {}, 0
        for key, item in value.items():
            item = _shorten(item, allowance)
            used += encoded_size(item) + len(str(key))
            if used > allowance:
                break
            kept[key] = item
        return kept
    return value


def split_into_batches(messages: list[dict], limit: int = protocol.MAX_BATCH_BYTES) -> list[list[dict]]:
    """Group `messages` (each already bounded) in order into lists whose JSON fits in `limit` bytes
    together with the envelope.

    >>> [len(batch) for batch in split_into_batches([{"kind": "event", "ts": 1, "msg": "x" * 100}] * 5,
    ...                                              limit=ENVELOPE_ROOM_BYTES + 300)]
    [2, 2, 1]
    """
    batches: list[list[dict]] = []
    current: list[dict] = []
    used = 0
    room = limit - ENVELOPE_ROOM_BYTES
    for message in messages:
        size = encoded_size(message) + 1
        if current and used + size > room:
            batches.append(current)
            current, used = [], 0
        current.append(message)
        used += size
    if current:
        batches.append(current)
    return batches


def encoded_body(batch: dict) -> dict:
    """The httpx keyword arguments for POSTing `batch`: JSON, gzipped above `GZIP_ABOVE_BYTES`.

    >>> encoded_body({"messages": ["x" * 100_000]})["headers"]["Content-Encoding"]
    'gzip'
    """
    body = json.dumps(batch, separators=(",", ":"), default=str).encode()
    headers = {"Content-Type": "application/json"}
    if len(body) > GZIP_ABOVE_BYTES:
        body = gzip.compress(body, compresslevel=5)
        headers["Content-Encoding"] = "gzip"
    return {"content": body, "headers": headers}


class Spool:
    """The append-only JSON-lines spool of one sender, plus the orphaned files it adopted.

    >>> import tempfile
    >>> spool = Spool(Path(tempfile.mkdtemp()), "http://127.0.0.1:1", "token")
    >>> spool.append({"batch_id": "b1", "messages": []})
    True
    >>> [batch["batch_id"] for batch in spool.pending()]
    ['b1']
    >>> spool.mark_sent("b1"); spool.pending()
    []
    """

    def __init__(self, root: Path, server: str, token: str, max_bytes: int = DEFAULT_MAX_SPOOL_BYTES):
        self.folder = Path(root).expanduser() / hashlib.sha256(f"{server}\n{token}".encode()).hexdigest()[:16]
        self.folder.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self.path = self.folder / f"{os.getpid()}-{uuid.uuid4().hex[:8]}.jsonl"
        self._file = open(self.path, "a+", encoding="utf-8")
        fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self._pending: dict[str, dict] = {}
        self._origin: dict[str, Path] = {}
        self._adopted: dict[Path, object] = {}
        self._adopt_orphans()

    def _adopt_orphans(self) -> None:
        """Take over spool files whose owner process has gone (their lock is free)."""
        for path in sorted(self.folder.glob("*.jsonl")):
            if path == self.path:
                continue
            handle = open(path, "a+", encoding="utf-8")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                handle.close()
                continue
            self._adopted[path] = handle
            for batch in _unsent_batches(path):
                self._pending[batch["batch_id"]] = batch
                self._origin[batch["batch_id"]] = path

    def size(self) -> int:
        """Bytes held in this spool's files."""
        return sum(path.stat().st_size for path in [self.path, *self._adopted] if path.exists())

    def append(self, batch: dict) -> bool:
        """Spool `batch` (durably, before any send); False when the spool is full."""
        line = json.dumps({"batch": batch}, separators=(",", ":"), default=str) + "\n"
        if self.size() + len(line) > self.max_bytes:
            return False
        self._file.write(line)
        self._file.flush()
        os.fsync(self._file.fileno())
        self._pending[batch["batch_id"]] = batch
        self._origin[batch["batch_id"]] = self.path
        return True

    def pending(self) -> list[dict]:
        """Batches not yet acknowledged, oldest first."""
        return list(self._pending.values())

    def mark_sent(self, batch_id: str) -> None:
        """Record that the server acknowledged `batch_id`; empty files are removed or truncated."""
        self._pending.pop(batch_id, None)
        origin = self._origin.pop(batch_id, self.path)
        handle = self._file if origin == self.path else self._adopted[origin]
        handle.write(json.dumps({"sent": batch_id}) + "\n")
        handle.flush()
        if origin not in self._origin.values():
            self._compact(origin)

    def set_aside(self, batch: dict, reason: str) -> None:
        """Keep a batch the server refused for good in ``rejected/batches.jsonl``; stop resending it."""
        (self.folder / "rejected").mkdir(exist_ok=True)
        with open(self.folder / "rejected" / "batches.jsonl", "a", encoding="utf-8") as rejected:
            rejected.write(json.dumps({"reason": reason, "batch": batch}, default=str) + "\n")
        self.mark_sent(batch["batch_id"])

    def _compact(self, path: Path) -> None:
        """Nothing of `path` is pending any more: drop its content (an adopted file is deleted)."""
        if path == self.path:
            self._file.truncate(0)
            return
        path.unlink(missing_ok=True)
        self._adopted.pop(path).close()

    def close(self) -> None:
        """Release the files (an empty own file is deleted; a non-empty one waits for adoption)."""
        for path, handle in [(self.path, self._file), *self._adopted.items()]:
            if path not in self._origin.values():
                path.unlink(missing_ok=True)
            handle.close()
        self._adopted.clear()


def _unsent_batches(path: Path) -> list[dict]:
    """Batches spooled in `path` without a later ``sent`` line; a torn last line is skipped."""
    batches: dict[str, dict] = {}
    with open(path, encoding="utf-8") as lines:
        for line in lines:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                logger.warning("taskscope fleet: skipping an unreadable spool line in %s", path)
                continue
            if "batch" in record:
                batches[record["batch"]["batch_id"]] = record["batch"]
            elif "sent" in record:
                batches.pop(record["sent"], None)
    return list(batches.values())


def tls_verification(verify: bool | str) -> bool | ssl.SSLContext:
    """What httpx takes as `verify`: True (the system's CAs), False (no check), or for a CA bundle
    path an SSL context trusting it (OSError when the file is missing or holds no certificate).
    The strings "true"/"false" (from an environment variable) count as the booleans.

    >>> tls_verification("false"), tls_verification(True)
    (False, True)
    """
    if isinstance(verify, str) and verify.strip().lower() in ("true", "false", "yes", "no", "1", "0"):
        return verify.strip().lower() in ("true", "yes", "1")
    if isinstance(verify, str):
        return ssl.create_default_context(cafile=os.path.expanduser(verify))
    return bool(verify)


def check_server_url(server: str) -> str:
    """`server` if it is an http(s) URL with a host; ValueError saying what is wrong otherwise
    (a sender given anything else would fail on every send, in a background thread).

    >>> check_server_url("https://fleet.example.org:8443")
    'https://fleet.example.org:8443'
    >>> check_server_url("ftp://fleet.example.org")
    Traceback (most recent call last):
    ValueError: taskscope fleet: server 'ftp://fleet.example.org' is not an http:// or https:// URL
    """
    try:
        parts = urlsplit(server)
        parts.port  # noqa: B018 - reading it checks it (a port beyond 65535, or not a number)
    except ValueError as exc:
        raise ValueError(f"taskscope fleet: server {server!r} is not a URL ({exc})") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"taskscope fleet: server {server!r} is not an http:// or https:// URL")
    if not parts.hostname:
        raise ValueError(f"taskscope fleet: server {server!r} names no host")
    return server


def refused_tls(error: BaseException) -> ssl.SSLError | None:
    """The TLS error behind a failed request (an untrusted certificate, a refused handshake), if any."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


class Sender:
    """Send messages about one cluster to a fleet server, from a background thread.

    >>> sender = Sender("http://127.0.0.1:9", "tok", {"cluster_id": "c1", "kind": "dask"},
    ...                 spool_dir=Path(__import__("tempfile").mkdtemp()))
    >>> sender.submit([{"kind": "workers", "ts": 1.0, "n_workers": 1}])  # never raises, never blocks
    >>> sender.close(timeout=0.2)   # server unreachable: the batch stays spooled for a later process
    False
    """

    def __init__(self, server: str, token: str, cluster: dict, *, spool_dir: Path | str | None = None,
                 max_spool_bytes: int = DEFAULT_MAX_SPOOL_BYTES, timeout: float = 5.0,
                 retry_max_s: float = RETRY_MAX_S, verify: bool | str = True):
        self.server = check_server_url(server).rstrip("/")
        self.cluster = dict(cluster)
        self.stats = SenderStats()
        self._headers = {"Authorization": f"Bearer {token}"}
        self._timeout = timeout
        self._verify = tls_verification(verify)  # a bad CA bundle fails here, in the caller, not later
        self._tls_refusal_logged = False
        self._retry_max_s = retry_max_s
        self._spool = Spool(Path(spool_dir) if spool_dir else DEFAULT_SPOOL_DIR, self.server, token, max_spool_bytes)
        self._queue: queue.Queue = queue.Queue()
        self._idle = threading.Event()
        self._delivered = False
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="taskscope-fleet-sender", daemon=True)
        self._thread.start()

    def submit(self, messages: list[dict]) -> None:
        """Queue `messages` for sending; returns at once (safe on an event loop)."""
        if messages:
            self._queue.put(list(messages))

    def flush(self, timeout: float = 5.0) -> bool:
        """Spool everything submitted so far and make one send attempt, waiting at most `timeout`
        seconds; True when nothing is left to send (False: kept in the spool, resent later)."""
        self._idle.clear()
        self._queue.put(_FLUSH)
        return self._idle.wait(timeout) and self._delivered

    def close(self, timeout: float = 5.0) -> bool:
        """Flush, then stop, within `timeout` seconds in all; what is unsent stays in the spool.

        The thread is given only what is left of `timeout` to finish: one stuck in a send (a server
        that accepts but never answers) is left behind, as a daemon, with the batch spooled.
        """
        deadline = time.monotonic() + timeout
        delivered = self.flush(timeout)
        self._stopping.set()
        self._queue.put(_FLUSH)
        self._thread.join(timeout=max(deadline - time.monotonic(), 0.0))
        return delivered

    def _run(self) -> None:
        with httpx.Client(headers=self._headers, timeout=self._timeout, verify=self._verify) as http:
            self._loop(http)

    def _loop(self, http: httpx.Client) -> None:
        delay = min(RETRY_MIN_S, self._retry_max_s)
        while True:
            try:
                item = self._queue.get(timeout=delay if self._spool.pending() else None)
            except queue.Empty:
                item = None
            flush_requested = item is _FLUSH
            messages = [] if item is None or flush_requested else item
            while not self._queue.empty():
                more = self._queue.get_nowait()
                flush_requested |= more is _FLUSH
                messages.extend([] if more is _FLUSH else more)
            try:
                self._spool_messages(messages)
                delivered = self._send_pending(http)
            except Exception:  # the thread must survive anything (a full disk, a bug in one batch)
                logger.exception("taskscope fleet: sender error")
                delivered = False
            delay = min(RETRY_MIN_S, self._retry_max_s) if delivered else min(delay * 2, self._retry_max_s)
            if flush_requested:
                self._delivered = delivered
                self._idle.set()
            if self._stopping.is_set():
                self._spool.close()
                return

    def _spool_messages(self, messages: list[dict]) -> None:
        bounded = []
        for message in messages:
            cut = bound_message(message)
            self.stats.messages_truncated += cut is not message
            bounded.append(cut)
        for chunk in split_into_batches(bounded):
            batch = {"protocol": protocol.PROTOCOL_VERSION, "batch_id": uuid.uuid4().hex,
                     "cluster": self.cluster, "messages": chunk}
            if not self._spool.append(batch):
                self.stats.batches_dropped += 1
                self.stats.messages_dropped += len(chunk)
                logger.warning("taskscope fleet: spool full, dropped a batch of %d messages", len(chunk))

    def _log_send_failure(self, error: httpx.HTTPError) -> None:
        """A refused TLS handshake is a setup error: a WARNING, once; an unreachable server is INFO."""
        tls = refused_tls(error)
        if tls is None:
            logger.info("taskscope fleet: %s unreachable (%s); batch kept in the spool", self.server, error)
        elif not self._tls_refusal_logged:
            self._tls_refusal_logged = True
            logger.warning("taskscope fleet: TLS with %s failed (%s); batches are kept in the spool. For a private "
                           "CA set taskscope.fleet.verify to its CA bundle (verify=... in register())",
                           self.server, tls)

    def _send_pending(self, http: httpx.Client) -> bool:
        """POST every pending batch in order; True when none is left."""
        for batch in self._spool.pending():
            try:
                response = http.post(self.server + protocol.INGEST_PATH, **encoded_body({**batch, "sent_at": time.time()}))
            except httpx.HTTPError as error:
                self.stats.send_failures += 1
                self._log_send_failure(error)
                return False
            if response.status_code == 200:
                self._spool.mark_sent(batch["batch_id"])
                self.stats.batches_sent += 1
                self.stats.messages_sent += len(batch["messages"])
            elif response.status_code in SET_ASIDE_STATUSES:
                self._spool.set_aside(batch, f"{response.status_code}: {response.text[:500]}")
                self.stats.batches_rejected += 1
            else:
                self.stats.send_failures += 1
                logger.warning("taskscope fleet: server answered %d; batch kept in the spool", response.status_code)
                return False
        return True
