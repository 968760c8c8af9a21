"""`taskscope.parsl.usage.enable()` on the oldest Parsl release pyproject.toml allows and on the
installed (newest) one: a real level-3 run delivers its start and end messages, byte for byte what
Parsl built, to a real `taskscope usage collect` on 127.0.0.1.

The oldest Parsl lives in a virtualenv of its own, `.venv-parsl-oldest/` at the top of the
checkout, made from PyPI on first use and kept between runs (git-ignored). It holds Parsl only:
taskscope's Parsl adapter and usage client need nothing else, and come from this checkout's `src/`.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import venv
from pathlib import Path

import pytest
from filelock import FileLock
from packaging.version import Version

import taskscope
from conftest import parsl_env
from test_usage import PARSL_RUN, PROJECT, free_udp_port, usage_events, wait_until

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
OLDEST_VENV = ROOT / ".venv-parsl-oldest"


def oldest_supported_parsl() -> str:
    """The lower bound of Parsl in pyproject.toml's `parsl` extra (what the README promises)."""
    found = re.search(r'parsl = \["parsl\[monitoring\]>=([0-9.]+)"\]', (ROOT / "pyproject.toml").read_text())
    assert found, "pyproject.toml's parsl extra names no lower bound"
    return found[1]


def python_with_oldest_parsl() -> Path:
    """The interpreter of `.venv-parsl-oldest/`, made (once) with the oldest supported Parsl."""
    version = oldest_supported_parsl()
    python = OLDEST_VENV / "bin" / "python"
    with FileLock(str(ROOT / ".venv-parsl-oldest.lock")):
        if not _has_parsl(python, version):
            venv.EnvBuilder(with_pip=True, clear=True).create(OLDEST_VENV)
            subprocess.run([str(python), "-m", "pip", "install", "-q", f"parsl=={version}"], check=True, timeout=900)
    assert _has_parsl(python, version)
    return python


def _has_parsl(python: Path, version: str) -> bool:
    return parsl_version_of(python) == Version(version)


def parsl_version_of(python: Path) -> Version | None:
    """The Parsl `python` imports (PEP 440: "2025.01.13" and "2025.1.13" are one), None if none."""
    if not python.exists():
        return None
    done = subprocess.run([str(python), "-c", "import parsl; print(parsl.__version__)"], capture_output=True, text=True)
    return Version(done.stdout.strip()) if done.returncode == 0 else None


def collect(store: Path, port: int) -> subprocess.Popen:
    spool_dir = Path(str(store) + ".spool")
    process = subprocess.Popen([sys.executable, "-m", "taskscope.cli", "usage", "collect", "--port", str(port),
                                "--store", str(store), "--format", "json"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # the collector makes its spool segment once it has bound the port
    assert wait_until(lambda: any(spool_dir.glob("*.spool")) or process.poll() is not None, 60)
    assert process.poll() is None, process.communicate()[1]
    return process


def run_level3(python: Path, endpoint: str, run_dir: Path) -> dict:
    env = parsl_env()
    env.update(PATH=str(python.parent) + os.pathsep + env["PATH"],
               PYTHONPATH=str(ROOT / "src") + os.pathsep + env.get("PYTHONPATH", ""))
    for variable in ("DO_NOT_TRACK", "TASKSCOPE_USAGE"):
        env.pop(variable, None)
    done = subprocess.run([str(python), "-c", PARSL_RUN, endpoint, "3", "threads", str(run_dir)],
                          capture_output=True, text=True, timeout=300, env=env)
    if done.returncode != 0:
        pytest.fail(f"Parsl run failed:\n{done.stdout}\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("release", ["oldest", "newest"])
def test_enable_delivers_level3_start_and_end_on_oldest_and_newest_parsl(tmp_path, release):
    python = python_with_oldest_parsl() if release == "oldest" else Path(sys.executable)
    store, port = tmp_path / "usage.duckdb", free_udp_port()
    collector = collect(store, port)
    try:
        run = run_level3(python, f"127.0.0.1:{port}", tmp_path / "runinfo")
    finally:
        collector.send_signal(signal.SIGINT)
        out, err = collector.communicate(timeout=60)
    assert collector.returncode == 0, err
    assert json.loads(out.strip().splitlines()[-1])["rejected"] == 0

    with taskscope.open(store, read_only=True) as opened:
        stored = [e for e in usage_events(opened) if e["run_id"] == run["correlator"]]
    assert [e["event"] for e in stored] == ["usage.start", "usage.end"]
    assert [e["attrs"] for e in stored] == run["messages"]
    start, end = (e["attrs"] for e in stored)
    assert Version(start["parsl_v"]) == parsl_version_of(python)
    assert release == "newest" or parsl_version_of(python) == Version(oldest_supported_parsl())
    assert start["tracking_level"] == 3
    assert start["project_name"] == PROJECT and isinstance(start["start"], int)
    counts = end["components"][0]
    assert (counts["app_count"], counts["app_fails"]) == (run["apps"], run["fails"])
