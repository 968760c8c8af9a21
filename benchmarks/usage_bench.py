"""Usage collector throughput: datagrams/s received, spooled and parsed into the store.

Two measurements, each with a sender in a separate process blasting realistic Parsl level-3
start messages (one of 1000 pre-built datagrams, ~470 bytes) at 127.0.0.1:

* paced: `--paced-rate` datagrams/s for `--paced-seconds`; every one must be spooled and stored
  (zero loss);
* flat-out: `--count` datagrams as fast as the sender can, received by (a) a bare `recvfrom`
  loop that only counts, and (b) the collector. Rate = datagrams handled / (last handled − first
  received): for the bare loop the last `recvfrom`, for the collector the end of the commit that
  stored the last one. Rounds alternate; the table shows each round and the median. Also the
  CPU time per datagram of the receiving process (all its threads; not the sender's), which
  depends less on what else the machine runs than the rates do.

    .venv/bin/python benchmarks/usage_bench.py [--count 200000] [--rounds 3] [--ui]

With `--ui`, one more paced run with the dashboard served by the collector (as `usage collect
--ui-port` does) while another process loads /usage and /api/usage over and over.

With `--pages RUNS`, only this: a store of RUNS synthetic Parsl runs (levels 1-3 in turn, level 3
with its end message, dated over two years, 500 projects), then each report and the whole usage
page's data (without a filter and with two), each on the store opened afresh (nothing cached),
timed in wall-clock and CPU seconds; `--store PATH` keeps the store to time it again:

    .venv/bin/python benchmarks/usage_bench.py --pages 1000000

Target (issue #6): paced 20k/s with zero loss; flat-out ≥ 50 % of the bare loop's rate.
"""

from __future__ import annotations

import argparse
import multiprocessing
import socket
import statistics
import tempfile
import time
import uuid
from datetime import date, timedelta
from pathlib import Path

from rich.console import Console
from rich.table import Table

import taskscope
from taskscope.usage import protocol
from taskscope.usage.collector import Collector, _bind
from taskscope.web.server import listen_tcp, serve_beside_collector

TARGET_SHARE = 0.5
COMPONENTS = [{"c": "parsl.config.Config", "executors_len": 1, "dependency_resolver": False},
              {"c": "parsl.executors.high_throughput.executor.HighThroughputExecutor", "mpi": False},
              "parsl.providers.local.local.LocalProvider", "parsl.launchers.launchers.SingleNodeLauncher"]


def datagrams(n: int = 1000) -> list[bytes]:
    made = []
    for _ in range(n):
        message = protocol.start_message(str(uuid.uuid4()), "parsl", "2026.10.26", 3, "bench", COMPONENTS, 1795300000)
        del message["product"]
        made.append(protocol.encode(message))
    return made


def send(address: tuple[str, int], count: int, rate: float | None, ready) -> None:
    """Send `count` datagrams, paced at `rate` per second (None: as fast as possible)."""
    pool = datagrams()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    ready.wait()
    started = time.perf_counter()
    for number in range(count):
        if rate is not None and number % 100 == 0:
            delay = started + number / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        try:
            sock.sendto(pool[number % len(pool)], address)
        except OSError:  # ENOBUFS on a full loopback queue: that datagram is lost, as UDP allows
            pass


def start_sender(address, count: int, rate: float | None):
    context = multiprocessing.get_context("spawn")
    ready = context.Event()
    sender = context.Process(target=send, args=(address, count, rate, ready))
    sender.start()
    return sender, ready


def bare_loop(count: int) -> dict:
    sock = _bind("127.0.0.1", 0)  # same receive buffer as the collector's socket
    sender, ready = start_sender(sock.getsockname(), count, None)
    sock.settimeout(1.0)
    received, first, last = 0, None, None
    cpu_started = time.process_time()  # this process only: the sender is another one
    ready.set()
    while True:
        try:
            sock.recvfrom(65536)
        except TimeoutError:
            if not sender.is_alive():
                break
            continue
        last = time.time()
        if first is None:
            first = last
        received += 1
    cpu = time.process_time() - cpu_started
    sender.join()
    sock.close()
    return {"received": received, "handled": received, "seconds": last - first, "cpu": cpu}


