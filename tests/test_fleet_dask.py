"""The fleet Dask plugin against a real `taskscope fleet serve` process.

Real clusters: a `LocalCluster` with worker processes and the plugin installed by `register()`,
and a `dask scheduler --preload taskscope.fleet.dask` subprocess with a `dask worker` subprocess.
Everything is read back through the server's Python API (`taskscope.fleet.api`) and HTTP API.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

pytest.importorskip("distributed")
import dask  # noqa: E402
import dask.bag  # noqa: E402
import httpx  # noqa: E402
from distributed import Client, LocalCluster, get_worker, span  # noqa: E402
from distributed.scheduler import key_split_group  # noqa: E402

from conftest import REPO, run_cli  # noqa: E402
from taskscope.fleet import api, profiles, protocol  # noqa: E402
from taskscope.fleet.dask import PLUGIN_NAME, prune_profile, register  # noqa: E402
from taskscope.fleet.sender import TRUNCATION_MARK, Sender  # noqa: E402

pytestmark = pytest.mark.timeout(300)

FAST = {"interval": 0.5, "retry_max": 0.5}
#: the close-timeout of schedulers whose last batch a test reads (it returns once delivered)
PATIENT_CLOSE = "120s"
ALLOWED_TOPIC = "scores"
FORBIDDEN_TOPIC = "private-notes"
#: a package the scheduler's environment lacks but the `dask worker` subprocess's has (metadata only)
ODD_PACKAGE, ODD_VERSION = "lz4", "0.0.1"


@contextmanager
def registered_cluster(server, spool: Path, processes: bool = True) -> Iterator[tuple[Client, str]]:
    """A one-worker LocalCluster whose plugin sends to `server`: its client and scheduler id."""
    with LocalCluster(processes=processes, n_workers=1, threads_per_worker=1, dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        register(client, server=server.url, token=server.token, spool_directory=str(spool), **FAST)
        yield client, client.scheduler_info()["id"]


# ---- a real server ---------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cli(*args: str) -> str:
    done = run_cli(*args, env=_env(), timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def _env(**extra: str) -> dict[str, str]:
    # tests/ too: a `dask worker` subprocess unpickles this module's workload functions by reference
    path = os.pathsep.join([str(REPO / "src"), str(REPO / "tests"), os.environ.get("PYTHONPATH", "")])
    bin_dir = os.path.dirname(sys.executable)
    return {**os.environ, "PYTHONPATH": path, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
            "DASK_TASKSCOPE__FLEET__CLOSE_TIMEOUT": PATIENT_CLOSE, **extra}


class FleetServer:
    """A `taskscope fleet serve` subprocess on loopback, with one account and one token."""

    def __init__(self, store: Path, port: int | None = None):
        self.store, self.port = store, port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cli("fleet", "account", "create", "team", "--store", str(store))
        self.token = cli("fleet", "token", "create", "--account", "team", "--user", "alice", "--store", str(store))
        self.process: subprocess.Popen | None = None

    def start(self) -> FleetServer:
        self.process = subprocess.Popen([sys.executable, "-m", "taskscope.cli", "fleet", "serve", "--store",
                                         str(self.store), "--port", str(self.port)], env=_env(),
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"fleet serve exited: {self.process.stderr.read().decode()}")
            try:
                if httpx.get(self.url + "/api/v1/whoami", headers=self.headers, timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        pytest.fail("fleet serve did not answer")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=30)
            self.process = None

    @property
    def headers(self) -> dict:
        return {"Authorization": f"Bearer {self.token}"}

    def get(self, path: str) -> dict:
        reply = httpx.get(self.url + path, headers=self.headers, timeout=30)
        assert reply.status_code == 200, reply.text
        return reply.json()

    def cluster_named(self, scheduler_id: str) -> dict | None:
        found = [c for c in api.list_clusters(since=None, server=self.url, token=self.token) if c["name"] == scheduler_id]
        assert len(found) <= 1, found
        return found[0] if found else None


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    running = FleetServer(tmp_path_factory.mktemp("fleet") / "fleet.duckdb").start()
    yield running
    running.stop()


def wait_long_for_the_last_batch(monkeypatch) -> None:
    """The scheduler's shutdown waits up to 120 s for its last batch (not 5 s): under load the last
    POST can take longer, and the tests read what it delivered. It returns once delivered."""
    monkeypatch.setitem(dask.config.config["taskscope"]["fleet"], "close-timeout", PATIENT_CLOSE)


@pytest.fixture
def patient_close(monkeypatch) -> None:
    wait_long_for_the_last_batch(monkeypatch)


# ---- the workload, the same on both kinds of cluster -----------------------------------------
def fails_on_three(x):
    if x == 3:
        raise ValueError(f"boom on {x}")
    return x


def always_fails(x):
    raise ValueError(f"always fails on {x}")


def log_two_events(x):
    get_worker().log_event(ALLOWED_TOPIC, {"score": x})
    get_worker().log_event(FORBIDDEN_TOPIC, {"secret": x})
    return x


def graph_groups(collection) -> Counter:
    """Tasks per task group of `collection` as the scheduler receives it (optimised, as compute does)."""
    (optimized,) = dask.optimize(collection)
    return Counter(key_split_group(key) for key in dict(optimized.__dask_graph__()))


def run_workload(client: Client) -> tuple[Counter, Counter]:
    """Several computations (one in a span, one failing), two worker events, an idle pause.

    Returns the tasks per group of the successful bag computations and of the failing one.
    """
    total = dask.bag.from_sequence(range(100), npartitions=8).map(lambda x: x + 1).sum()
    assert total.compute() == 5050
    with span("etl"):
        doubled = dask.bag.from_sequence(range(40), npartitions=4).map(lambda x: x * 2)
        assert sum(doubled.compute()) == 1560
    time.sleep(1.5)  # idle: longer than three plugin intervals
    failing = dask.bag.from_sequence(range(8), npartitions=8).map(fails_on_three)
    with pytest.raises(ValueError, match="boom on 3"):
        failing.compute()
    assert client.submit(log_two_events, 7).result() == 7
    time.sleep(1.0)
    return graph_groups(total) + graph_groups(doubled), graph_groups(failing)


def check_group_outcomes(computations: list[dict], succeeded: Counter, failed: Counter) -> None:
    """Each group's states say how its tasks ended: all in memory, or (the failing one) some erred."""
    groups = [group for computation in computations for group in computation["groups"]]
    assert all(group["n_tasks"] == sum(group["states"].values()) for group in groups), groups
    by_name = {group["name"]: group for group in groups}
    assert set(succeeded) | set(failed) <= set(by_name), (sorted(by_name), succeeded, failed)
    for name, n_tasks in (succeeded + failed).items():
        assert by_name[name]["n_tasks"] == n_tasks, by_name[name]
    for computation in computations:
        if {group["name"] for group in computation["groups"]} & set(failed):
            assert sum(group["states"].get("erred", 0) for group in computation["groups"]) >= 1, computation
            assert all(set(group["states"]) <= {"memory", "erred", "released"} for group in computation["groups"])
        else:  # finished without error: every task of every group reached memory
            assert all(group["states"] == {"memory": group["n_tasks"]} for group in computation["groups"]), computation
    assert all(by_name[name]["states"] == {"memory": n_tasks} for name, n_tasks in succeeded.items())
    assert any(by_name[name]["states"].get("erred", 0) >= 1 for name in failed), [by_name[name] for name in failed]


