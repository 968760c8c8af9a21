"""Shared fixtures: the corpus runs in tests/corpus, fresh real Parsl runs, the CLI helpers.

Fresh runs are made once per test session, each in its own Python process (Parsl's DFK is
process-global), with taskscope's demo workflow (`taskscope.demo.workflow`). Under pytest-xdist
(`make test` runs `-n`), the first worker that needs a run makes it and the others reuse it
(`shared_once`). Tests that use a fresh run, or are slow by measurement, are marked `slow`
here (`pytest_collection_modifyitems`), so `make test-fast` leaves them out.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from filelock import FileLock

import taskscope

REPO = Path(__file__).resolve().parent.parent
CORPUS = REPO / "tests" / "corpus"
CORPUS_RUNS = ["parsl-htex-jsonlog", "parsl-mixed-textlog", "parsl-2025-textlog"]

# the corpus runs' own workflow.py files and the test data are not test modules (nor doctests)
collect_ignore_glob = ["corpus/*", "data/*"]


@contextmanager
def tiny_filesystem(folder: Path, size: str = "64k") -> Iterator[Path]:
    """`folder` (made here) as a real tmpfs of `size`, for tests of a full disk. Mounting needs
    root, as CI has: without it the test fails, never skips (a skipped check would hide the defect)."""
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                             capture_output=True, text=True)
    if mounted.returncode:
        pytest.fail(f"cannot mount a tmpfs at {folder} (the full-disk tests need root): {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def corpus_path(name: str) -> Path:
    path = CORPUS / name
    if not path.exists():
        pytest.fail(f"corpus run {path} is missing from the repository")
    return path


@pytest.fixture(params=CORPUS_RUNS)
def corpus_run(request) -> Path:
    """Each corpus run folder (holding 000/ and monitoring.db)."""
    return corpus_path(request.param)


@pytest.fixture(scope="session")
def corpus_store_file(tmp_path_factory) -> Callable[[str], Path]:
    """`corpus_store_file(name)`: a DuckDB store of that corpus run, ingested once per session (and
    shared by the xdist workers), for tests that only read it (open it with `read_only=True`)."""
    made: dict[str, Path] = {}

    def ingest_into(base: Path, name: str) -> None:
        with taskscope.open(base / "store.duckdb") as opened:
            opened.ingest(corpus_path(name))

    def store_file(name: str) -> Path:
        if name not in made:
            made[name] = shared_once(tmp_path_factory, f"corpus-{name}", lambda base: ingest_into(base, name))
        return made[name] / "store.duckdb"

    return store_file


@pytest.fixture
def ingested_corpus_run(corpus_run: Path, corpus_store_file) -> Iterator[tuple[taskscope.Store, Path]]:
    """Each corpus run, ingested once per session: (a read-only store of it, the run folder)."""
    with taskscope.open(corpus_store_file(corpus_run.name), read_only=True) as opened:
        yield opened, corpus_run


@pytest.fixture
def store():
    """A fresh in-memory store."""
    opened = taskscope.open(":memory:")
    yield opened
    opened.close()


def run_cli(*args: str, cwd: str | Path | None = None, env: dict[str, str] | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess:
    """`taskscope ARGS` in a fresh Python process (for the tests where the process boundary is the
    point: exit codes, stderr, signals, a store another process holds); the rest use `cli_runner`."""
    return subprocess.run([sys.executable, "-m", "taskscope.cli", *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=timeout)


def invoke(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`taskscope ARGS` in this process (Typer's CliRunner), answered as `run_cli` answers: returncode,
    stdout, stderr. An uncaught exception's traceback goes to stderr as the real process would print
    it, so a test asserting "no traceback" still sees one. A PNG plot runs in its own process.

    >>> invoke("--help").returncode
    0
    """
    from typer.testing import CliRunner

    from taskscope.cli import app

    words = [str(arg) for arg in args]
    if any(word.endswith(".png") for word in words):
        # a PNG plot loads kaleido, whose logging (logistro) sets the process's logger class: that
        # would change the loggers of every later test here (the fast logger's among them)
        return run_cli(*words, env=None if env is None else dict(os.environ, **env))
    result = CliRunner().invoke(app, words, env=env)
    stderr = result.stderr
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        stderr += "Traceback (most recent call last):\n" + "".join(
            traceback.format_exception(type(result.exception), result.exception, result.exception.__traceback__))
    return subprocess.CompletedProcess(["taskscope", *words], result.exit_code, result.stdout, stderr)


@pytest.fixture
def cli_runner() -> Callable[..., subprocess.CompletedProcess]:
    """`invoke` as a fixture, for tests that prefer fixtures to imports."""
    return invoke


def parsl_env() -> dict[str, str]:
    """This environment with the interpreter's scripts first on PATH: HTEX starts
    `interchange.py` and `process_worker_pool.py` by name."""
    return dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))


def make_real_run(runinfo: Path, *, zone: str | None = None, **options) -> Path:
    """Run the demo workflow with `options` in a fresh Python process (in time `zone`, such as
    "Asia/Kolkata", when given); return the run folder."""
    code = (
        "import json, sys\n"
        "from taskscope.demo.workflow import run_workflow\n"
        f"options = json.loads({json.dumps(json.dumps(options))})\n"
        "if 'executor_labels' in options: options['executor_labels'] = tuple(options['executor_labels'])\n"
        f"print(run_workflow({str(runinfo)!r}, **options))\n"
    )
    env = parsl_env() if zone is None else {**parsl_env(), "TZ": zone}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    if done.returncode != 0:
        pytest.fail(f"real Parsl run failed:\n{done.stdout}\n{done.stderr}")
    return Path(done.stdout.strip().splitlines()[-1])


