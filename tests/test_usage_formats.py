"""`taskscope usage` output formats and filters as a user meets them: `usage collect --format csv`
prints CSV (it once printed JSON), the same counts `--format json` prints; a `--since`/`--until`
that is no time (NaN, infinity, a negative number, a word) is refused naming the option, by `usage
report` and by the dashboard a collector serves, never read as another period.

Real `taskscope usage collect` processes on 127.0.0.1, real datagrams, real DuckDB files.
"""

from __future__ import annotations

import csv
import io
import json
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from conftest import run_cli
from taskscope.usage import protocol

from test_usage import free_udp_port, wait_until

#: one run's start message, a datagram of no known protocol version, one over --max-bytes
DATAGRAMS = [protocol.encode({"correlator": "run-1", "tracking_level": 1, "parsl_v": "2025.06.02",
                              "python_v": "3.12.1", "platform.system": "Linux", "start": 1_780_000_000}),
             b"junk", b"{" + b" " * 300 + b"}"]
MAX_BYTES = 200


def collect(store: Path, fmt: str, *options: str, datagrams: list[bytes] = DATAGRAMS) -> tuple[str, str]:
    """Run `usage collect --format FMT` on a free port, send `datagrams`, stop it with SIGINT: (stdout, stderr)."""
    port = free_udp_port()
    spool = Path(str(store) + ".spool")
    process = subprocess.Popen([sys.executable, "-m", "taskscope.cli", "usage", "collect", "--port", str(port),
                                "--store", str(store), "--max-bytes", str(MAX_BYTES), "--format", fmt, *options],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # the collector makes its spool segment once it has bound the port
        assert wait_until(lambda: any(spool.glob("*.spool")) or process.poll() is not None, 60)
        assert process.poll() is None, process.stderr.read()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for datagram in datagrams:
                sock.sendto(datagram, ("127.0.0.1", port))
        time.sleep(0.5)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, err
    return out, err


def test_collect_format_csv_prints_the_counts_as_csv(tmp_path):
    as_json = json.loads(collect(tmp_path / "json.duckdb", "json")[0])
    out, err = collect(tmp_path / "csv.duckdb", "csv")
    assert not out.lstrip().startswith("{"), out
    header, *rows = list(csv.reader(io.StringIO(out)))
    assert header == list(as_json) and len(rows) == 1, out  # a header row, one row per record: the one stop
    row = dict(zip(header, rows[0]))
    # the counts of the datagrams sent: one stored, one of no known version, one oversized
    assert (row["received"], row["parsed"], row["rejected"]) == ("3", "1", "2")
    assert json.loads(row["reasons"]) == {protocol.UNKNOWN_VERSION: 1, protocol.OVERSIZED: 1} == as_json["reasons"]
    assert row == {key: json.dumps(value, separators=(",", ":")) if isinstance(value, dict) else str(value)
                   for key, value in as_json.items()}
    assert "collecting usage datagrams" not in err  # machine-readable: only the data, as with json


def test_a_project_name_a_spreadsheet_would_run_is_written_as_text_in_csv(tmp_path):
    """Usage datagrams are anyone's: a project named `=HYPERLINK(...)` must not become a live formula
    in the CSV a maintainer opens in a spreadsheet (a leading `'` makes it text there)."""
    names = ['=HYPERLINK("http://e.x")', "+cmd|' /C calc'!A0", "@SUM(1+1)", "-2+3", "plain"]
    datagrams = [protocol.encode({"correlator": f"run-{n}", "tracking_level": 3, "parsl_v": "2025.06.02",
                                  "python_v": "3.12.1", "platform.system": "Linux", "start": 1_780_000_000 + n,
                                  "project_name": name}) for n, name in enumerate(names)]
    store = tmp_path / "hostile.duckdb"
    collect(store, "json", datagrams=datagrams)
    done = run_cli("usage", "report", "leaderboard", "--store", str(store), "--format", "csv")
    assert done.returncode == 0, done.stderr
    header, *rows = list(csv.reader(io.StringIO(done.stdout)))
    shown = sorted(dict(zip(header, row))["project_name"] for row in rows)
    assert shown == sorted(["'" + name for name in names[:-1]] + ["plain"]), done.stdout
    as_json = json.loads(run_cli("usage", "report", "leaderboard", "--store", str(store), "--format", "json").stdout)
    assert sorted(row["project_name"] for row in as_json) == sorted(names)  # JSON keeps them as sent


def test_collect_format_table_says_the_counts_in_one_line(tmp_path):
    out, err = collect(tmp_path / "table.duckdb", "table")
    assert out.strip() == "received 3: 1 stored, 2 rejected (1 oversized, 1 unknown protocol version)"
    assert "collecting usage datagrams on 127.0.0.1:" in err


@pytest.fixture(scope="module")
def usage_store(tmp_path_factory) -> Path:
    store = tmp_path_factory.mktemp("usage-formats") / "usage.duckdb"
    collect(store, "json")
    return store


@pytest.mark.parametrize("option", ["--since", "--until"])
@pytest.mark.parametrize("value", ["nan", "inf", "-5", "1e400", "yesterdayish"])
def test_report_refuses_a_bound_that_is_no_time_naming_the_option(usage_store, option, value):
    for where in (["--store", str(usage_store)], ["--from", "http://127.0.0.1:9"]):  # --from: before any request
        done = run_cli("usage", "report", "totals", *where, option, value, "--format", "csv")
        assert done.returncode == 2 and done.stdout == "", done.stdout
        assert done.stderr.strip() == (f"error: {option} must be a date (2026-01-31), a date and time or epoch "
                                       f"seconds (0 or more), not {value!r}"), done.stderr


@pytest.mark.parametrize("value, runs", [("2020-01-01", 1), ("2026-06-01", 0), ("0", 1), ("1780000000", 1),
                                         ("1780000001", 0)])
def test_report_reads_every_form_a_bound_takes(usage_store, value, runs):
    """The run started at 1780000000 (2026-05-28): counted from a `--since` at or before it, not after."""
    done = run_cli("usage", "report", "totals", "--store", str(usage_store), "--since", value, "--format", "json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)[0]["runs"] == runs


def test_the_dashboard_refuses_a_bound_that_is_no_time(tmp_path):
    """`usage collect --ui-port`: the page and the JSON answer 400 with the reason, not another period's runs."""
    store = tmp_path / "usage.duckdb"
    port = free_udp_port()
    process = subprocess.Popen([sys.executable, "-m", "taskscope.cli", "usage", "collect", "--port", str(port),
                                "--store", str(store), "--ui-port", "0", "--format", "csv"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = dashboard_url(process)
        for query in ("since=nan", "until=inf", "since=-5", "since=yesterdayish"):
            for path in ("/usage", "/api/usage/totals"):
                with pytest.raises(urllib.error.HTTPError) as refused:
                    urllib.request.urlopen(f"{url}{path}?{query}", timeout=60)
                assert refused.value.code == 400, (path, query)
                bound = query.split("=")[0]  # the refusal names the bound it refuses (both were "since and until")
                assert f"{bound} must be a date" in refused.value.read().decode(), (path, query)
    finally:
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=60)


def dashboard_url(process: subprocess.Popen) -> str:
    """The dashboard's base URL, from the collector's line "usage dashboard on http://HOST:PORT/usage"."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        if line.startswith("usage dashboard on "):
            return line.split()[-1].removesuffix("/usage")
        assert line or process.poll() is None, "the collector ended before serving its dashboard"
    raise AssertionError("the collector never said where its dashboard is")