def check_everything_arrived(server: FleetServer, scheduler_id: str, code_file: str,
                             workload: tuple[Counter, Counter]) -> dict:
    """Every kind of record of the workload is on the server; returns the cluster row."""
    cluster = server.cluster_named(scheduler_id)
    assert cluster is not None, "the cluster never reached the server"
    assert cluster["stopped"] is not None and cluster["stopped"] >= cluster["started"]
    assert cluster["cost"] > 0 and cluster["core_seconds"] > 0
    detail = server.get(f"/api/v1/clusters/{cluster['cluster_id']}")
    assert detail["versions"]["distributed"] and detail["versions"]["dask"] == dask.__version__
    assert detail["config"]["code.transmit"] is True and detail["config"]["profile.transmit"] is False

    workers = server.get(f"/api/v1/clusters/{cluster['cluster_id']}/workers")
    assert max(sample["n_workers"] for sample in workers["samples"]) == 2
    assert all(sample["memory_total"] >= 0 for sample in workers["samples"])
    assert any(sample["memory_used"] > 0 for sample in workers["samples"])
    added = [change for change in workers["changes"] if change["change"] == "add"]
    assert len(added) == 2 and all(change["versions"]["distributed"] for change in added)
    closed = [interval for interval in workers["idle"] if interval["stop"] is not None]
    assert any(interval["stop"] - interval["start"] >= 0.5 for interval in closed), workers["idle"]

    computations = api.list_computations(cluster["cluster_id"], server=server.url, token=server.token)
    assert len(computations) >= 4
    groups = [group for computation in computations for group in computation["groups"]]
    assert any(group["compute_s"] > 0 for group in groups)
    assert any(group["dependencies"] for group in groups)
    check_group_outcomes(computations, *workload)
    assert cluster["tasks"] == sum(group["n_tasks"] for group in groups)
    assert cluster["tasks_failed"] == sum(group["states"].get("erred", 0) for group in groups) >= 1
    ours = [frame for c in computations for frame in c["code"] if frame["filename"] == code_file]
    source = Path(code_file).read_text().splitlines()
    assert ours and all(frame["code"].splitlines()[frame["code_lineno"] - 1] == source[frame["lineno"] - 1]
                        for frame in ours)  # the line the page marks is the line that called compute
    assert any(c["span_name"] == ["etl"] for c in computations)

    exceptions = api.list_exceptions(since=None, cluster_id=cluster["cluster_id"], server=server.url, token=server.token)
    assert [e["exception_text"] for e in exceptions] == ["ValueError('boom on 3')"]
    assert "fails_on_three" in exceptions[0]["traceback_text"]
    [owner] = [c for c in computations if c["computation_id"] == exceptions[0]["computation_id"]]
    assert exceptions[0]["task_group"] in [group["name"] for group in owner["groups"]]

    events = api.list_events(cluster["cluster_id"], server=server.url, token=server.token)
    assert [e["msg"]["score"] for e in events if e["topic"] == ALLOWED_TOPIC] == [7]
    assert not [e for e in events if e["topic"] == FORBIDDEN_TOPIC or "secret" in json.dumps(e["msg"])]
    return cluster


