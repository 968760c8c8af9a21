"""Web dashboard benchmark: taskscope's pages against parsl-visualize's workflow page, on one
real Parsl run of 100k tasks with monitoring.

Run it from the repository root (not part of `make test`):

    .venv/bin/python benchmarks/web_bench.py
    .venv/bin/python benchmarks/web_bench.py --tasks 20000 --viz-timeout 300

What it does:

1. Makes a real Parsl run of `--tasks` trivial tasks (ThreadPoolExecutor, 4 threads,
   MonitoringHub, text logs), cached under `--workdir` (default `benchmarks/.work/web<N>/`).
   At 25k and 100k tasks Parsl 2026.10.26 hung at exit after its last log line ("Closing
   monitoring multiprocessing queues", monitoring.db complete): a minute after that line the
   bench kills the process and goes on with the run folder.
2. Ingests it (logs + monitoring.db) into a DuckDB store there (cached too).
3. Serves the store read-only with the real app (uvicorn on 127.0.0.1) and fetches each page
   (run, its JSON, tasks, resources, CPU/memory over time JSON, Gantt, DAG, logs, runs)
   over HTTP: cold (the first request to a server just started for that page alone, on a
   store opened anew; also the CPU time the process spent on it, server and client, which other
   load on the machine disturbs less) and the median of `--repeat` more; bytes of each page. The run page
   reads the digest the ingest stored (`taskscope.digests`); `--no-digest` deletes it first,
   to time computing it per request.
4. Installs `parsl[monitoring,visualization]` (same Parsl release) into a virtualenv of its
   own (`<workdir>/../viz-venv`) if missing, and times parsl-visualize's workflow page
   `/workflow/<run_id>/` with Flask's test client on a copy of the same monitoring.db
   (a copy because parsl-visualize runs `db.create_all()` on it), up to `--viz-timeout` s.
   `--no-pages` times parsl-visualize alone.
5. Prints a table and PASS/MISS for the targets: < 1 s and < 2 MB per page, parsl-visualize's
   workflow page >= 20x slower than our run page.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PARSL_VERSION = "2026.10.26"

WORKFLOW = '''
import sys, time
import parsl
from parsl.config import Config
from parsl.executors import ThreadPoolExecutor
from parsl.monitoring.monitoring import MonitoringHub


@parsl.python_app
def noop(i):
    return i


def main():
    runinfo, n = sys.argv[1], int(sys.argv[2])
    config = Config(executors=[ThreadPoolExecutor(label="threads", max_threads=4)], run_dir=runinfo,
                    strategy="none", monitoring=MonitoringHub(resource_monitoring_interval=1))
    started = time.time()
    with parsl.load(config):
        futures = [noop(i) for i in range(n)]
        for future in futures:
            future.result()
    print(f"{n} tasks in {time.time() - started:.1f} s")


if __name__ == "__main__":
    main()
'''

VIZ_CLIENT = '''
import json, sys, time
from flask import Flask
from parsl.monitoring.visualization.models import db

app = Flask("parsl.monitoring.visualization.app")  # its templates live beside that module
app.config["SQLALCHEMY_DATABASE_URI"] = "sqlite:///" + sys.argv[1]
app.config["SQLALCHEMY_TRACK_MODIFICATIONS"] = False
db.init_app(app)
with app.app_context():
    db.create_all()
    from parsl.monitoring.visualization import views
    views.dummy = False
    client = app.test_client()
    for path in sys.argv[2:]:
        started = time.perf_counter()
        response = client.get(path)
        print(json.dumps({"path": path, "status": response.status_code, "seconds": time.perf_counter() - started,
                          "bytes": len(response.data)}), flush=True)
'''


def make_run(workdir: Path, tasks: int) -> Path:
    runinfo = workdir / "runinfo"
    if (runinfo / "monitoring.db").exists():
        return runinfo
    shutil.rmtree(runinfo, ignore_errors=True)
    script = workdir / "workflow.py"
    script.write_text(WORKFLOW)
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    print(f"making a real Parsl run of {tasks} tasks with monitoring ...", flush=True)
    out, err = workdir / "workflow.out", workdir / "workflow.err"  # files: a full pipe would stop the run
    with open(out, "w") as stdout_file, open(err, "w") as stderr_file:
        running = subprocess.Popen([sys.executable, str(script), str(runinfo), str(tasks)], env=env, cwd=workdir,
                                   stdout=stdout_file, stderr=stderr_file)
        if _hung_at_exit(running, runinfo):
            print("Parsl hung at exit after closing monitoring (monitoring.db complete): killed it", flush=True)
            return runinfo
    stdout, stderr = out.read_text(), err.read_text()
    if running.returncode != 0:
        sys.exit(f"the Parsl run failed:\n{stdout[-3000:]}\n{stderr[-3000:]}")
    print(stdout.strip().splitlines()[-1], flush=True)
    return runinfo


def _hung_at_exit(running: subprocess.Popen, runinfo: Path, grace_s: float = 60.0) -> bool:
    """Wait for the run; True (having killed it) if its parsl.log ended on "Closing monitoring
    multiprocessing queues" and the process was still there `grace_s` later."""
    closed_at = None
    while running.poll() is None:
        time.sleep(2)
        logs = sorted(runinfo.glob("*/parsl.log"))
        with open(logs[-1], "rb") if logs else open(os.devnull, "rb") as log:
            log.seek(max(0, log.seek(0, os.SEEK_END) - 400))
            closing = b"Closing monitoring multiprocessing queues" in log.read()
        closed_at = (closed_at or time.time()) if closing else None
        if closed_at is not None and time.time() - closed_at > grace_s and running.poll() is None:
            running.kill()
            running.wait()
            return True
    return False