def query_pages(url: str, stop, loads) -> None:
    """Load the /usage page and its JSON in turn until `stop` is set (a dashboard user, another process)."""
    import urllib.request

    while not stop.is_set():
        for path in ("/usage", "/api/usage"):
            with urllib.request.urlopen(url + path, timeout=60) as response:
                response.read()
            loads.value += 1


def collector_run(count: int, rate: float | None, folder: Path,
                  ui: bool = False) -> dict:
    store = folder / f"bench-{uuid.uuid4().hex[:8]}.duckdb"
    collector = Collector(store, port=0)
    cpu_started = time.process_time()  # every thread of this process: receiver, writer, DuckDB's
    collector.start()
    if ui:  # `usage collect --ui-port`: the dashboard in the collector's process, queried throughout
        host, port = serve_beside_collector(collector, listen_tcp("127.0.0.1", 0)).address
        stop_pages, loads = multiprocessing.Event(), multiprocessing.Value("i", 0)
        pages = multiprocessing.Process(target=query_pages, args=(f"http://{host}:{port}", stop_pages, loads))
        pages.start()
    sender, ready = start_sender(collector.address, count, rate)
    ready.set()
    sender.join()
    if ui:
        time.sleep(1.0)  # pages over the last commit too
        stop_pages.set()
        pages.join()
    stats = collector.stop()
    cpu = time.process_time() - cpu_started
    with taskscope.open(store, read_only=True) as opened:
        events = opened.con.execute("SELECT count(*) FROM events WHERE source = 'usage'").fetchall()[0][0]
    handled = stats.parsed + stats.rejected
    return {"received": stats.received, "handled": handled, "page_loads": loads.value if ui else 0, "stored": events, "rejected": stats.rejected,
            "seconds": stats.last_stored_at - stats.first_received_at, "cpu": cpu,
            "receiving": stats.last_received_at - stats.first_received_at, "store_bytes": store.stat().st_size,
            "spool_bytes": sum(
                p.stat().st_size for p in Path(str(store) + ".spool").glob("*.spool"))}


def parsl_versions(count: int) -> list[str]:
    """`count` Parsl versions (release dates), two weeks apart, the last on 2026-03-02.

    >>> parsl_versions(2)
    ['2026.02.16', '2026.03.02']
    """
    last = date(2026, 3, 2)
    return [(last - timedelta(days=14 * k)).strftime("%Y.%m.%d") for k in reversed(range(count))]


def build_run_store(path: Path, runs: int, versions: int = 4) -> None:
    """`runs` synthetic Parsl runs written straight into the store's events, as the collector stores them,
    spread evenly over `versions` Parsl releases."""
    with taskscope.open(path) as store:
        store.con.execute("""
            INSERT INTO events (ts, source, file, line, event, run_id, attrs)
            SELECT 1800000000 + i, 'usage', 'bench', 2 * i, 'usage.start', 'c' || i, json_object(
                'correlator', 'c' || i, 'parsl_v', $versions[1 + i % len($versions)],
                'python_v', ['3.11.9', '3.12.2', '3.13.1'][1 + i % 3], 'platform.system', 'Linux',
                'tracking_level', 1 + i % 3, 'project_name', 'project-' || (i % 500),
                'components', ['parsl.executors.HighThroughputExecutor'],
                'start', 1767225600 + (i * 63072000 // $runs))
            FROM range($runs) t(i)""", {"runs": runs, "versions": VERSIONS_OF_4 if versions == 4 else parsl_versions(versions)})
        store.con.execute("""
            INSERT INTO events (ts, source, file, line, event, run_id, attrs)
            SELECT 1800000000 + i, 'usage', 'bench', 2 * i + 1, 'usage.end', 'c' || i, json_object(
                'correlator', 'c' || i, 'end', 1767225600 + (i * 63072000 // $runs) + 60, 'execution_time', 60,
                'components', [json_object('c', 'parsl.dataflow.dflow.DataFlowKernel', 'app_count', 10, 'app_fails', 1)])
            FROM range($runs) t(i) WHERE i % 3 = 2""", {"runs": runs})