# ---- register() on a LocalCluster with worker processes --------------------------------------
@pytest.mark.usefixtures("patient_close")
def test_register_sends_everything_from_a_local_cluster(server, tmp_path):
    with LocalCluster(processes=True, n_workers=2, threads_per_worker=1, dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        assert register(client, server=server.url, token=server.token, spool_directory=str(tmp_path),
                        events_allow=[ALLOWED_TOPIC], **FAST) == PLUGIN_NAME
        # a second registration keeps the first plugin: one cluster on the server, started once
        assert register(client, server=server.url, token=server.token, spool_directory=str(tmp_path), **FAST)
        scheduler_id = client.scheduler_info()["id"]
        workload = run_workload(client)
    check_everything_arrived(server, scheduler_id, code_file=__file__, workload=workload)
    assert not list(tmp_path.rglob("*.jsonl")), "delivered batches must leave the spool"


# ---- dask scheduler --preload taskscope.fleet.dask + dask worker subprocesses -----------------
@pytest.fixture
def odd_environment(tmp_path) -> Path:
    """A folder that, on a worker's PYTHONPATH, makes it report another version of a package."""
    folder = tmp_path / "odd-site"
    info = folder / f"{ODD_PACKAGE}-{ODD_VERSION}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {ODD_PACKAGE}\nVersion: {ODD_VERSION}\n")
    return folder


