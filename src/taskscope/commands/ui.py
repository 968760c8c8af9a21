"""CLI command: `taskscope ui`, the web dashboard."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from taskscope.commands.common import err_console, fail, url_host, user_errors
from taskscope.ingest import IngestInterrupted, MissingInputError
from taskscope.store import DEFAULT_STORE, StoreLocked


def register(app: typer.Typer) -> None:
    """Add this module's commands to `app`."""
    app.command()(ui)


@user_errors
def ui(
    path: Optional[Path] = typer.Argument(
        None, help="A runinfo folder, a run folder or a monitoring.db to ingest first and keep ingesting "
        "while the run is live. Without it, the store is only read."),
    store: str = typer.Option(DEFAULT_STORE, "--store", "-s",
                              help="DuckDB store file (created if PATH is given; default taskscope.duckdb here)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (a warning unless loopback)."),
    port: int = typer.Option(8080, "--port", "-p", min=0, max=65535,
                             help="Port to listen on (0: any free port, printed in the URL line)."),
    interval: float = typer.Option(3.0, "--interval", help="Seconds between two ingests of PATH."),
) -> None:
    """Open the web dashboard: runs, tasks, a task's journey, DAG, resources, logs, compare.

    Example: taskscope ui runinfo/ --port 8080   (then open http://127.0.0.1:8080)
    """
    # the web app and uvicorn take a second to import: only this command needs them
    from taskscope.web.dashboard import open_dashboard
    from taskscope.web.server import CannotListen, listen, serve

    if path is not None and not path.exists():
        raise MissingInputError(f"no such file or folder: {path}")
    try:
        sock = listen(host, port)  # a taken port is reported before the ingest and the URL line
    except CannotListen as exc:
        fail(str(exc))
    if path is not None:
        err_console.print(f"ingesting {path} into {store} ...", highlight=False)
    try:
        dashboard = open_dashboard(store, [str(path)] if path else None, interval)
    except StoreLocked as exc:
        collector = "usage collect" in (exc.holder_command or "")
        fail(f"{exc}" + (f". Open the dashboard the collector serves (the URL it printed, if it was started "
                         f"with --ui-port), or restart it with --ui-port {port} to serve one." if collector else ""))
    except IngestInterrupted as exc:  # Ctrl-C during the first ingest: say what was kept, as ingest does
        err_console.print(exc.summary(), highlight=False)
        raise typer.Exit(130) from None
    bound_port = sock.getsockname()[1]  # --port 0: the port the system picked
    err_console.print(f"taskscope dashboard on http://{url_host(host)}:{bound_port}/  (store {store}"
                      + (f", ingesting {path} every {interval:g} s" if path else ", read-only") + ")", highlight=False)
    serve(dashboard, sock=sock)
