"""Schemathesis against the OpenAPI schemas of the fleet server and of the dashboard, each running
for real in its own process on 127.0.0.1 (`taskscope fleet serve` over a store with an account, a
token and a cluster; `taskscope ui` over a corpus run's store).

Every operation is called with up to `EXAMPLES` generated requests (derandomized, so a run is
repeatable): valid ones, valid ones aimed at data that exists (the real run, task or cluster ids
in place of generated ones) and, where there are parameters or a body, invalid ones; each reply must not be a 5xx, must have a status code the schema declares
and a body that conforms to the schema. Without a token (or with a wrong one) every call to an
account's data must be refused with 401 or 404, and another account's token never reads alice's
cluster.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from typing import Callable

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance

from test_fleet_server import REPO, FleetServer, dask_batch, make_token
from test_web import announced_url

pytestmark = pytest.mark.slow

#: generated requests per operation with a valid token, and per operation of each refusal pass
EXAMPLES, REFUSAL_EXAMPLES = 20, 8
CHECKS = [not_a_server_error, response_schema_conformance, status_code_conformance]

Expectation = Callable[[object, httpx.Response], bool]


def aimed_at(known: dict[str, str]):
    """A function that puts the `known` ids in place of a case's generated path and query values."""

    def aim(case):
        for location in ("path_parameters", "query"):
            values = getattr(case, location)
            if values is not None:
                values.update({name: known[name] for name in values if name in known})
        return case

    return aim


def fuzz(schema, base_url: str, headers: dict[str, str], known: dict[str, str],
         expect: Expectation | None = None, examples: int = EXAMPLES) -> tuple[dict[str, str], dict[str, set]]:
    """Call every operation of `schema` on `base_url` with up to `examples` generated requests
    (valid, valid aimed at the `known` ids, invalid), with the schema checks and `expect`: the
    failures by operation, and the status codes each operation answered."""
    # each reply is judged on its own: no time limit, no example database kept between runs
    fuzz_settings = settings(max_examples=examples, derandomize=True, deadline=None, database=None,
                             suppress_health_check=list(HealthCheck))
    failures: dict[str, str] = {}
    answered: dict[str, set] = {}
    for result in schema.get_all_operations():
        operation = result.ok()
        generated = operation.as_strategy()
        strategies = [generated, generated.map(aimed_at(known))]
        if operation.path_parameters or operation.query or operation.body:  # something to get wrong
            strategies.append(operation.as_strategy(generation_mode=GenerationMode.NEGATIVE))
        strategy = st.one_of(*strategies)

        @fuzz_settings
        @given(case=strategy)
        def call(case) -> None:
            reply = case.call_and_validate(base_url=base_url, headers=headers, checks=CHECKS, timeout=60)
            answered.setdefault(operation.label, set()).add(reply.status_code)
            assert expect is None or expect(case, reply), f"{reply.status_code} for {case.as_curl_command()}"

        try:
            call()
        except (Exception, BaseExceptionGroup) as exc:  # schemathesis groups what it found
            failures[operation.label] = str(exc)[:3000]
    return failures, answered


def refused(case, reply) -> bool:
    return reply.status_code in (401, 404)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    """A fleet server with alice (an admin of team-a, one cluster) and bob (team-b)."""
    store = tmp_path_factory.mktemp("fuzz-fleet") / "fleet.duckdb"
    tokens = {"alice": make_token(store, "team-a", "alice", "--admin"), "bob": make_token(store, "team-b", "bob")}
    server = FleetServer(store)
    cluster_id = uuid.uuid4().hex
    assert server.post(tokens["alice"], dask_batch(cluster_id, "alice")).status_code == 200
    yield server, tokens, cluster_id
    server.stop()


def test_fleet_api_holds_to_its_schema_and_never_fails(fleet):
    server, tokens, cluster_id = fleet
    schema = schemathesis.openapi.from_url(server.url + "/api/openapi.json")
    alice = {"Authorization": f"Bearer {tokens['alice']}"}
    failures, answered = fuzz(schema, server.url, alice, {"cluster_id": cluster_id})
    assert failures == {}
    # a generated batch or token to revoke is never a real one: those two are checked with real ones
    real_only = {"POST /api/v1/ingest", "POST /api/v1/tokens/revoke"}
    assert len(answered) == 12 and {op for op, codes in answered.items() if 200 in codes} == set(answered) - real_only
    ingest = schema.find_operation_by_label("POST /api/v1/ingest")
    for _ in range(2):  # stored, then a duplicate
        reply = ingest.Case(body=dask_batch(uuid.uuid4().hex, "alice"), media_type="application/json") \
            .call_and_validate(base_url=server.url, headers=alice, checks=CHECKS)
        assert reply.status_code == 200
    made = httpx.post(server.url + "/api/v1/tokens", json={"user": "carol"}, headers=alice, timeout=60).json()
    revoke = schema.find_operation_by_label("POST /api/v1/tokens/revoke")
    reply = revoke.Case(body={"token": made["token"]}, media_type="application/json") \
        .call_and_validate(base_url=server.url, headers=alice, checks=CHECKS)
    assert reply.json() == {"revoked": True}


def test_fleet_api_refuses_every_call_without_a_valid_token(fleet):
    server, tokens, cluster_id = fleet
    schema = schemathesis.openapi.from_url(server.url + "/api/openapi.json")
    known = {"cluster_id": cluster_id}
    for headers in ({}, {"Authorization": "Bearer tsf_" + uuid.uuid4().hex}):  # no token, an unknown one
        failures, answered = fuzz(schema, server.url, headers, known, expect=refused, examples=REFUSAL_EXAMPLES)
        assert failures == {} and set().union(*answered.values()) == {401}

    def never_alices(case, reply) -> bool:  # another account's token: alice's cluster is not found
        return reply.status_code != 200 or cluster_id not in reply.text

    bob = {"Authorization": f"Bearer {tokens['bob']}"}
    failures, answered = fuzz(schema, server.url, bob, known, expect=never_alices, examples=REFUSAL_EXAMPLES)
    assert failures == {} and 404 in answered["GET /api/v1/clusters/{cluster_id}"]


@pytest.fixture(scope="module")
def dashboard(corpus_store_file):
    """`taskscope ui` over a corpus run's store (read-only), in its own process."""
    process = subprocess.Popen([sys.executable, "-m", "taskscope.cli", "ui", "--store",
                                str(corpus_store_file("parsl-htex-jsonlog")), "--port", "0"],
                               env=dict(os.environ, PYTHONPATH=str(REPO / "src")),
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = announced_url(process, "taskscope dashboard on ")
    yield url
    process.terminate()
    process.wait(timeout=30)


def test_dashboard_api_and_pages_hold_to_their_schema_and_never_fail(dashboard):
    run_id = httpx.get(dashboard + "/api/runs", timeout=60).json()["runs"][0]["run_id"]
    task_id = httpx.get(f"{dashboard}/api/runs/{run_id}/tasks", timeout=60).json()["rows"][-1]["task_id"]
    schema = schemathesis.openapi.from_url(dashboard + "/api/openapi.json")
    known = {"run": run_id, "task_id": str(task_id), "a": run_id, "b": run_id, "name": "totals"}
    failures, answered = fuzz(schema, dashboard, {}, known)
    assert failures == {}
    assert len(answered) >= 20 and not [op for op, codes in answered.items() if 200 not in codes], answered
