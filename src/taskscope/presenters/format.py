"""How values read, as text and as JSON: one vocabulary for the CLI and the web.

The CLI's `--format json` and the web's `/api/...` both serialise rows with `records` and
`json_bytes`, so the same question gives the same JSON; tables (Rich in a terminal, HTML in a
page) show values with `cell`, `clock`, `seconds` and `percent`.
"""

from __future__ import annotations

import math
import re
from datetime import datetime, timezone

import numpy as np
import orjson
import pandas as pd

from taskscope.analyses.runs import FINAL_STATES

#: what a task without a final state (still running, or the run was killed) is listed as
UNFINISHED = "unfinished"


_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.IGNORECASE)


def short_run_id(run_id) -> str:
    """A run id as tables show it: a UUID (Parsl's run ids) by its first 8 characters, any other
    id whole (`nightly-7` and `nightly-8` must not both read `nightly-`). `--run` takes either.

    >>> short_run_id("dcac2105-9269-48ef-a3c3-6f2012b00d3c"), short_run_id("nightly-7")
    ('dcac2105', 'nightly-7')
    """
    if missing(run_id):
        return ""
    text = str(run_id)
    return text[:8] if _UUID.fullmatch(text) else text


def short_run_ids(values: pd.Series) -> pd.Series:
    """`short_run_id` of each value of a column.

    >>> short_run_ids(pd.Series(["dcac2105-9269-48ef-a3c3-6f2012b00d3c", "nightly-7"])).tolist()
    ['dcac2105', 'nightly-7']
    """
    return values.map(short_run_id)


def missing(value) -> bool:
    """True for None, NaN, NaT and pandas NA.

    >>> missing(float("nan")), missing(pd.NaT), missing(0)
    (True, True, False)
    """
    if value is None or value is pd.NaT or value is pd.NA:
        return True
    return isinstance(value, float) and math.isnan(value)


def epoch_seconds(value) -> float:
    """A time (epoch seconds, a pandas Timestamp or a datetime) as seconds since the epoch.

    >>> epoch_seconds(pd.Timestamp("2026-01-02 03:04:05", tz="UTC"))
    1767323045.0
    """
    if isinstance(value, (pd.Timestamp, datetime)):
        return value.timestamp()
    return float(value)


def clock(ts) -> str:
    """A time as `YYYY-MM-DD HH:MM:SS.mmm` (UTC); empty when missing.

    >>> clock(1767323045.25)
    '2026-01-02 03:04:05.250'
    """
    if missing(ts):
        return ""
    return datetime.fromtimestamp(epoch_seconds(ts), timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def short_clocks(values: pd.Series) -> tuple[pd.Series, str | None]:
    """Times shortened for a narrow table: `HH:MM:SS.mmm` and the day they share when they all
    fall on one UTC day, else `YYYY-MM-DD HH:MM:SS`; dates (every time a UTC midnight: a DATE
    column, a release date, a period of days) as `YYYY-MM-DD`; missing ones empty.

    >>> texts, day = short_clocks(pd.Series([1767323045.25, None]))
    >>> texts.tolist(), day
    (['03:04:05.250', ''], '2026-01-02')
    >>> short_clocks(pd.Series([1767225600.0, None]))[0].tolist()
    ['2026-01-01', '']
    """
    present = values.dropna()
    if not present.empty and all(epoch_seconds(value) % 86400 == 0 for value in present):
        return values.map(lambda value: clock(value)[:10]), None
    days = {clock(value)[:10] for value in present}
    if len(days) <= 1:
        return values.map(lambda value: clock(value)[11:]), next(iter(days), None)
    return values.map(lambda value: clock(value)[:19]), None


def seconds(value, digits: int = 3) -> str:
    """A duration in seconds, readable: `0.012 s`, `4.5 min`, `2.1 h`; empty when missing.

    >>> seconds(0.0123), seconds(270), seconds(7560)
    ('0.012 s', '4.5 min', '2.1 h')
    """
    if missing(value):
        return ""
    value = float(value)
    if abs(value) >= 7200:
        return f"{value / 3600:.1f} h"
    if abs(value) >= 120:
        return f"{value / 60:.1f} min"
    return f"{value:.{digits}f} s"


def bytes_text(value: bytes | bytearray) -> str:
    """Bytes (a bad line's head) as text: UTF-8 where they are, escapes where not.

    >>> bytes_text(bytearray(b"ts,\\xff\\x00 id"))
    'ts,\\\\xff\\\\x00 id'
    """
    return bytes(value).decode("utf-8", "backslashreplace").replace("\x00", "\\x00")


def cell(value) -> str:
    """Any table value as text: empty for missing, integers without `.0`, other numbers with
    6 significant digits.

    >>> cell(None), cell(3.0), cell(6.294867), cell("inc")
    ('', '3', '6.29487', 'inc')
    """
    if isinstance(value, (np.ndarray, list, tuple, dict)):
        return json_bytes(value).decode()
    if isinstance(value, (bytes, bytearray)):
        return bytes_text(value)
    if missing(value):
        return ""
    if isinstance(value, (float, np.floating)):
        return str(int(value)) if float(value).is_integer() and abs(value) < 1e15 else f"{value:.6g}"
    return str(value)


def percent(fraction) -> str:
    """A fraction as a percentage with 3 significant digits; empty when missing.

    >>> percent(0.307692)
    '30.8 %'
    """
    if missing(fraction):
        return ""
    return f"{float(fraction) * 100:.3g} %"


def with_unfinished(tasks: pd.DataFrame) -> pd.DataFrame:
    """`tasks` (a `taskscope.analyses.tasks.tasks` frame) with `UNFINISHED` as the final state
    of tasks that have none yet (no state, or only one on the way: `launched` in a killed run),
    as every presenter lists them and as `summary` counts them.

    >>> with_unfinished(pd.DataFrame({"final_state": ["exec_done", "launched", None]})).final_state.tolist()
    ['exec_done', 'unfinished', 'unfinished']
    """
    final = tasks["final_state"].isin(FINAL_STATES)
    return tasks.assign(final_state=tasks["final_state"].where(final, UNFINISHED))


def records(frame: pd.DataFrame) -> list[dict]:
    """A DataFrame as JSON-ready rows (missing values as None).

    >>> records(pd.DataFrame({"task_id": ["1"], "tries": [float("nan")]}))
    [{'task_id': '1', 'tries': None}]
    """
    if frame.empty:
        return []
    return frame.astype(object).where(frame.notna(), None).to_dict("records")


def json_default(value):
    """What `orjson` cannot serialise itself, as JSON: times as ISO text, numpy scalars as
    numbers, missing as null, DataFrames as `records`, anything else as its text."""
    if isinstance(value, (pd.Timestamp, datetime)):
        return value.isoformat()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):  # a list column (object dtype, which orjson leaves to us)
        return value.tolist()
    if isinstance(value, (bytes, bytearray)):
        return bytes_text(value)
    if missing(value):
        return None
    if isinstance(value, pd.DataFrame):
        return records(value)
    return str(value)