#: the four releases of the default store (as before --versions existed)
VERSIONS_OF_4 = ["2025.06.02", "2025.09.01", "2025.12.01", "2026.03.02"]

#: the /usage page's filters timed by --pages: none, then ones not asked before (nothing cached)
PAGE_FILTERS = [(None, None, None), ("parsl", "2026-06-01", "2027-01-01"), (None, "2027-03-15", None)]


def _timed(work) -> tuple[float, float]:
    """Wall-clock and CPU seconds (all of this process's threads) of `work()`."""
    wall, cpu = time.perf_counter(), time.process_time()
    work()
    return time.perf_counter() - wall, time.process_time() - cpu


def time_pages(runs: int, console: Console, keep: Path | None = None, versions: int = 4) -> None:
    """Each report, then the whole /usage page's data under `PAGE_FILTERS`, each on the store
    opened afresh (read-only, as `taskscope usage report` opens it: nothing cached)."""
    from taskscope.usage import reports
    from taskscope.web.dashboard import Dashboard
    from taskscope.web.pages.usage import UsageSelection, usage_data

    with tempfile.TemporaryDirectory() as tmp:
        path = keep or Path(tmp) / "usage.duckdb"
        if not path.exists():
            started = time.perf_counter()
            build_run_store(path, runs, versions)
            console.print(f"built a store of {runs:,} runs of {versions} versions in {time.perf_counter() - started:.1f} s")
        try:
            from taskscope.usage import rollups
        except ImportError:  # (code before the runs table)
            rollups = None
        if rollups is not None:
            with taskscope.open(path) as store:  # as the collector does at start: build the runs table if missing
                wall, cpu = _timed(lambda: rollups.refresh(store.con, None))
            console.print(f"runs table brought up to date (built if missing) in {wall:.1f} s, CPU {cpu:.1f} s")
        table = Table(title=f"usage reports at {runs:,} runs, cold (seconds)")
        for column in ("report", "seconds", "CPU seconds"):
            table.add_column(column, justify="right" if column != "report" else "left")

        def row(label: str, work) -> None:
            with taskscope.open(path, read_only=True) as store:
                wall, cpu = _timed(lambda: work(store))
            table.add_row(label, f"{wall:.2f}", f"{cpu:.2f}")
            console.print(f"{label}: {wall:.2f} s, CPU {cpu:.2f} s", highlight=False)

        for name in reports.REPORTS:
            row(name, lambda store: reports.report(store.con.cursor(), name, period="week"))
        for product, since, until in PAGE_FILTERS:
            selection = UsageSelection(product, since, "week", 12, until)
            label = ", ".join(f"{k}={v}" for k, v in (("product", product), ("since", since), ("until", until)) if v)
            row(f"the whole /usage page's data ({label or 'no filter'})",
                lambda store: usage_data(store.con.cursor(), Dashboard(store), selection))
        console.print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200_000, help="datagrams per flat-out run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--paced-rate", type=float, default=20_000)
    parser.add_argument("--paced-seconds", type=float, default=5)
    parser.add_argument("--ui", action="store_true", help="also a paced run with the dashboard served by the "
                        "collector (--ui-port) and loaded over and over by another process")
    parser.add_argument("--pages", type=int, metavar="RUNS", help="only time the usage reports and page over a "
                        "store of RUNS synthetic runs")
    parser.add_argument("--store", type=Path, help="with --pages: the store's file, built when absent, kept after "
                        "(to time the same store again)")
    parser.add_argument("--versions", type=int, default=4, help="with --pages: Parsl releases the runs are "
                        "spread over (Parsl has had about 50 in two years; adoption reports grow with them)")
    args = parser.parse_args()
    console = Console(width=150)  # the table stays whole when written to a file
    if args.pages:
        time_pages(args.pages, console, args.store, args.versions)
        return

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        paced_count = int(args.paced_rate * args.paced_seconds)
        paced = collector_run(paced_count, args.paced_rate, folder)
        lost = paced_count - paced["stored"]
        console.print(f"paced {args.paced_rate:,.0f}/s for {args.paced_seconds:g} s: sent {paced_count:,}, "
                      f"received {paced['received']:,}, stored {paced['stored']:,}, rejected {paced['rejected']}, "
                      f"lost {lost:,} -> {'zero loss' if lost == 0 and paced['rejected'] == 0 else 'LOSS'}")
        if args.ui:
            viewed = collector_run(paced_count, args.paced_rate, folder, ui=True)
            lost = paced_count - viewed["stored"]
            console.print(f"paced {args.paced_rate:,.0f}/s for {args.paced_seconds:g} s with the dashboard served by "
                          f"the collector and loaded {viewed['page_loads']:,} times meanwhile: received {viewed['received']:,}, stored "
                          f"{viewed['stored']:,} of {paced_count:,}, lost {lost:,} -> "
                          f"{'zero loss' if lost == 0 and viewed['rejected'] == 0 else 'LOSS'}")

        table = Table(title=f"flat-out, {args.count:,} datagrams sent per run (datagrams/s)")
        for column in ("round", "bare recvfrom", "received", "collector", "received+stored", "storing after the last",
                       "store bytes/datagram", "CPU µs/datagram bare, collector", "ratio"):
            table.add_column(column, justify="right")
        ratios, bare_rates, collector_rates, cpu_ratios = [], [], [], []
        for number in range(1, args.rounds + 1):
            bare = bare_loop(args.count)
            collected = collector_run(args.count, None, folder)
            bare_rate = bare["handled"] / bare["seconds"]
            collector_rate = collected["handled"] / collected["seconds"]
            bare_rates.append(bare_rate)
            collector_rates.append(collector_rate)
            ratios.append(collector_rate / bare_rate)
            cpu_ratios.append((bare["cpu"] / bare["handled"]) / (collected["cpu"] / collected["handled"]))
            assert collected["stored"] + collected["rejected"] == collected["received"], collected
            table.add_row(str(number), f"{bare_rate:,.0f}", f"{bare['received']:,}", f"{collector_rate:,.0f}",
                          f"{collected['handled']:,}", f"{collected['seconds'] - collected['receiving']:.2f} s",
                          f"{collected['store_bytes'] / collected['handled']:,.0f}",
                          f"{bare['cpu'] / bare['handled'] * 1e6:.1f}, {collected['cpu'] / collected['handled'] * 1e6:.1f}",
                          f"{ratios[-1]:.0%}")
        table.add_row("median", f"{statistics.median(bare_rates):,.0f}", "", f"{statistics.median(collector_rates):,.0f}",
                      "", "", "", f"{statistics.median(cpu_ratios):.0%} (CPU)", f"{statistics.median(ratios):.0%}")
        console.print(table)
        verdict = "meets" if statistics.median(ratios) >= TARGET_SHARE else "misses"
        console.print(f"target: collector >= {TARGET_SHARE:.0%} of the bare loop -> {verdict} "
                      f"(median {statistics.median(ratios):.0%}); CPU per datagram, bare / collector: median "
                      f"{statistics.median(cpu_ratios):.0%} (what the ratio tends to when CPU is scarce)")


if __name__ == "__main__":
    main()
