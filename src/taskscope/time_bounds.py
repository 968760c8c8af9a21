"""Times as epoch seconds: the range taskscope accepts, and a `since` filter given as text (a
date, a date and time, or epoch seconds).

The usage dashboard and the fleet server both filter by `since`; the fleet also takes durations
("7 days") on top (`taskscope.fleet.reads.parse_since`).
"""

from __future__ import annotations

from datetime import datetime, timezone

#: the times taskscope stores, as epoch seconds: years 1 to 9999, what a TIMESTAMPTZ and a date
#: can show. Ingest keeps a record with a time outside as a bad line and the fleet server refuses a
#: batch with one: stored, it would break every query and page that makes the time a date.
EARLIEST_TIME, LATEST_TIME = -62135596800, 253402300799


def epoch_since(text: str, expected: str, name: str = "since") -> float:
    """`text` as epoch seconds: a number from 0 to `LATEST_TIME`, or an ISO date or date and
    time (UTC unless it says otherwise); anything else (words, a negative number, NaN, infinities,
    a time past year 9999) raises ValueError("{name} must be {expected}, not ..."): a filter must
    refuse it, never cover another period instead.

    >>> epoch_since("2026-01-01", "a date")
    1767225600.0
    >>> epoch_since("86400", "a date")
    86400.0
    >>> epoch_since("nan", "a date", "until")
    Traceback (most recent call last):
    ...
    ValueError: until must be a date, not 'nan'
    """
    refusal = ValueError(f"{name} must be {expected}, not {text!r}")
    try:
        number = float(text)
    except ValueError:
        pass
    else:
        if not 0 <= number <= LATEST_TIME:  # NaN compares false: refused too
            raise refusal
        return number
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise refusal from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).timestamp()
