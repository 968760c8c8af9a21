"""Fleet server benchmark: how many Dask clusters one `taskscope fleet serve` keeps up with.

Run it from the repository root (not part of `make test`):

    .venv/bin/python benchmarks/fleet_server_bench.py
    .venv/bin/python benchmarks/fleet_server_bench.py --batches 500 --repeat 3

What it does, side by side in this one script:

1. Builds `--batches` Dask-like batches (the test suite's `dask_batch`: 10 messages each, a
   computation with two task groups, an exception, worker samples...), each for a new cluster.
2. Anchor: stores them with `FleetDB.store_batch` in this process into a fresh DuckDB file (no HTTP,
   no JSON parsing, no auth): the cost of the storage alone.
3. Server: starts `taskscope fleet serve` on 127.0.0.1 with its own fresh file and POSTs the same
   batches one after the other over one keep-alive connection, each acknowledged only once committed.
   The same again with a server whose `SecurityHeaders` middleware (`taskscope.web.security`) is
   taken out (started with uvicorn by this script), alternating which goes first: the cost of the
   security headers.
4. Prints batches/s for all three, the ratio server / anchor, with / without the middleware (also
   as the server process's CPU time per batch, which other load on the machine disturbs less), how
   many clusters the server keeps up with at the plugin's send interval (one batch per cluster every `DEFAULT_SEND_INTERVAL_S`), and the
   median time of `GET /api/v1/clusters` over all of them. The machine is shared: note the load.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "src"), str(REPO / "tests")]

from taskscope.fleet.db import FleetDB  # noqa: E402
from taskscope.fleet.protocol import DEFAULT_SEND_INTERVAL_S, INGEST_PATH  # noqa: E402
from test_fleet_server import dask_batch  # noqa: E402
from test_web import free_port  # noqa: E402


def anchor_rate(batches: list[dict], folder: Path) -> float:
    db = FleetDB(str(folder / f"anchor-{uuid.uuid4().hex}.duckdb"))
    try:
        started = time.perf_counter()
        for batch in batches:
            db.store_batch("bench", "bench", batch)
        return len(batches) / (time.perf_counter() - started)
    finally:
        db.close()


#: `taskscope fleet serve` without the SecurityHeaders middleware (argv: store, port)
BARE_SERVER = """
import sys, uvicorn
from taskscope.fleet.db import FleetDB
from taskscope.web.security import SecurityHeaders
from taskscope.fleet.server import create_app
app = create_app(FleetDB(sys.argv[1]))
app.user_middleware = [m for m in app.user_middleware if m.cls is not SecurityHeaders]
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
"""


def start_server(store: Path, headers: bool = True) -> tuple[subprocess.Popen, str, str]:
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    command = [sys.executable, "-m", "taskscope.cli", "fleet"]
    subprocess.run([*command, "account", "create", "bench", "--store", str(store)], env=env, check=True,
                   capture_output=True)
    token = json.loads(subprocess.run([*command, "token", "create", "-a", "bench", "-u", "bench", "--store",
                                       str(store), "-f", "json"], env=env, check=True, capture_output=True,
                                      text=True).stdout)["token"]
    port = free_port()
    serve = [*command, "serve", "--store", str(store), "--port", str(port)] if headers else \
        [sys.executable, "-c", BARE_SERVER, str(store), str(port)]
    process = subprocess.Popen(serve, env=env, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            httpx.get(url + "/login", timeout=1)
            return process, url, token
        except httpx.HTTPError:
            time.sleep(0.2)
    process.kill()
    raise SystemExit("fleet serve did not start")


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) process `pid` has used so far, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def server_rates(batches: list[dict], folder: Path, headers: bool = True) -> tuple[float, float, float]:
    """Batches/s over HTTP, the server's CPU ms per batch, and the median time of listing the clusters."""
    process, url, token = start_server(folder / f"server-{uuid.uuid4().hex}.duckdb", headers)
    try:
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as client:
            bodies = [json.dumps(batch).encode() for batch in batches]
            cpu_before, started = cpu_seconds(process.pid), time.perf_counter()
            for body in bodies:
                reply = client.post(INGEST_PATH, content=body, headers={"Content-Type": "application/json"})
                assert reply.status_code == 200, reply.text
            rate = len(batches) / (time.perf_counter() - started)
            cpu_ms = (cpu_seconds(process.pid) - cpu_before) * 1000 / len(batches)
            reads = []
            for _ in range(5):
                started = time.perf_counter()
                listed = client.get("/api/v1/clusters", params={"since": ""}).json()["clusters"]
                reads.append(time.perf_counter() - started)
            assert len(listed) == len(batches)
        return rate, cpu_ms, statistics.median(reads)
    finally:
        process.terminate()
        process.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=3, help="alternating anchor / server rounds; medians reported")
    options = parser.parse_args()
    print(f"load average before: {os.getloadavg()}")
    anchor, server, bare, reads = [], [], [], []
    cpu: dict[bool, list[float]] = {True: [], False: []}
    with tempfile.TemporaryDirectory(prefix="fleet-bench-") as scratch:
        for round_ in range(options.repeat):
            batches = [dask_batch(uuid.uuid4().hex, f"user{i % 7}") for i in range(options.batches)]
            anchor.append(anchor_rate(batches, Path(scratch)))
            for headers in ((True, False) if round_ % 2 == 0 else (False, True)):
                rate, cpu_ms, read_s = server_rates(batches, Path(scratch), headers)
                (server if headers else bare).append(rate)
                cpu[headers].append(cpu_ms)
                if headers:
                    reads.append(read_s)
    anchor_median, server_median = statistics.median(anchor), statistics.median(server)
    print(f"{options.batches} batches of {len(batches[0]['messages'])} messages, {options.repeat} rounds (medians)")
    print(f"anchor  FleetDB.store_batch in-process: {anchor_median:8.1f} batches/s")
    print(f"server  POST {INGEST_PATH}, committed:   {server_median:8.1f} batches/s "
          f"(ratio server/anchor {server_median / anchor_median:.2f})")
    bare_median = statistics.median(bare)
    print(f"server without SecurityHeaders:          {bare_median:8.1f} batches/s "
          f"(ratio with/without {server_median / bare_median:.3f}; rounds with {[round(r) for r in server]}, "
          f"without {[round(r) for r in bare]})")
    with_cpu, without_cpu = statistics.median(cpu[True]), statistics.median(cpu[False])
    print(f"server CPU per batch: {with_cpu:.1f} ms with SecurityHeaders, {without_cpu:.1f} ms without "
          f"(ratio {with_cpu / without_cpu:.3f}; rounds with {[round(c, 1) for c in cpu[True]]}, "
          f"without {[round(c, 1) for c in cpu[False]]})")
    print(f"clusters kept up with at one batch per {DEFAULT_SEND_INTERVAL_S:.0f} s: "
          f"{server_median * DEFAULT_SEND_INTERVAL_S:.0f}")
    print(f"GET /api/v1/clusters over {options.batches} clusters: {statistics.median(reads) * 1000:.1f} ms")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