def make_store(workdir: Path, runinfo: Path, digest: bool) -> Path:
    import taskscope
    from taskscope.digests import refresh_digests

    store_file = workdir / "taskscope.duckdb"
    if not store_file.exists():
        started = time.time()
        with taskscope.open(store_file) as store:
            report = store.ingest(runinfo)
        print(f"ingested {report.events:,} events in {time.time() - started:.1f} s (digest included)", flush=True)
    with taskscope.open(store_file) as store:
        if not digest:
            store.con.execute("DROP TABLE IF EXISTS run_digests")
            print("digest deleted: the run page computes its analyses per request", flush=True)
        else:
            started = time.time()
            refreshed = refresh_digests(store.con)
            print(f"digest of {len(refreshed)} run(s) computed in {time.time() - started:.1f} s"
                  if refreshed else "digest current", flush=True)
    return store_file


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def fetch_timed(url: str) -> tuple[float, int, float]:
    """(wall seconds, bytes, CPU seconds of this process meanwhile: the server thread's and the
    client's, which the machine's other load disturbs less than the wall clock)."""
    started, cpu = time.perf_counter(), time.process_time()
    with urllib.request.urlopen(url, timeout=600) as response:
        body = response.read()
        assert response.status == 200, url
    return time.perf_counter() - started, len(body), time.process_time() - cpu


PAGES = [("run", "/runs/{run}"), ("run JSON (/api/runs/RUN)", "/api/runs/{run}"), ("tasks", "/runs/{run}/tasks"),
         ("tasks, page 500 sorted by duration", "/runs/{run}/tasks?sort=duration_s&desc=true&page=500"),
         ("task (one in the middle)", "/runs/{run}/tasks/{middle}"), ("resources", "/runs/{run}/resources"),
         ("utilization JSON", "/api/runs/{run}/utilization"),
         ("gantt (aggregated per app)", "/runs/{run}/gantt"), ("gantt (aggregated per slot)", "/runs/{run}/gantt?by=slot"),
         ("gantt, app page 1 (2,000 bars)", "/runs/{run}/gantt?app=noop"), ("dag (app level)", "/runs/{run}/dag"),
         ("dag, app page 1", "/runs/{run}/dag?app=noop"), ("logs of the run", "/logs?run_id={run}"),
         ("runs", "/")]


class _Server:
    """The real app under uvicorn on a free loopback port, over a store opened read-only."""

    def __init__(self, store_file: Path):
        import uvicorn

        import taskscope
        from taskscope.web.app import create_app
        from taskscope.web.dashboard import Dashboard

        self.store = taskscope.open(store_file, read_only=True)
        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(create_app(Dashboard(self.store)), host="127.0.0.1",
                                                    port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        while not self.server.started:
            time.sleep(0.05)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)
        self.store.close()


def time_taskscope(store_file: Path, repeat: int, cold_repeat: int) -> tuple[str, list[dict]]:
    """Each page cold (the first request to a server just started on the store opened anew;
    median of `cold_repeat` such servers, and the fastest) and warm (median of `repeat` more)."""
    import taskscope

    with taskscope.open(store_file, read_only=True) as store:
        run_id = store.runs().run_id.iloc[-1]
        middle = int(store.runs().tasks.iloc[-1]) // 2
    results = []
    for name, path in PAGES:
        colds, cold_cpus, warm = [], [], None
        for attempt in range(cold_repeat):
            server = _Server(store_file)
            url = f"http://127.0.0.1:{server.port}{path.format(run=run_id, middle=middle)}"
            try:
                cold, size, cold_cpu = fetch_timed(url)
                colds.append(cold)
                cold_cpus.append(cold_cpu)
                if attempt == cold_repeat - 1:
                    warm = statistics.median(fetch_timed(url)[0] for _ in range(repeat))
            finally:
                server.stop()
        row = {"page": name, "cold_s": statistics.median(colds), "cold_min_s": min(colds), "warm_s": warm,
               "cold_cpu_s": statistics.median(cold_cpus), "bytes": size}
        results.append(row)
        print(f"  taskscope {name}: cold {row['cold_s']:.3f} s (fastest {row['cold_min_s']:.3f}, "
              f"CPU {row['cold_cpu_s']:.3f}), warm {warm:.3f} s, {size / 1e6:.2f} MB", flush=True)
    return run_id, results