def test_preload_scheduler_sends_everything_and_flags_version_mismatch(server, tmp_path, odd_environment):
    port = free_port()
    config = {"DASK_TASKSCOPE__FLEET__INTERVAL": "0.5s",
              "DASK_TASKSCOPE__FLEET__EVENTS__ALLOW": json.dumps([ALLOWED_TOPIC]),
              "DASK_TASKSCOPE__FLEET__SPOOL__DIRECTORY": str(tmp_path / "spool")}
    scheduler = subprocess.Popen(
        ["dask", "scheduler", "--host", "127.0.0.1", "--port", str(port), "--dashboard-address", ":0",
         "--preload", "taskscope.fleet.dask", "--fleet-server", server.url, "--fleet-token", server.token],
        env=_env(**config), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    workers = []
    try:
        for name, extra_path in [("plain", None), ("odd", odd_environment)]:
            env = _env() if extra_path is None else _env(PYTHONPATH=os.pathsep.join([str(extra_path), str(REPO / "src"), str(REPO / "tests")]))
            workers.append(subprocess.Popen(
                ["dask", "worker", f"tcp://127.0.0.1:{port}", "--nthreads", "1", "--name", name, "--no-dashboard"],
                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        with dask.config.set({"distributed.diagnostics.computations.nframes": 2}), \
                Client(f"tcp://127.0.0.1:{port}", timeout=60) as client:
            client.wait_for_workers(2, timeout=120)
            scheduler_id = client.scheduler_info()["id"]
            assert PLUGIN_NAME in client.run_on_scheduler(lambda dask_scheduler: list(dask_scheduler.plugins))
            workload = run_workload(client)
            client.shutdown()
        assert scheduler.wait(timeout=60) == 0, scheduler.stderr.read().decode()[-3000:]
    finally:
        for process in [*workers, scheduler]:
            if process.poll() is None:
                process.kill()
                process.wait()
    cluster = check_everything_arrived(server, scheduler_id, code_file=__file__, workload=workload)
    mismatches = server.get(f"/api/v1/clusters/{cluster['cluster_id']}/workers")["version_mismatches"]
    assert [(m["package"], sorted(v for v in m["versions"].values() if v)) for m in mismatches] == \
        [(ODD_PACKAGE, [ODD_VERSION])]


# ---- privacy settings ---------------------------------------------------------------------------
def test_close_timeout_is_a_setting_read_from_dask_config_and_register(monkeypatch):
    from taskscope.fleet.settings import FleetSettings
    assert FleetSettings.from_config().close_timeout == 5.0
    monkeypatch.setitem(dask.config.config["taskscope"]["fleet"], "close-timeout", "2 minutes")
    assert FleetSettings.from_config().close_timeout == 120.0
    assert FleetSettings.from_config(close_timeout=30).close_timeout == 30.0


@pytest.mark.parametrize("price", [-1, 2e6, float("inf"), "cheap"])
def test_a_price_the_server_would_refuse_is_refused_where_it_is_set(price):
    """The server refuses every batch of a cluster priced outside 0..1e6: the plugin says so at once."""
    from taskscope.fleet.settings import FleetSettings
    with pytest.raises(ValueError, match="price-per-core-hour must be a number from 0 to 1e\\+06"):
        FleetSettings.from_config(price_per_core_hour=price)
    assert FleetSettings.from_config(price_per_core_hour=1e6).price_per_core_hour == 1e6


def test_disabled_sends_nothing(server, tmp_path):
    with LocalCluster(processes=True, n_workers=1, threads_per_worker=1, dashboard_address=":0") as cluster, \
            Client(cluster) as client, dask.config.set({"taskscope.fleet.disabled": True}):
        assert register(client, server=server.url, token=server.token, spool_directory=str(tmp_path), **FAST) is None
        assert PLUGIN_NAME not in client.run_on_scheduler(lambda dask_scheduler: list(dask_scheduler.plugins))
        scheduler_id = client.scheduler_info()["id"]
        assert dask.bag.from_sequence(range(10), npartitions=2).sum().compute() == 45
    assert server.cluster_named(scheduler_id) is None
    assert not list(tmp_path.rglob("*.jsonl"))


@pytest.mark.usefixtures("patient_close")
def test_code_transmit_false_sends_no_code(server, tmp_path):
    with dask.config.set({"taskscope.fleet.code.transmit": False,
                          "distributed.diagnostics.computations.nframes": 2}), \
            registered_cluster(server, tmp_path) as (client, scheduler_id):  # the client captures code
        assert dask.bag.from_sequence(range(10), npartitions=2).sum().compute() == 45
        assert client.run_on_scheduler(lambda dask_scheduler: any(c.code for c in dask_scheduler.computations))
    cluster = server.cluster_named(scheduler_id)
    assert server.get(f"/api/v1/clusters/{cluster['cluster_id']}")["config"]["code.transmit"] is False
    computations = api.list_computations(cluster["cluster_id"], server=server.url, token=server.token)
    assert computations and all(c["code"] == [] for c in computations)


# ---- a computation whose tasks all failed ----------------------------------------------------------
@pytest.mark.usefixtures("patient_close")
def test_a_computation_whose_tasks_all_failed_gets_a_stop(server, tmp_path):
    with registered_cluster(server, tmp_path) as (client, scheduler_id):
        with pytest.raises(ValueError, match="always fails on 1"):
            client.submit(always_fails, 1).result()
    cluster = server.cluster_named(scheduler_id)
    computations = api.list_computations(cluster["cluster_id"], server=server.url, token=server.token)
    [exception] = api.list_exceptions(since=None, cluster_id=cluster["cluster_id"], server=server.url,
                                      token=server.token)
    [failed] = [c for c in computations if c["computation_id"] == exception["computation_id"]]
    assert [group["states"] for group in failed["groups"]] == [{"erred": 1}]
    # Dask gives such a computation no stop: the plugin takes the failure's time
    assert failed["stop"] is not None and failed["start"] <= failed["stop"] <= cluster["stopped"]
    assert all(c["stop"] is not None for c in computations)  # the cluster stopped: nothing is running


def test_a_deep_profile_is_cut_to_the_nesting_the_server_accepts(server, tmp_path):
    tree = {"count": 1, "children": {}, "identifier": "leaf", "description": {"line": "return f(n - 1)"}}
    for frame in range(300):  # deep recursion in a task: 600 levels of nesting
        tree = {"count": 1, "children": {f"f{frame}": tree}, "identifier": f"f{frame}", "description": {}}
    now = time.time()
    cluster = {"cluster_id": uuid.uuid4().hex, "kind": "dask", "name": "deep-profile", "user": "alice"}
    sender = Sender(server.url, server.token, cluster, spool_dir=tmp_path)
    sender.submit([{"kind": "profile", "ts": now, "start": now - 60, "stop": now,
                    "data": prune_profile(tree, 10_000_000)}])
    assert sender.close(timeout=60)
    assert (sender.stats.batches_sent, sender.stats.batches_rejected) == (1, 0)


# ---- the server is down: spool, then deliver everything once ---------------------------------
def spooled_messages(spool: Path) -> list[dict]:
    batches: dict[str, dict] = {}
    for path in spool.rglob("*.jsonl"):
        for line in path.read_text().splitlines():
            record = json.loads(line)
            if "batch" in record:
                batches[record["batch"]["batch_id"]] = record["batch"]
            else:
                batches.pop(record["sent"], None)
    return [message for batch in batches.values() for message in batch["messages"]]


def test_server_down_spools_then_a_later_process_delivers_everything_once(tmp_path, monkeypatch):
    down = FleetServer(tmp_path / "fleet.duckdb")  # token made, server not started yet
    spool = tmp_path / "spool"
    with LocalCluster(processes=True, n_workers=2, threads_per_worker=1, dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        register(client, server=down.url, token=down.token, spool_directory=str(spool),
                 events_allow=[ALLOWED_TOPIC], **FAST)
        first_id = client.scheduler_info()["id"]
        workload = run_workload(client)
    waiting = spooled_messages(spool)
    kinds = {message["kind"] for message in waiting}
    assert {"cluster.start", "cluster.stop", "workers", "computation", "exception", "event", "idle"} <= kinds

    # only now: with the server down, the first shutdown would wait out the whole timeout
    wait_long_for_the_last_batch(monkeypatch)
    down.start()
    try:
        # a later scheduler with the same server and token adopts the spool and sends it first
        with LocalCluster(processes=True, n_workers=1, threads_per_worker=1, dashboard_address=":0") as cluster, \
                Client(cluster) as client:
            register(client, server=down.url, token=down.token, spool_directory=str(spool), **FAST)
        cluster = check_everything_arrived(down, first_id, code_file=__file__, workload=workload)
        workers = down.get(f"/api/v1/clusters/{cluster['cluster_id']}/workers")
        assert len(workers["samples"]) == sum(1 for m in waiting if m["kind"] == "workers")  # nothing twice
        exceptions = api.list_exceptions(since=None, server=down.url, token=down.token)
        assert len(exceptions) == sum(1 for m in waiting if m["kind"] == "exception") == 1
        assert spooled_messages(spool) == [] and not list(spool.rglob("*.jsonl"))
    finally:
        down.stop()


# ---- the sender alone: bounded payloads, resend in the same process ----------------------------
def test_sender_cuts_big_messages_and_splits_batches_under_the_limits(server, tmp_path):
    cluster = {"cluster_id": uuid.uuid4().hex, "kind": "dask", "name": "bounds", "user": "alice"}
    now = time.time()
    sender = Sender(server.url, server.token, cluster, spool_dir=tmp_path)
    events = [{"kind": "event", "ts": now, "topic": ALLOWED_TOPIC, "msg": {"n": n, "blob": "x" * 200_000}}
              for n in range(30)]  # 6 MB in all: more than one batch
    huge = {"kind": "exception", "ts": now, "key": "k", "task_group": "g", "exception_text": "ValueError()",
            "traceback_text": "y" * (2 * protocol.MAX_MESSAGE_BYTES)}
    sender.submit([{"kind": "cluster.start", "ts": now}, huge, *events])
    assert sender.close(timeout=60)
    assert sender.stats.batches_sent >= 2 and sender.stats.messages_truncated == 1
    assert sender.stats.messages_sent == 32 and sender.stats.batches_rejected == 0

    received = api.list_events(cluster["cluster_id"], server=server.url, token=server.token)
    assert sorted(event["msg"]["n"] for event in received) == list(range(30))
    [exception] = api.list_exceptions(since=None, cluster_id=cluster["cluster_id"], server=server.url, token=server.token)
    assert exception["traceback_text"].endswith(TRUNCATION_MARK)
    assert len(exception["traceback_text"]) < protocol.MAX_MESSAGE_BYTES


def test_sender_resends_once_the_server_is_back(server, tmp_path):
    known = {c["cluster_id"] for c in api.list_clusters(since=None, server=server.url, token=server.token)}
    server.stop()
    try:
        cluster = {"cluster_id": uuid.uuid4().hex, "kind": "dask", "name": "patient", "user": "alice"}
        sender = Sender(server.url, server.token, cluster, spool_dir=tmp_path, retry_max_s=0.2)
        sender.submit([{"kind": "cluster.start", "ts": time.time()}, {"kind": "cluster.stop", "ts": time.time()}])
        assert not sender.flush(timeout=5)  # refused: kept in the spool
        assert sender.stats.send_failures >= 1 and sender.stats.batches_sent == 0
    finally:
        server.start()
    assert sender.close(timeout=30) and sender.stats.batches_sent == 1
    assert server.cluster_named("patient")["stopped"] is not None
    # the restarted server kept everything it had acknowledged
    assert known < {c["cluster_id"] for c in api.list_clusters(since=None, server=server.url, token=server.token)}


# ---- who a cluster belongs to ------------------------------------------------------------------
@pytest.mark.usefixtures("patient_close")
def test_a_cluster_is_its_tokens_user_whatever_user_the_client_claims(server, tmp_path):
    with LocalCluster(processes=True, n_workers=1, threads_per_worker=1, dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        register(client, server=server.url, token=server.token, user="mallory", spool_directory=str(tmp_path), **FAST)
        scheduler_id = client.scheduler_info()["id"]
        assert dask.bag.from_sequence(range(10), npartitions=2).sum().compute() == 45
    found = server.cluster_named(scheduler_id)
    assert (found["user_name"], found["claimed_user"]) == ("alice", "mallory")
    mine = api.list_clusters(since=None, user="alice", server=server.url, token=server.token)
    assert found["cluster_id"] in [c["cluster_id"] for c in mine]
    assert api.list_clusters(since=None, user="mallory", server=server.url, token=server.token) == []
    team = httpx.get(server.url + "/?since=", headers=server.headers, timeout=30)
    assert team.status_code == 200 and ">alice<" in team.text and "mallory" not in team.text
    page = httpx.get(server.url + f"/clusters/{found['cluster_id']}", headers=server.headers, timeout=30).text
    assert "alice" in page and "sender says mallory" in page


# ---- a scheduler that dies without a word ------------------------------------------------------
def wait_for(found, what: str, attempts: int = 600):
    """Poll `found()` until it returns something true (at most about two minutes)."""
    for _ in range(attempts):
        value = found()
        if value:
            return value
        time.sleep(0.2)
    pytest.fail(f"never saw {what}")


def cluster_state(server: FleetServer, cluster_id: str) -> dict:
    return server.get(f"/api/v1/clusters/{cluster_id}")


@pytest.mark.usefixtures("patient_close")
def test_a_killed_scheduler_is_lost_and_a_stopped_one_never_is(server, tmp_path):
    with LocalCluster(processes=False, n_workers=1, threads_per_worker=1, dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        register(client, server=server.url, token=server.token, spool_directory=str(tmp_path / "a"), **FAST)
        scheduler_id = client.scheduler_info()["id"]
    stopped = server.cluster_named(scheduler_id)
    interval = 2.0
    port = free_port()
    scheduler = subprocess.Popen(
        ["dask", "scheduler", "--host", "127.0.0.1", "--port", str(port), "--dashboard-address", ":0",
         "--preload", "taskscope.fleet.dask", "--fleet-server", server.url, "--fleet-token", server.token],
        env=_env(DASK_TASKSCOPE__FLEET__INTERVAL=f"{interval}s",
                 DASK_TASKSCOPE__FLEET__SPOOL__DIRECTORY=str(tmp_path / "b")),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    worker = subprocess.Popen(["dask", "worker", f"tcp://127.0.0.1:{port}", "--nthreads", "1", "--no-dashboard"],
                              env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        client = Client(f"tcp://127.0.0.1:{port}", timeout=60)
        client.wait_for_workers(1, timeout=120)
        killed_name = client.scheduler_info()["id"]
        sleeping = client.submit(time.sleep, 600)  # still processing when the scheduler dies
        killed = wait_for(lambda: server.cluster_named(killed_name), "the cluster on the server")
        wait_for(lambda: [c for c in api.list_computations(killed["cluster_id"], server=server.url, token=server.token)
                          if c["state"] == "running" and c["groups"]], "a running computation")
        assert cluster_state(server, killed["cluster_id"])["state"] == "running"
        scheduler.kill()
        killed_at = time.time()
        scheduler.wait()
    finally:
        for process in (worker, scheduler):
            if process.poll() is None:
                process.kill()
                process.wait()
    del sleeping
    client.close(timeout=5)
    # nothing can have arrived after the kill: four intervals later the silence is longer than three
    time.sleep(max(0.0, killed_at + 4 * interval - time.time()))
    lost = cluster_state(server, killed["cluster_id"])
    assert lost["state"] == "lost" and lost["stopped"] is None and lost["last_seen"] <= killed_at
    assert lost["duration_s"] == pytest.approx(lost["last_seen"] - lost["started"])
    computations = api.list_computations(killed["cluster_id"], server=server.url, token=server.token)
    assert [c["state"] for c in computations if c["stop"] is None] == ["interrupted"]
    page = httpx.get(server.url + f"/clusters/{killed['cluster_id']}", headers=server.headers, timeout=30).text
    assert "lost" in page and "last seen" in page and "interrupted" in page
    time.sleep(interval)
    assert cluster_state(server, killed["cluster_id"])["cost"] == lost["cost"]  # cost stopped at the last sample
    assert cluster_state(server, stopped["cluster_id"])["state"] == "stopped"  # long silent, but it said stop

    # a later message brings it back
    sender = Sender(server.url, server.token, {"cluster_id": killed["cluster_id"], "kind": "dask"}, spool_dir=tmp_path)
    sender.submit([{"kind": "workers", "ts": time.time(), "n_workers": 1, "n_threads": 1}])
    assert sender.close(timeout=60)
    back = cluster_state(server, killed["cluster_id"])
    assert back["state"] == "running" and back["last_seen"] > lost["last_seen"]


# ---- errors the scheduler raises itself ----------------------------------------------------------
def kills_its_worker(x):
    os._exit(1)


@pytest.mark.usefixtures("patient_close")
def test_a_killed_worker_keeps_its_text_worker_and_allowed_failures(server, tmp_path):
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}), \
            registered_cluster(server, tmp_path) as (client, scheduler_id):
        [worker] = client.scheduler_info()["workers"]
        with pytest.raises(Exception, match="KilledWorker|workers died") as raised:
            client.submit(kills_its_worker, 1, key="dies-1").result()
        assert type(raised.value).__name__ == "KilledWorker"
    cluster = server.cluster_named(scheduler_id)
    [exception] = api.list_exceptions(since=None, cluster_id=cluster["cluster_id"], server=server.url,
                                      token=server.token)
    assert exception["key"] == "dies-1" and exception["exception_text"].startswith("KilledWorker('dies-1'")
    assert worker in exception["exception_text"]
    assert (exception["worker"], exception["allowed_failures"]) == (worker, 0)
    page = httpx.get(server.url + f"/clusters/{cluster['cluster_id']}", headers=server.headers, timeout=30).text
    assert "KilledWorker(&#39;dies-1&#39;" in page and "allows 0 such failures" in page


# ---- profiles ---------------------------------------------------------------------------------------
def burn(seconds: float) -> int:
    """A task spending its time in its own loop (the line the profile should point at)."""
    end, total = time.time() + seconds, 0
    while time.time() < end:
        for i in range(1000):
            total += i * i % 7
    return total


@pytest.mark.usefixtures("patient_close")
def test_a_profiled_computation_shows_its_hottest_function_with_file_and_line(server, tmp_path):
    with LocalCluster(processes=True, n_workers=1, threads_per_worker=1, dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        register(client, server=server.url, token=server.token, spool_directory=str(tmp_path), profile_transmit=True,
                 **FAST)
        scheduler_id = client.scheduler_info()["id"]
        assert all(client.gather(client.map(burn, [1.0, 1.0, 1.0])))
        time.sleep(3 * FAST["interval"] + 1.5)  # its profile is asked for once the workers filed the samples
        expected = profiles.hottest(profiles.flat_nodes(client.profile()))[0]  # the scheduler's own, whole run
    cluster = server.cluster_named(scheduler_id)
    [computation] = [c for c in api.list_computations(cluster["cluster_id"], server=server.url, token=server.token)
                     if any(group["prefix"] == "burn" for group in c["groups"])]
    tree = server.get(f"/api/v1/clusters/{cluster['cluster_id']}/profile?computation_id={computation['computation_id']}")
    assert tree["profiles"] == 1 and tree["nodes"][0]["count"] > 0
    hottest = tree["hottest"][0]
    assert (hottest["function"], hottest["where"]) == (expected["function"], expected["where"])
    assert hottest["where"] == f"{hottest['filename']}:{hottest['line_number']}" and hottest["line_number"] > 0
    assert api.list_profiles(cluster["cluster_id"], computation["computation_id"], server=server.url,
                             token=server.token) == tree["nodes"]
    page = httpx.get(server.url + f"/clusters/{cluster['cluster_id']}/profile",
                     params={"computation_id": computation["computation_id"]}, headers=server.headers, timeout=30).text
    first_row = page.split('id="hottest"')[1].split("</tr>")[1]
    assert f'<td class="function">{hottest["function"]}</td>' in first_row
    assert f'<td class="where">{hottest["where"]}</td>' in first_row
    cluster_page = httpx.get(server.url + f"/clusters/{cluster['cluster_id']}", headers=server.headers, timeout=30).text
    assert f"/profile?computation_id={computation['computation_id']}" in cluster_page


# ---- a computation of results already in memory ----------------------------------------------------
def inc(x: int) -> int:
    return x + 1


@pytest.mark.usefixtures("patient_close")
def test_a_computation_of_results_already_in_memory_is_finished_when_it_starts(server, tmp_path):
    with registered_cluster(server, tmp_path, processes=False) as (client, scheduler_id):
        x = dask.delayed(inc, pure=True)(1)
        first = client.compute(x)
        assert first.result() == 2
        # once nothing is left to compute, a graph gets a computation of its own: with its key in
        # memory, Dask keeps that computation with no groups (and no stop)
        wait_for(lambda: client.run_on_scheduler(lambda dask_scheduler: dask_scheduler.is_idle), "an idle scheduler")
        assert client.compute(x).result() == 2
        # (its graph travels on the batched stream: the scheduler may not have it yet)
        wait_for(lambda: 0 in client.run_on_scheduler(
            lambda dask_scheduler: [len(c.groups) for c in dask_scheduler.computations]), "a computation without groups")
    found = server.cluster_named(scheduler_id)
    computations = api.list_computations(found["cluster_id"], server=server.url, token=server.token)
    [cached] = [c for c in computations if not c["groups"]]
    assert (cached["state"], cached["stop"], cached["duration_s"]) == ("finished", cached["start"], 0)
    assert all(c["state"] == "finished" for c in computations)


# ---- shutdown waits at most close-timeout ---------------------------------------------------------
def test_close_waits_at_most_its_timeout_for_a_server_that_never_answers(tmp_path):
    """A server that accepts connections but never answers: the send hangs (its own HTTP timeout is
    far longer), and close() must return after its one wait of `timeout`. Before, it waited the
    timeout in flush and again for the sender's thread: 2 x 3 s at least, never less. The bound
    below leaves 2.5 s for a loaded machine on top of the 3 s wait, and stays under the 6 s floor."""
    timeout = 3.0
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # connections complete in the backlog; nothing ever accepts or answers them
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        sender = Sender(url, "tok", {"cluster_id": uuid.uuid4().hex, "kind": "dask"}, spool_dir=tmp_path,
                        timeout=600.0)
        sender.submit([{"kind": "cluster.stop", "ts": time.time()}])
        began = time.monotonic()
        assert sender.close(timeout=timeout) is False
        waited = time.monotonic() - began
    assert waited < 2 * timeout - 0.5, waited
    assert [m["kind"] for m in spooled_messages(tmp_path)] == ["cluster.stop"]  # kept for a later process


#: the docs' example as a whole script that ends without closing its cluster: Dask closes it at exit
SCRIPT_LEAVING_ITS_CLUSTER_OPEN = """
import sys

from distributed import Client, LocalCluster

from taskscope.fleet.dask import register

if __name__ == "__main__":
    server, token, spool = sys.argv[1:]
    client = Client(LocalCluster(n_workers=1, threads_per_worker=1, dashboard_address=":0"))
    register(client, server=server, token=token, spool_directory=spool)
    print(client.submit(sum, [1, 2]).result(), client.scheduler_info()["id"])
"""


def test_a_cluster_left_open_at_exit_is_stopped_without_an_error(server, tmp_path):
    """Dask closes a cluster left open from its ``atexit`` hook, when asyncio's executor takes no new
    work: the plugin closed its sender through it and logged "Plugin call failed during
    scheduler.close" with a traceback. Now it says nothing and the server still hears the stop."""
    script = tmp_path / "left_open.py"
    script.write_text(SCRIPT_LEAVING_ITS_CLUSTER_OPEN)
    done = subprocess.run([sys.executable, str(script), server.url, server.token, str(tmp_path / "spool")],
                          env=_env(), cwd=tmp_path, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr
    assert "ERROR" not in done.stderr and "Traceback" not in done.stderr, done.stderr
    result, scheduler_id = done.stdout.split()
    assert result == "3"
    assert server.cluster_named(scheduler_id)["state"] == "stopped"


# ---- a server that is not a URL is refused at once --------------------------------------------------
@pytest.mark.parametrize("server, reason", [
    ("http://[::1", "is not a URL"), ("not-a-url", "is not an http:// or https:// URL"),
    ("ftp://fleet.example.org", "is not an http:// or https:// URL"), ("http://", "names no host"),
    ("http://fleet.example.org:99999", "is not a URL"),
])
def test_register_refuses_a_server_that_is_not_an_http_url(tmp_path, server, reason):
    with pytest.raises(ValueError, match=reason):
        register(server=server, token="tsf_x", spool_directory=str(tmp_path))
    with pytest.raises(ValueError, match=reason):
        Sender(server, "tsf_x", {"cluster_id": "c", "kind": "dask"}, spool_dir=tmp_path)
