"""The usage datagram format, shared by the client (`taskscope.usage.client`) and the collector.

One UDP datagram is one message: the protocol byte `b"1"` followed by a JSON object, exactly as
Parsl's `parsl.usage_tracking.usage.UsageTracker.encode_message` builds it. The collector also
accepts the original pure-JSON form (the datagram starts with `b"{"`, Parsl before March 2024).

A run sends a *start* message and, at level 3, an *end* message with the same `correlator`:

    start: {"correlator", "product", "<product>_v", "python_v", "platform.system", "tracking_level",
            ["project_name"], ["components": level >= 2], ["start": level 3, integer epoch seconds]}
    end:   {"correlator", "product", "end", "execution_time",
            "components": [{"c": <product>, "app_count", "app_fails"}, ...], ["project_name"]}

Parsl's own messages have the same shape without `"product"` (its version key is `parsl_v`, its
first end component is the DataFlowKernel). The collector validates datagrams in DuckDB (see
`taskscope.usage.storage`); `decode` here is the same rule set in Python, for tools and tests.
A key given twice keeps its first value in both. The fields' values (levels, versions, times,
counts) are checked where they are read, by `taskscope.usage.reports`.
"""

from __future__ import annotations

import json
import platform
import sys
from dataclasses import dataclass
from typing import Any

PROTOCOL_VERSION = b"1"
#: first byte of the pre-2024 protocol: the datagram is the JSON object itself
LEGACY_JSON = b"{"
#: datagrams larger than this are rejected as oversized (Parsl's largest messages are ~1 KB)
MAX_DATAGRAM_BYTES = 16 * 1024
#: a correlator longer than this is not one
MAX_CORRELATOR_CHARS = 200

LEVEL_OFF, LEVEL_BASIC, LEVEL_COMPONENTS, LEVEL_EXECUTION = 0, 1, 2, 3

# why a datagram was rejected (the collector stores these strings)
EMPTY = "empty"
OVERSIZED = "oversized"
UNKNOWN_VERSION = "unknown protocol version"
NOT_UTF8 = "not UTF-8"
BAD_JSON = "malformed JSON"
NOT_OBJECT = "not a JSON object"
NO_CORRELATOR = "no correlator"
REJECT_REASONS = (EMPTY, OVERSIZED, UNKNOWN_VERSION, NOT_UTF8, BAD_JSON, NOT_OBJECT, NO_CORRELATOR)


class MalformedDatagram(ValueError):
    """A datagram that is not a usage message; `reason` is one of `REJECT_REASONS`."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class UsageMessage:
    """One decoded datagram: `kind` is "start" or "end", `fields` the JSON object as sent."""

    kind: str
    correlator: str
    fields: dict[str, Any]
    protocol: str


def encode(message: dict[str, Any]) -> bytes:
    """The datagram for `message`, byte for byte what Parsl sends (`b"1"` + `json.dumps`).

    >>> encode({"correlator": "c1", "tracking_level": 1})
    b'1{"correlator": "c1", "tracking_level": 1}'
    """
    return PROTOCOL_VERSION + json.dumps(message, default=str).encode()


def decode(datagram: bytes, max_bytes: int = MAX_DATAGRAM_BYTES) -> UsageMessage:
    """The message in `datagram`, or `MalformedDatagram` saying why it is not one.

    >>> decode(b'1{"correlator": "c1", "end": 5}').kind
    'end'
    >>> try:
    ...     decode(b'2{}')
    ... except MalformedDatagram as exc:
    ...     print(exc.reason)
    unknown protocol version
    """
    if not datagram:
        raise MalformedDatagram(EMPTY)
    if len(datagram) > max_bytes:
        raise MalformedDatagram(OVERSIZED)
    if datagram[:1] == PROTOCOL_VERSION:
        body, protocol = datagram[1:], PROTOCOL_VERSION.decode()
    elif datagram[:1] == LEGACY_JSON:
        body, protocol = datagram, LEGACY_JSON.decode()
    else:
        raise MalformedDatagram(UNKNOWN_VERSION)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedDatagram(NOT_UTF8) from None
    try:
        # NaN and Infinity pass, as in Parsl's json.dumps and DuckDB's json_valid; a key given
        # twice keeps its first value, as DuckDB reads it (the reports flag it "duplicate key")
        fields = json.loads(text, object_pairs_hook=_first_of_duplicates)
    except ValueError:
        raise MalformedDatagram(BAD_JSON) from None
    if not isinstance(fields, dict):
        raise MalformedDatagram(NOT_OBJECT)
    correlator = fields.get("correlator", fields.get("uuid"))
    if not isinstance(correlator, str) or not 0 < len(correlator) <= MAX_CORRELATOR_CHARS:
        raise MalformedDatagram(NO_CORRELATOR)
    return UsageMessage("end" if "end" in fields else "start", correlator, fields, protocol)


def _first_of_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object's pairs as a dict, a duplicated key keeping its first value.

    >>> _first_of_duplicates([("a", 1), ("b", 2), ("a", 3)])
    {'a': 1, 'b': 2}
    """
    fields: dict[str, Any] = {}
    for key, value in pairs:
        fields.setdefault(key, value)
    return fields


def check_level(level: int | bool) -> int:
    """`level` as an int 0-3 (True/False count as 1/0, as in Parsl); ValueError otherwise.

    >>> check_level(True)
    1
    """
    if isinstance(level, bool):
        return int(level)
    if not isinstance(level, int) or not LEVEL_OFF <= level <= LEVEL_EXECUTION:
        raise ValueError(f"usage tracking level must be 0, 1, 2 or 3, not {level!r}")
    return level


def python_version() -> str:
    """This interpreter's version as Parsl reports it ("3.11.9")."""
    return "{}.{}.{}".format(*sys.version_info[:3])


def start_message(
    correlator: str, product: str, version: str, level: int, project_name: str | None,
    components: list[Any] | None, start: int | None,
) -> dict[str, Any]:
    """The start message of a run at `level` (1-3), shaped like Parsl's.

    >>> sorted(start_message("c1", "mytool", "1.0", 1, None, None, None))
    ['correlator', 'mytool_v', 'platform.system', 'product', 'python_v', 'tracking_level']
    """
    message: dict[str, Any] = {
        "correlator": correlator, "product": product, f"{product}_v": version,
        "python_v": python_version(), "platform.system": platform.system(), "tracking_level": level,
    }
    if project_name:
        message["project_name"] = project_name
    if level >= LEVEL_COMPONENTS:
        message["components"] = list(components or [])
    if level >= LEVEL_EXECUTION and start is not None:
        message["start"] = start
    return message


def end_message(
    correlator: str, product: str, project_name: str | None, components: list[Any] | None,
    start: int, end: int, task_count: int, failures: int,
) -> dict[str, Any]:
    """The end message of a level-3 run, shaped like Parsl's (counts in the first component).

    >>> end_message("c1", "mytool", None, ["mytool.Pool"], 10, 25, 4, 1)["components"][0]
    {'c': 'mytool', 'app_count': 4, 'app_fails': 1}
    """
    message: dict[str, Any] = {
        "correlator": correlator, "product": product, "end": end, "execution_time": end - start,
        "components": [{"c": product, "app_count": task_count, "app_fails": failures}, *(components or [])],
    }
    if project_name:
        message["project_name"] = project_name
    return message
