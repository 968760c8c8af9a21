"""A synthetic usage history over 24 months with known truth, sent to a real collector on
127.0.0.1 all at once (as an import or a delayed delivery arrives): every report must date runs by
when they ran, age installations from release dates, and keep invalid values out of every value."""

from __future__ import annotations

import csv
import io
import json
import random
import time
from collections import Counter
from datetime import datetime, timezone

import pandas as pd
import pytest

import taskscope

from taskscope.presenters.format import csv_text
from taskscope.usage import protocol, reports
from test_usage import collector, stop_and_open, wait_until  # noqa: F401 - the fixture

DAY = 86400
MONTHS = [(2024 + (11 + m - 1) // 12, (11 + m - 1) % 12 + 1) for m in range(24)]  # 2024-11 .. 2026-10
PARSL_RELEASES = ["2024.09.02", "2024.11.04", "2025.01.13", "2025.03.03", "2025.06.02", "2025.09.01",
                  "2025.12.01", "2026.03.02", "2026.06.01", "2026.08.03"]
MYTOOL_RELEASES = {"1.0": "2024-10-01", "1.1": "2025-06-15"}  # "1.2" is missing from the table: first seen


def epoch(text: str) -> float:
    return datetime.strptime(text, "%Y.%m.%d" if "." in text else "%Y-%m-%d").replace(tzinfo=timezone.utc).timestamp()


def age_bucket(days: float) -> str:
    for (low, label), (high, _) in zip(reports._AGE_BUCKETS, reports._AGE_BUCKETS[1:] + [(float("inf"), "")]):
        if low <= days < high:
            return label
    raise AssertionError(days)


def history(seed: int = 22) -> tuple[list[dict], dict]:
    """Messages of valid Parsl and mytool runs, and the truth: runs per month, age buckets."""
    rng = random.Random(seed)
    messages, months, ages = [], Counter(), Counter()
    for index, (year, month) in enumerate(MONTHS):
        for number in range(5 + 2 * index):
            moment = datetime(year, month, 1 + number % 28, number % 24, 7, tzinfo=timezone.utc).timestamp()
            released = [v for v in PARSL_RELEASES if epoch(v) <= moment]
            version = rng.choice(released[-3:])
            correlator = f"parsl-{year}-{month}-{number}"
            level = 1 + number % 3
            start = {"correlator": correlator, "parsl_v": version, "python_v": rng.choice(["3.10.4", "3.11.9", "3.12.2"]),
                     "platform.system": "Linux", "tracking_level": level, "project_name": f"p{number % 4}"}
            if level == 3:
                start["start"] = int(moment)
            messages.append(start)
            if level == 3:
                messages.append({"correlator": correlator, "end": int(moment) + 60, "execution_time": 60,
                                 "components": [{"c": "parsl.dataflow.dflow.DataFlowKernel", "app_count": 4,
                                                 "app_fails": 1}]})
            if level == 3:
                months[f"{year}-{month:02d}"] += 1
                ages[age_bucket((int(moment) - epoch(version)) / DAY)] += 1
            else:  # level 1 and 2 runs send no `start`: they are dated (and aged) by arrival
                ages[("arrival", version)] += 1
    return messages, {"months": months, "ages": ages}


INVALID = [  # (message, field, reason)
    ({"tracking_level": 3.7}, "tracking_level", "not an integer"),
    ({"tracking_level": -1}, "tracking_level", "not 1, 2 or 3"),
    ({"tracking_level": 0}, "tracking_level", "not 1, 2 or 3"),
    ({"tracking_level": 99}, "tracking_level", "not 1, 2 or 3"),
    ({"tracking_level": "3"}, "tracking_level", "not an integer"),
    ({"python_v": "banana"}, "python_v", "not a version"),
    ({"parsl_v": "banana"}, "version", "not a version"),
    ({"parsl_v": "2025.13.45"}, "version", "not a release date"),
    ({"start": 99}, "start", "before the product existed"),
    ({"start": "yesterday"}, "start", "not a number"),
    ({"start": int(epoch("2024.01.02"))}, "start", "before its version was released"),
]


def invalid_runs() -> list[bytes]:
    datagrams = []
    for number, (change, _, _) in enumerate(INVALID):
        message = {"correlator": f"bad-{number}", "parsl_v": "2025.06.02", "python_v": "3.12.2",
                   "platform.system": "Linux", "tracking_level": 1, **change}
        datagrams.append(protocol.encode(message))
    future = {"correlator": "bad-future", "parsl_v": "2025.06.02", "python_v": "3.12.2", "platform.system": "Linux",
              "tracking_level": 3, "start": int(time.time()) + 3 * DAY}
    datagrams.append(protocol.encode(future))
    # a key twice: the first value counts everywhere (collector and protocol.decode)
    datagrams.append(b'1{"correlator": "bad-dup", "parsl_v": "2025.06.02", "python_v": "3.12.2", '
                     b'"tracking_level": 7, "tracking_level": 2}')
    return datagrams


def mytool_runs() -> tuple[list[dict], Counter]:
    messages, ages = [], Counter()
    for number, (version, when) in enumerate([("1.0", "2025-01-05"), ("1.1", "2025-07-01"), ("1.1", "2026-07-01"),
                                              ("1.2", "2026-09-01")]):
        moment = epoch(when)
        messages.append({"correlator": f"mytool-{number}", "product": "mytool", "mytool_v": version,
                         "python_v": "3.12.2", "platform.system": "Linux", "tracking_level": 3, "start": int(moment)})
        if version in MYTOOL_RELEASES:
            ages[age_bucket((moment - epoch(MYTOOL_RELEASES[version])) / DAY)] += 1
        else:
            ages["< 1 week"] += 1  # first seen by its own (only) run: labelled runs_first_seen
    return messages, ages


def send(collector, datagrams: list[bytes]) -> None:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for datagram in datagrams:
            sock.sendto(datagram, collector.address)
            time.sleep(0.0002)  # paced: loopback UDP must not overrun the receiver on a busy machine
    assert wait_until(lambda: collector.stats.parsed + collector.stats.rejected >= len(datagrams), 60)


@pytest.mark.slow
def test_a_24_month_history_is_dated_aged_and_validated_exactly(collector, tmp_path):
    parsl_messages, truth = history()
    tool_messages, tool_ages = mytool_runs()
    datagrams = [protocol.encode(m) for m in parsl_messages + tool_messages] + invalid_runs()
    arrived_from = time.time()
    send(collector, datagrams)
    store = stop_and_open(collector)
    assert collector.stats.rejected == 0
    releases_csv = tmp_path / "releases.csv"
    releases_csv.write_text("product,version,released\n" + "".join(
        f"mytool,{version},{date}\n" for version, date in MYTOOL_RELEASES.items()))

    # monthly runs: each run in the month it ran; those without a usable time in the month they arrived
    monthly = reports.runs_over_time(store, product="parsl", period="month")
    got = {f"{stamp:%Y-%m}": int(runs) for stamp, runs in zip(monthly.period, monthly.runs)}
    arrival_month = f"{datetime.fromtimestamp(arrived_from, timezone.utc):%Y-%m}"
    expected = Counter(truth["months"])
    undated = sum(n for key, n in truth["ages"].items() if isinstance(key, tuple)) + len(INVALID) + 2
    expected[arrival_month] += undated
    assert got == {k: v for k, v in expected.items() if v}

    # installation age from release dates, not first seen; mytool's from the table, "1.2" labelled
    parsl_runs = reports.usage_runs(store, product="parsl")
    age = reports.installation_age(store, product="parsl", since=epoch("2024-11-01"), until=epoch("2026-11-01"))
    dated_truth = Counter({k: v for k, v in truth["ages"].items() if not isinstance(k, tuple)})
    assert dict(zip(age.bucket, age.runs)) == {label: dated_truth.get(label, 0) for _, label in reports._AGE_BUCKETS}
    assert age.runs_first_seen.sum() == 0
    table = reports.release_dates(releases_csv)
    tool_age = reports.installation_age(store, product="mytool", releases=table)
    assert dict(zip(tool_age.bucket, tool_age.runs)) == {label: tool_ages.get(label, 0) for _, label in reports._AGE_BUCKETS}
    assert tool_age.runs_first_seen.sum() == 1

    # invalid fields: counted with their reasons, never values
    invalid = reports.invalid_fields(store)
    counted = {(f, r): int(n) for f, r, n in zip(invalid.field, invalid.reason, invalid.runs)}
    want = Counter((field, reason) for _, field, reason in INVALID)
    want[("start", "more than a day in the future")] += 1
    want[("tracking_level", "not 1, 2 or 3")] += 1  # bad-dup's first value, 7
    want[("message", "duplicate key")] += 1
    assert counted == dict(want)
    assert set(reports.levels(store).tracking_level) <= {1, 2, 3}
    assert "banana" not in set(reports.python_versions(store).python_version)
    versions = set(reports.product_versions(store).version)
    assert not {"banana", "2025.13.45"} & versions
    runs = parsl_runs.set_index("correlator")
    assert runs.loc["bad-future"].dated_by == "arrival" and pd.isna(runs.loc["bad-future"].start_ts)
    assert runs.loc["parsl-2025-3-2"].dated_by == "start"
    decoded = protocol.decode(b'1{"correlator": "x", "tracking_level": 7, "tracking_level": 2}')
    assert decoded.fields["tracking_level"] == 7  # the value the collector's store reads

    # adoption: weeks after each release until 25/50/75 % of that week's runs used it or newer
    until = epoch("2026-11-01")  # the runs dated by their start; arrival-dated ones came later
    dated = [(m["start"], epoch(m["parsl_v"])) for m in parsl_messages if "start" in m]
    summary = reports.adoption_summary(store, product="parsl", until=until).set_index("version")
    for version in {m["parsl_v"] for m in parsl_messages if "parsl_v" in m}:
        released = epoch(version)
        weeks: dict[int, list[bool]] = {}
        for ts, run_released in dated:
            if ts >= released:
                weeks.setdefault(int((ts - released) // (7 * DAY)), []).append(run_released >= released)
        for share, column in zip(reports.ADOPTION_SHARES, ["weeks_to_25", "weeks_to_50", "weeks_to_75"]):
            reached = [week for week, newer in weeks.items() if sum(newer) / len(newer) >= share]
            got = summary.loc[version, column]
            assert (None if pd.isna(got) else int(got)) == (min(reached) if reached else None), (version, column)
    assert set(summary.released_by) == {"release date"}
    assert summary.weeks_to_50.notna().sum() >= 5  # the truth is not all empty

    totals = reports.totals(store, product="parsl").iloc[0]
    level3 = [m for m in parsl_messages if m.get("tracking_level") == 3]
    assert int(totals.level3_runs) == len(level3) + 1  # + bad-future
    assert int(totals.tasks) == 4 * len(level3) and int(totals.failures) == len(level3)
    assert totals.execution_hours == pytest.approx(60 * len(level3) / 3600)
    assert int(totals.projects) == 4
    assert int(totals.level3_unfinished) == 1
    assert reports.unfinished_runs(store, product="parsl").correlator.tolist() == ["bad-future"]
    store.close()


# -- reports while collecting ------------------------------------------------------------------

def fetch(url: str) -> str:
    import urllib.request

    with urllib.request.urlopen(url, timeout=120) as response:
        return response.read().decode()


def cli_report(name: str, *where: str, fmt: str = "csv", **env_extra: str) -> str:
    import os
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "taskscope.cli", "usage", "report", name, *where, "--format", fmt,
                           "--period", "month", "--since", "2025-01-01", "--until", "2026-10-01"],
                          capture_output=True, text=True, timeout=120, env={**os.environ, **env_extra})
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.slow
def test_reports_from_a_running_collector_equal_those_from_the_stopped_store(tmp_path):
    from test_usage_collector_ui import CollectorProcess

    releases_csv = tmp_path / "releases.csv"
    releases_csv.write_text("product,version,released\n" + "".join(
        f"mytool,{version},{date}\n" for version, date in MYTOOL_RELEASES.items()))
    parsl_messages, _ = history()
    tool_messages, _ = mytool_runs()
    datagrams = [protocol.encode(m) for m in parsl_messages + tool_messages] + invalid_runs()
    store = tmp_path / "usage.duckdb"
    import os

    os.environ[reports.RELEASES_VARIABLE] = str(releases_csv)  # the collector's dashboard reads it
    try:
        running = CollectorProcess(store)
    finally:
        del os.environ[reports.RELEASES_VARIABLE]
    try:
        import socket

        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for datagram in datagrams:
                sock.sendto(datagram, ("127.0.0.1", running.port))
                time.sleep(0.0002)
        runs = len({json.loads(d[1:])["correlator"] for d in datagrams if d.startswith(b"1{")})
        assert wait_until(lambda: running.json("/api/usage/totals.json")["rows"][0]["runs"] == runs, 60)
        window = "product=&period=month&since=2025-01-01&until=2026-10-01"
        live = {name: fetch(f"{running.url}/api/usage/{name}.csv?{window}") for name in reports.REPORTS}
        live_cli = {name: cli_report(name, "--from", running.url) for name in ("totals", "over-time", "runs")}
        live_cli_json = {name: cli_report(name, "--from", running.url, fmt="json") for name in reports.REPORTS}
        live_json = running.json("/api/usage/installation-age.json?product=mytool")["rows"]
    finally:
        stats = running.stop()
    assert stats["parsed"] == len(datagrams)
    table = reports.release_dates(releases_csv)
    with taskscope.open(store, read_only=True) as opened:
        stopped = {name: csv_text(reports.report(opened, name, period="month", since=reports.parse_since("2025-01-01"),
                                                 until=reports.parse_since("2026-10-01"), releases=table))
                   for name in reports.REPORTS}
        every_run = csv_text(reports.usage_runs(opened))  # the invalid runs are dated by arrival: after the window
    for name in reports.REPORTS:
        assert live[name] == stopped[name], name
    for name, text in live_cli.items():
        assert text == cli_report(name, "--store", str(store), "--releases", str(releases_csv)) == stopped[name]
    for name, text in live_cli_json.items():  # typed as the store's report: "3.10" stays "3.10", counts integers
        assert text == cli_report(name, "--store", str(store), "--releases", str(releases_csv), fmt="json"), name
    assert "3.10" in {row["python_version"] for row in json.loads(live_cli_json["python"])}
    assert all(isinstance(row["runs"], int) for row in json.loads(live_cli_json["python"]))
    # a run's lists (components, invalid fields) are JSON in their CSV cell, one line per run
    runs_rows = list(csv.DictReader(io.StringIO(live_cli["runs"])))
    assert len(runs_rows) == len(live_cli["runs"].splitlines()) - 1
    assert all(isinstance(json.loads(row["components"] or "[]"), list) for row in runs_rows)
    invalid = {row["correlator"]: json.loads(row["invalid"]) for row in csv.DictReader(io.StringIO(every_run))
               if row["invalid"] not in ("", "[]")}
    truth = {f"bad-{number}": (field, reason) for number, (_, field, reason) in enumerate(INVALID)}
    assert {correlator: (problems[0]["field"], problems[0]["reason"]) for correlator, problems in invalid.items()
            if correlator in truth} == truth
    assert len(stopped["over-time"].splitlines()) > 12  # months of history, not one month of arrival
    # the collector's dashboard read the release-date table the setting names, as --releases does
    assert sum(row["runs_first_seen"] for row in live_json) == 1
