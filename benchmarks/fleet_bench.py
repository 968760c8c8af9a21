"""Fleet plugin overhead: Dask tasks/s on many tiny tasks, with the plugin against without.

Run it from the repository root (not part of `make test`):

    .venv/bin/python benchmarks/fleet_bench.py
    .venv/bin/python benchmarks/fleet_bench.py --tasks 50000 --pairs 4 --interval 1

What it does:

1. Starts a real `taskscope fleet serve` on loopback (a fresh store in a temporary folder, one
   account and token made with the CLI).
2. For each of `--pairs` pairs, in alternating order (without/with, then with/without, ...):
   starts a fresh `LocalCluster(processes=True, n_workers=2, threads_per_worker=1)`, with the plugin
   installed by `register()` (send interval `--interval`) or not, warms it up with a small map, then
   times `client.map` of `--tasks` tiny tasks, `gather`, releasing the futures and waiting until
   the scheduler has forgotten every task (so all the plugin's per-task work is inside the time).
   Cluster start and stop are outside the time.
3. Prints tasks/s for every run and the ratio with/without of the medians; target >= 0.97.
   Checks the server received the plugged runs' computations (the plugin was really working).
4. Beside the wall clock, the CPU seconds per 1,000 tasks that the whole cluster spent in the
   timed section, sampled with psutil before and after: this process (client, scheduler and
   nannies: a `LocalCluster` runs them here, and with them the plugin's hooks and its sender
   thread) and, printed apart, the worker processes below it (the fleet server is left out).
   The CPU ratio without/with is what the tasks/s ratio would be on a quiet CPU-bound machine;
   it moves less than the wall clock with the load other programs put on the machine (printed
   per pair), but not nothing: on a busy 2-core machine one run's CPU per task moves by a third.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil
from distributed import Client, LocalCluster

from taskscope.fleet import api
from taskscope.fleet.dask import register

TARGET_RATIO = 0.97


def start_server(folder: Path) -> tuple[subprocess.Popen, str, str]:
    """A `taskscope fleet serve` subprocess with one token: (process, url, token)."""
    store = str(folder / "fleet.duckdb")
    run = [sys.executable, "-m", "taskscope.cli", "fleet"]
    subprocess.run([*run, "account", "create", "bench", "--store", store], check=True, capture_output=True)
    token = subprocess.run([*run, "token", "create", "--account", "bench", "--user", "bench", "--store", store],
                           check=True, capture_output=True, text=True).stdout.strip()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen([*run, "serve", "--store", store, "--port", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            httpx.get(url + "/api/v1/whoami", headers={"Authorization": f"Bearer {token}"}, timeout=1)
            return process, url, token
        except httpx.HTTPError:
            time.sleep(0.1)
    raise SystemExit("fleet serve did not start")


def cluster_cpu_seconds(exclude: set[int]) -> tuple[float, float]:
    """User + system CPU seconds of (this process, its live descendants but `exclude` and theirs)."""
    me = psutil.Process()
    totals = [0.0, 0.0]
    skipped = set(exclude)
    for process in [me, *me.children(recursive=True)]:
        try:
            if process.pid in skipped or process.ppid() in skipped:
                skipped.add(process.pid)
                continue
            times = process.cpu_times()
        except psutil.NoSuchProcess:  # a process that ended meanwhile (its CPU is lost to both samples)
            continue
        totals[process.pid != me.pid] += times.user + times.system
    return totals[0], totals[1]


def timed_run(tasks: int, plugin: dict | None, exclude: set[int]) -> tuple[float, tuple[float, float], str]:
    """(wall seconds, CPU seconds (here, workers), scheduler id) for `tasks` tiny tasks on a fresh cluster
    (with the plugin when `plugin` is given); see `cluster_cpu_seconds` for the CPU."""
    with LocalCluster(processes=True, n_workers=2, threads_per_worker=1, dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        if plugin is not None:
            register(client, **plugin)
        # a builtin: no function pickled by value per task (this script is __main__)
        client.gather(client.map(abs, range(200), pure=False))  # warm-up: workers and imports ready
        wait_until_forgotten(client)
        cpu_start = cluster_cpu_seconds(exclude)
        start = time.perf_counter()
        futures = client.map(abs, range(tasks), pure=False)
        assert sum(client.gather(futures)) == tasks * (tasks - 1) // 2
        del futures
        wait_until_forgotten(client)
        seconds = time.perf_counter() - start
        cpu_stop = cluster_cpu_seconds(exclude)
        cpu = (cpu_stop[0] - cpu_start[0], cpu_stop[1] - cpu_start[1])
        return seconds, cpu, client.scheduler_info()["id"]


def wait_until_forgotten(client: Client) -> None:
    while client.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks)):
        time.sleep(0.01)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--interval", type=float, default=10.0, help="plugin send interval, seconds")
    options = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        server, url, token = start_server(Path(scratch))
        plugin = {"server": url, "token": token, "interval": options.interval, "spool_directory": scratch}
        rates: dict[str, list[float]] = {"without": [], "with": []}
        cpu_per_1000: dict[str, list[float]] = {"without": [], "with": []}
        plugged = []
        try:
            for pair in range(options.pairs):
                order = ["without", "with"] if pair % 2 == 0 else ["with", "without"]
                for label in order:
                    seconds, cpu, scheduler_id = timed_run(options.tasks, plugin if label == "with" else None,
                                                           exclude={server.pid})
                    rates[label].append(options.tasks / seconds)
                    cpu_per_1000[label].append(sum(cpu) / options.tasks * 1000)
                    if label == "with":
                        plugged.append(scheduler_id)
                    print(f"pair {pair + 1} {label:>7} plugin: {options.tasks / seconds:8.0f} tasks/s ({seconds:.2f} s),"
                          f" {cpu_per_1000[label][-1]:.3f} CPU s per 1,000 tasks (client, scheduler and nannies"
                          f" {cpu[0] / options.tasks * 1000:.3f}, workers {cpu[1] / options.tasks * 1000:.3f})",
                          flush=True)
                print(f"pair {pair + 1} ratios: wall {rates['with'][-1] / rates['without'][-1]:.3f},"
                      f" CPU without/with {cpu_per_1000['without'][-1] / cpu_per_1000['with'][-1]:.3f}"
                      f"  (load average {' '.join(f'{load:.1f}' for load in os.getloadavg())})", flush=True)
            received = {c["name"]: c for c in api.list_clusters(since=None, server=url, token=token)}
        finally:
            server.terminate()
            server.wait()

    missing = [name for name in plugged if not received.get(name, {}).get("computations")]
    without, with_plugin = statistics.median(rates["without"]), statistics.median(rates["with"])
    ratio = with_plugin / without
    print(f"\nmedian without plugin: {without:8.0f} tasks/s")
    print(f"median with plugin:    {with_plugin:8.0f} tasks/s")
    print(f"ratio with/without:    {ratio:.3f}  (target >= {TARGET_RATIO}: {'met' if ratio >= TARGET_RATIO else 'MISSED'})")
    cpu_without, cpu_with = statistics.median(cpu_per_1000["without"]), statistics.median(cpu_per_1000["with"])
    cpu_ratio = cpu_without / cpu_with
    print(f"median CPU without:    {cpu_without:.3f} s per 1,000 tasks (whole cluster and client)")
    print(f"median CPU with:       {cpu_with:.3f} s per 1,000 tasks")
    print(f"CPU ratio without/with: {cpu_ratio:.3f}  (target >= {TARGET_RATIO}:"
          f" {'met' if cpu_ratio >= TARGET_RATIO else 'MISSED'}; less load-sensitive than tasks/s)")
    print(f"load average: {os.getloadavg()}")
    if missing:
        raise SystemExit(f"the server lacks the computations of plugged clusters {missing}")


if __name__ == "__main__":
    main()