def shared_once(tmp_path_factory, name: str, make: Callable[[Path], None]) -> Path:
    """`make(folder)` once per test session, even across pytest-xdist workers; returns `folder`.

    Under xdist every worker has the session's fixtures of its own: the first worker to ask makes
    the folder under a file lock in the directory the workers share, the others wait and reuse it.
    A failed `make` leaves no mark, so the next worker that asks tries again (and fails the same way).
    """
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker is None:  # one process: the session's own temporary directory
        folder = tmp_path_factory.mktemp(name)
        make(folder)
        return folder
    shared = tmp_path_factory.getbasetemp().parent  # this session's, shared by its workers
    folder, made = shared / name, shared / f"{name}.made"
    with FileLock(str(shared / f"{name}.lock")):
        if not made.exists():
            folder.mkdir(exist_ok=True)
            make(folder)
            made.touch()
    return folder


@pytest.fixture(scope="session")
def text_run(tmp_path_factory) -> Path:
    """A fresh real run: text logs, HTEX with worker_debug plus a ThreadPoolExecutor, monitoring."""
    folder = shared_once(tmp_path_factory, "text_run",
                         lambda base: make_real_run(base / "runinfo", n_inputs=12, threads=True))
    return folder / "runinfo"


@pytest.fixture(scope="session")
def wide_run(tmp_path_factory) -> Path:
    """A fresh real run with taskscope's WideEventLogging: HTEX + threads, monitoring, retries."""
    folder = shared_once(tmp_path_factory, "wide_run",
                         lambda base: make_real_run(base / "runinfo", n_inputs=12, logs="wide", threads=True))
    return folder / "runinfo"


@pytest.fixture(scope="session")
def json_two_htex_run(tmp_path_factory) -> Path:
    """A fresh real run: JSONLogging, two HTEX executors (both number their tasks from 1)."""
    folder = shared_once(tmp_path_factory, "json_run",
                         lambda base: make_real_run(base / "runinfo", n_inputs=16, logs="json",
                                                    executor_labels=["htex_a", "htex_b"]))
    return folder / "runinfo"


PERF_CONFIG = '''
from parsl.config import Config
from parsl.executors import HighThroughputExecutor
from parsl.providers import LocalProvider
config = Config(
    executors=[HighThroughputExecutor(label="htex_local", worker_debug=True, cores_per_worker=1,
                                      max_workers_per_node=2, provider=LocalProvider(init_blocks=1, max_blocks=1))],
    strategy="none",
    run_dir={run_dir!r},
)
'''


@pytest.fixture(scope="session")
def perf_run(tmp_path_factory) -> Path:
    """A fresh real `parsl-perf --iterate 300` run (text logs, HTEX, worker_debug): one app, many alike tasks."""
    return shared_once(tmp_path_factory, "perf_run", make_perf_run) / "runinfo"


def make_perf_run(base: Path) -> None:
    runinfo = base / "runinfo"
    config = base / "perf_config.py"
    config.write_text(PERF_CONFIG.format(run_dir=str(runinfo)))
    env = parsl_env()
    command = [sys.executable, "-m", "parsl.benchmark.perf", "--config", str(config), "--iterate", "300"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, cwd=base)
    if done.returncode != 0:
        pytest.fail(f"parsl-perf failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")


#: what makes a test `slow` (seconds of its own on a quiet 2-core machine, measured with
#: `pytest --durations=0`): a fresh real run (Parsl, Academy), real Chromium, a real fleet
#: server or Dask cluster in another process
SLOW_FIXTURES = frozenset({
    "text_run", "wide_run", "json_two_htex_run", "perf_run",                  # this file
    "retry_run", "sleep_run", "no_sleep_run", "dep_fail_store", "instrumented_run",  # real runs of one module
    "hostile_run", "failing_run", "academy_run", "truth_run",
    "browser", "watched",                                                     # Chromium
})
#: modules whose every test starts real servers or clusters in other processes
SLOW_MODULES = frozenset({"test_academy", "test_fleet_dask", "test_fleet_server", "test_usage_collector_ui",
                          "test_usage_web", "test_interrupts"})
#: single tests measured at more than about 5 s of their own (real Parsl runs, subprocess CLIs over
#: copies of the corpus, reading in many chunks)
SLOW_TESTS = frozenset({
    "test_real_parsl_runs_at_levels_1_2_3_are_delivered_and_joined",
    "test_every_answer_during_a_live_ingest_is_one_state_of_the_store",
    "test_cli_warns_once_and_exits_zero_on_bad_input", "test_a_file_that_becomes_unreadable_loses_nothing",
    "test_unreadable_file_and_folder_are_reported_and_the_rest_read",
    "test_cli_ingest_runs_tasks_timeline_sql", "test_a_file_read_in_many_chunks_gives_the_same_events",
    "test_ingesting_another_run_keeps_the_digest_of_the_first",
    "test_digest_is_recomputed_when_an_ingest_adds_events_to_the_run",
})


def pytest_itemcollected(item) -> None:
    """Mark `slow` the tests that SLOW_FIXTURES, SLOW_MODULES and SLOW_TESTS name."""
    fixtures = set(getattr(item, "fixturenames", ()))
    name = getattr(item, "originalname", item.name)
    if fixtures & SLOW_FIXTURES or item.path.stem in SLOW_MODULES or name in SLOW_TESTS:
        item.add_marker(pytest.mark.slow)
