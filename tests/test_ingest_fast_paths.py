"""The ingest fast paths give exactly what the general (slower) paths give.

Each fast path has a general twin kept for input it does not fit: lines decoded in
numpy/Arrow vs decoded in SQL, Parsl DEFAULT_FORMAT headers split once per distinct middle
vs one regex per line, JSON attrs patched once per used-key mask vs per record.
"""

from __future__ import annotations

import json

import duckdb
import pytest

import taskscope
from taskscope._sql import literal
from taskscope.ingest.lines import read_new_lines, usable_lines_sql
from taskscope.sources.parsl_textlog import FORMATS, _headers_sql, header_test

DEFAULT_FORMAT = next(fmt for fmt in FORMATS if fmt.name == "parsl_default")


def _chunk(tmp_path, data: bytes):
    path = tmp_path / "lines.log"
    path.write_bytes(data)
    chunks = list(read_new_lines(str(path), 0, 0))
    assert len(chunks) == 1
    return chunks[0]


def test_decoded_chunk_equals_the_sql_decoding(tmp_path):
    # lines of up to 12 bytes are held inside their Arrow string view, longer ones by reference:
    # both sides of that edge, and a character across it
    data = "ab\r\ncd\n\r\n\nx\r\r\nmid\rdle\né ünïcødé 日本\n  lead and trail  \nexactly12byt\nthirteen byte\r\nabcdefghijkl日\n".encode()
    chunk = _chunk(tmp_path, data)
    assert chunk.text is not None
    con = duckdb.connect()
    con.register("chunk_lines", chunk.table)
    by_sql = con.execute(f"SELECT line, txt FROM ({usable_lines_sql('chunk_lines')}) ORDER BY line").fetchall()
    assert list(zip(chunk.text.column("line").to_pylist(), chunk.text.column("txt").to_pylist())) == by_sql
    assert [txt for _, txt in by_sql] == ["ab", "cd", "", "", "x\r", "mid\rdle", "é ünïcødé 日本", "  lead and trail  ",
                                       "exactly12byt", "thirteen byte", "abcdefghijkl日"]


@pytest.mark.parametrize("bad", [b"\xff\xfe not utf-8\n", b"nul \x00 byte\n", b"\xed\xa0\x80 surrogate\n"])
def test_a_chunk_with_a_bad_line_takes_the_checked_path(tmp_path, bad):
    chunk = _chunk(tmp_path, b"good line\n" + bad + b"another good line\n")
    assert chunk.text is None


HEADER_LINES = [
    "1795294503.123456 2026-11-16 10:15:03 MainProcess-2841 MainThread-140527446391680 parsl.dataflow.dflow:1146 launch_if_ready DEBUG: Task 7 launched",
    # thread names with spaces and dashes, process names with dashes and digits
    "1795294503.123456 2026-11-16 10:15:03 ForkProcess-1-2841 Thread-3 (_run)-1405 parsl.x:12 f INFO: hello: world",
    "1795294503.123456 2026-11-16 10:15:03 Fork-1-2-3 Task-Launch_0-1405 parsl.x:12 f WARNING:   three leading spaces",
    # nothing after the level: the fast split does not fit, the regex still reads it
    "1795294503.123456 2026-11-16 10:15:03 MainProcess-2841 MainThread-1 parsl.x:12 f ERROR:",
    "1795294503.123456 2026-11-16 10:15:03 MainProcess-2841 MainThread-1 parsl.x:12 f CRITICAL:no space",
    # ': ' inside a thread name, before the level
    "1795294503.123456 2026-11-16 10:15:03 MainProcess-2841 odd: name-1 parsl.x:12 f DEBUG: msg",
    # not headers: continuation lines
    "Traceback (most recent call last):",
    "  File \"x.py\", line 3, in <module>",
    "",
]