#: what a spreadsheet runs as a formula when a cell starts with it (OWASP's "CSV injection")
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_PLAIN_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def csv_text(frame: pd.DataFrame) -> str:
    """`frame` as CSV, a list or struct value as JSON text in its cell (not Python's repr,
    which no tool reads back and which may hold newlines), bytes as text (see `bytes_text`).
    A text that a spreadsheet would run as a formula (`=HYPERLINK(...)`, from a log or a usage
    message) gets a leading `'`, which spreadsheets show as text; a number written as text stays.

    >>> print(csv_text(pd.DataFrame({"run": ["r1"], "components": [["htex", "local"]]})), end="")
    run,components
    r1,"[""htex"",""local""]"
    >>> print(csv_text(pd.DataFrame({"project": ['=HYPERLINK("x")', "-1"]})), end="")
    project
    "'=HYPERLINK(""x"")"
    -1
    """
    def text(value):
        if isinstance(value, (np.ndarray, list, dict)):
            return json_bytes(value).decode()
        return bytes_text(value) if isinstance(value, (bytes, bytearray)) else value

    nested = [name for name in frame.columns if frame[name].dtype == object
              and frame[name].map(lambda v: isinstance(v, (np.ndarray, list, dict, bytes, bytearray))).any()]
    if nested:
        frame = frame.assign(**{name: frame[name].map(text) for name in nested})
    texts = [name for name in frame.columns if frame[name].dtype == object or pd.api.types.is_string_dtype(frame[name])]
    if texts:
        frame = frame.assign(**{name: _as_spreadsheet_text(frame[name]) for name in texts})
    return frame.to_csv(index=False)


def _as_spreadsheet_text(column: pd.Series) -> pd.Series:
    """`column` with a leading `'` on each text a spreadsheet would run as a formula (see `csv_text`).
    Vectorised: a Python test per cell doubled the time of a 370k-event CSV."""
    try:
        starts = column.str.startswith(_FORMULA_STARTS, na=False)
    except AttributeError:  # no text in it (numbers kept in an object column)
        return column
    if not starts.any():
        return column
    positions = np.flatnonzero(starts.to_numpy())
    positions = positions[~column.iloc[positions].str.fullmatch(_PLAIN_NUMBER.pattern, na=False).to_numpy(dtype=bool)]
    if not len(positions):
        return column
    column = column.copy()
    column.iloc[positions] = "'" + column.iloc[positions]
    return column


def json_bytes(data) -> bytes:
    """`data` (dicts, lists, DataFrames, numpy values) as JSON: what both `--format json` and
    the web's `/api/...` send (NaN and infinities as null).

    >>> json_bytes({"rows": pd.DataFrame({"a": [1.5, None]})})
    b'{"rows":[{"a":1.5},{"a":null}]}'
    """
    if isinstance(data, pd.DataFrame):
        data = records(data)
    return orjson.dumps(data, default=json_default, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS)
