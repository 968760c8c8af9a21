"""Figures a level-3 end message cannot truthfully carry, sent to a real collector on 127.0.0.1:
they are flagged invalid with a reason saying what is wrong, and kept out of every figure."""

from __future__ import annotations

import time

import pandas as pd
import pytest

from taskscope.usage import protocol, reports
from test_usage import collector, stop_and_open, wait_until  # noqa: F401 - the fixture

RELEASE = "2025.06.02"


def level3_run(correlator: str, start: int, end: int, **end_fields) -> list[bytes]:
    """A level-3 Parsl run's start and end datagrams; `end_fields` replace the end message's."""
    first = {"correlator": correlator, "parsl_v": RELEASE, "python_v": "3.12.2", "platform.system": "Linux",
             "tracking_level": 3, "start": start}
    last = {"correlator": correlator, "end": end, "execution_time": end - start,
            "components": [{"c": "parsl.dataflow.dflow.DataFlowKernel", "app_count": 4, "app_fails": 1}]}
    for field, value in end_fields.items():
        if field in ("app_count", "app_fails"):
            last["components"][0][field] = value
        else:
            last[field] = value
    return [protocol.encode(first), protocol.encode(last)]


def send(collector, datagrams: list[bytes]) -> None:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for datagram in datagrams:
            sock.sendto(datagram, collector.address)
    assert wait_until(lambda: collector.stats.parsed + collector.stats.rejected >= len(datagrams), 60)


@pytest.mark.parametrize("end_fields, field, reason", [
    ({"execution_time": 1e12}, "execution_time", "longer than from start to end"),
    ({"execution_time": 10 + 3600}, "execution_time", "longer than from start to end"),
    ({"app_count": 10**20}, "app_count", "out of range"),
    ({"app_count": 2**63}, "app_count", "out of range"),  # an unsigned 64-bit integer: not a BIGINT
    ({"app_fails": -(2**63) - 1}, "app_fails", "out of range"),
    ({"app_count": 3.5}, "app_count", "not an integer"),
])
def test_an_impossible_end_figure_is_flagged_with_what_is_wrong(collector, end_fields, field, reason):
    start = int(time.time()) - 600
    send(collector, level3_run("odd", start, start + 10, **end_fields))
    with stop_and_open(collector) as store:
        invalid = reports.invalid_fields(store)
        assert [(row.field, row.reason, row.runs) for row in invalid.itertuples()] == [(field, reason, 1)]
        [run] = reports.usage_runs(store).to_dict("records")
        column = {"execution_time": "execution_time", "app_count": "task_count", "app_fails": "failures"}[field]
        assert run["correlator"] == "odd" and pd.isna(run[column])
        hours = reports.totals(store).execution_hours.iloc[0]
        assert hours == (0 if field == "execution_time" else pytest.approx(10 / 3600))  # only what is true counts


def test_an_execution_time_within_its_span_and_the_longest_run_since_parsl_existed_are_kept(collector):
    end = int(time.time()) - 60
    lost_start = {"correlator": "no-start", "end": end, "execution_time": end - protocol_born() + 3 * 86400,
                  "components": [{"c": "parsl.dataflow.dflow.DataFlowKernel", "app_count": 1, "app_fails": 0}]}
    send(collector, level3_run("fine", end - 10, end, execution_time=10.4) + [protocol.encode(lost_start)])
    with stop_and_open(collector) as store:
        runs = {run["correlator"]: run for run in reports.usage_runs(store).to_dict("records")}
        assert runs["fine"]["execution_time"] == 10.4 and list(runs["fine"]["invalid"]) == []
        # no start message: a run cannot have lasted longer than since Parsl existed
        assert pd.isna(runs["no-start"]["execution_time"])
        assert [(p["field"], p["reason"]) for p in runs["no-start"]["invalid"]] == \
            [("execution_time", "longer than the product has existed")]


def protocol_born() -> int:
    from taskscope.usage.derivation import PARSL_BORN
    return int(PARSL_BORN)