def test_default_format_split_equals_the_header_regex():
    con = duckdb.connect()
    con.execute("CREATE TABLE lines AS SELECT * FROM (SELECT unnest(range(1, ?)) AS line, unnest(?) AS txt)",
                [len(HEADER_LINES) + 1, HEADER_LINES])
    names = "[" + ", ".join(literal(f) for f in DEFAULT_FORMAT.fields) + "]"
    pattern = literal(DEFAULT_FORMAT.pattern)
    expected = con.execute(
        f"""SELECT line, CASE WHEN regexp_matches(txt, {pattern}) THEN regexp_extract(txt, {pattern}, {names}) END
            FROM lines ORDER BY line"""
    ).fetchall()
    lines_sql = f"SELECT line, txt, regexp_matches(txt, {pattern}) AS is_header, 0 AS record FROM lines"
    got = con.execute(f"SELECT line, h FROM ({_headers_sql(DEFAULT_FORMAT, lines_sql)}) ORDER BY line").fetchall()
    assert got == expected
    assert [h is not None for _, h in got] == [True] * 6 + [False] * 3
    assert got[1][1]["thread"] == "Thread-3 (_run)" and got[1][1]["message"] == "hello: world"


@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: f.name)
def test_the_header_test_finds_the_lines_the_full_header_regex_matches(fmt):
    con = duckdb.connect()
    lines = [*HEADER_LINES, "2026-01-01 00:00:00.123 a:1 [INFO] ", "2026-01-01 00:00:00 a:1 [INFO]  x" + "y" * 5000]
    found = con.execute(
        "SELECT list(regexp_matches(t, ?) ORDER BY i), list(regexp_matches(t, ?) ORDER BY i) "
        "FROM (SELECT unnest(?) AS t, unnest(range(len(?))) AS i)",
        [header_test(fmt), fmt.pattern, lines, lines],
    ).fetchall()[0]
    assert found[0] == found[1]
    assert header_test(fmt) != fmt.pattern  # the message group was cut off


JSON_RECORDS = [
    # Parsl JSONLogging: msg is a %-template or not
    {"created": 1795294503.5, "process": 1, "processName": "MainProcess", "threadName": "MainThread", "thread": 14,
     "name": "parsl", "lineno": 3, "funcname": "f", "levelname": "DEBUG", "msg": "Task %s done", "formatted": "Task 1 done",
     "parsl.task": 1},
    {"created": 1795294503.6, "process": 1, "processName": "MainProcess", "threadName": "MainThread", "thread": 14,
     "name": "parsl", "lineno": 3, "funcname": "f", "levelname": "DEBUG", "msg": "plain", "formatted": "plain"},
    # both host and hostname: the column takes the first
    {"ts": 1795294503.7, "host": "a", "hostname": "b", "message": "m", "levelno": 10, "extra": {"k": [1, 2]}},
    {"ts": 1795294503.8, "hostname": "b", "message": "m", "nested.key": "v"},
    # a key present with a JSON null does not fill its column, so the next candidate does
    {"time": "2026-11-16T10:15:03Z", "host": None, "hostname": "c", "msg": "only msg", "task_id": "12"},
    {"timestamp": 1795294503900, "level": "INFO", "event": "custom.thing", "worker_id": 3, "x": None},
]


def test_json_attrs_are_the_record_as_logged(tmp_path):
    lines = [json.dumps(record) for record in JSON_RECORDS]
    (tmp_path / "wide.jsonl").write_text("\n".join(lines + lines) + "\n")
    store = taskscope.open(":memory:")
    store.ingest(tmp_path / "wide.jsonl")
    rows = store.con.execute("SELECT line, attrs FROM events ORDER BY line").fetchall()
    assert [line for line, _ in rows] == list(range(1, 2 * len(JSON_RECORDS) + 1))
    for line, attrs in rows:
        record = JSON_RECORDS[(line - 1) % len(JSON_RECORDS)]
        assert json.loads(attrs) == record
    # the columns took the first candidate key present and not null
    hosts = [row[0] for row in store.con.execute("SELECT host FROM events ORDER BY line LIMIT 6").fetchall()]
    assert hosts == [None, None, "a", "b", "c", None]