def viz_python(workdir: Path) -> Path:
    venv = workdir.parent / "viz-venv"
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    probe = subprocess.run([str(python), "-c", "import flask, flask_sqlalchemy, parsl.monitoring.visualization.models"],
                           capture_output=True)
    if probe.returncode != 0:
        print("installing parsl[monitoring,visualization] into", venv, flush=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", f"parsl[monitoring,visualization]=={PARSL_VERSION}"],
                       check=True)
    return python


def time_parsl_visualize(workdir: Path, runinfo: Path, run_id: str, timeout_s: float) -> dict:
    python = viz_python(workdir)
    database = workdir / "viz-monitoring.db"
    shutil.copy(runinfo / "monitoring.db", database)
    client = workdir / "viz_client.py"
    client.write_text(VIZ_CLIENT)
    try:
        done = subprocess.run([str(python), str(client), str(database), f"/workflow/{run_id}/"],
                              capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"page": "parsl-visualize workflow", "seconds": None, "bytes": None, "timed_out": timeout_s}
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    if not lines:
        return {"page": "parsl-visualize workflow", "seconds": None, "bytes": None,
                "error": done.stderr[-2000:]}
    return {"page": "parsl-visualize workflow", **lines[0]}


def _load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--repeat", type=int, default=3, help="warm requests per page (median)")
    parser.add_argument("--cold-repeat", type=int, default=3, help="fresh servers per page for the cold time (median)")
    parser.add_argument("--viz-timeout", type=float, default=900.0, help="seconds to wait for parsl-visualize")
    parser.add_argument("--no-viz", action="store_true", help="time only taskscope's pages")
    parser.add_argument("--no-digest", action="store_true", help="delete the stored run digest first")
    parser.add_argument("--no-pages", action="store_true", help="time only parsl-visualize")
    args = parser.parse_args()
    workdir = args.workdir or REPO / "benchmarks" / ".work" / f"web{args.tasks}"
    workdir.mkdir(parents=True, exist_ok=True)
    runinfo = make_run(workdir, args.tasks)
    store_file = make_store(workdir, runinfo, not args.no_digest)
    print(f"taskscope pages (real server, HTTP on loopback); load average {_load()}", flush=True)
    if args.no_pages:
        import taskscope

        with taskscope.open(store_file, read_only=True) as store:
            run_id, ours = store.runs().run_id.iloc[-1], []
    else:
        run_id, ours = time_taskscope(store_file, args.repeat, args.cold_repeat)
    if args.no_viz:
        viz = {"skipped": True}
    else:
        print("parsl-visualize workflow page (Flask test client) ...", flush=True)
        viz = time_parsl_visualize(workdir, runinfo, run_id, args.viz_timeout)

    print(f"\n{args.tasks:,} tasks, run {run_id}; load average now {_load()}")
    print(f"{'page':40} {'cold s':>8} {'fastest':>8} {'cold CPU':>8} {'warm s':>8} {'MB':>7}  "
          "target <1 s, <2 MB (median cold)")
    for row in ours:
        verdict = "PASS" if row["cold_s"] < 1 and row["bytes"] < 2e6 else "MISS"
        verdict = verdict if "JSON" not in row["page"] else f"({verdict} if it were a page)"
        print(f"{row['page']:40} {row['cold_s']:8.3f} {row['cold_min_s']:8.3f} {row['cold_cpu_s']:8.3f} {row['warm_s']:8.3f} "
              f"{row['bytes'] / 1e6:7.2f}  {verdict}")
    if viz.get("seconds") is not None and not ours:
        print(f"parsl-visualize workflow page (HTTP {viz['status']}): {viz['seconds']:.3f} s, "
              f"{viz['bytes'] / 1e6:.2f} MB")
    elif "timed_out" in viz and not ours:
        print(f"parsl-visualize workflow page: no answer within {viz['timed_out']:.0f} s")
    elif viz.get("seconds") is not None:
        print(f"{'parsl-visualize workflow (HTTP ' + str(viz['status']) + ')':40} {viz['seconds']:8.3f} {'':17} "
              f"{viz['bytes'] / 1e6:7.2f}")
        ratio = viz["seconds"] / ours[0]["cold_s"]
        print(f"parsl-visualize workflow page / taskscope run page (cold): {ratio:.0f}x  "
              f"target >= 20x: {'PASS' if ratio >= 20 else 'MISS'}")
    elif "timed_out" in viz:
        ratio = viz["timed_out"] / ours[0]["cold_s"]
        print(f"parsl-visualize workflow page: no answer within {viz['timed_out']:.0f} s "
              f"(so > {ratio:.0f}x our run page; target >= 20x: PASS)")
    elif not viz.get("skipped"):
        print(f"parsl-visualize failed: {viz.get('error')}")


if __name__ == "__main__":
    main()
