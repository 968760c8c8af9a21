"""CLI commands `fleet serve`, `fleet account create`, `fleet token create|revoke` and `fleet upload`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import duckdb
import pandas as pd
import typer

from taskscope.commands.common import (
    FormatOption, OutputFormat, console, err_console, fail, print_frame, require, url_host, user_errors,
)
from taskscope.fleet import api
from taskscope.fleet.api import FleetAPIError
from taskscope.fleet.db import AccountError, FleetDB
from taskscope.fleet.upload import UploadError, upload_runs

DEFAULT_FLEET_STORE = "fleet.duckdb"

fleet_app = typer.Typer(
    help="Fleet analytics: a self-hosted server for Dask clusters and Parsl runs, its accounts and tokens.\n\n"
    "Example: taskscope fleet serve --store fleet.duckdb --port 8090",
    no_args_is_help=True,
)
account_app = typer.Typer(help="Accounts (teams): every read is scoped to one.\n\n"
                          "Example: taskscope fleet account create physics --store fleet.duckdb",
                          no_args_is_help=True)
token_app = typer.Typer(help="API tokens: create one per user (shown once, stored hashed) or revoke one.\n\n"
                        "Example: taskscope fleet token create --account physics --user alice",
                        no_args_is_help=True)
fleet_app.add_typer(account_app, name="account")
fleet_app.add_typer(token_app, name="token")

FleetStoreOption = typer.Option(DEFAULT_FLEET_STORE, "--store", "-s", help="The fleet server's DuckDB file.")


def register(app: typer.Typer) -> None:
    """Add this module's commands to `app`."""
    app.add_typer(fleet_app, name="fleet")


def _open_db(store: str):
    try:
        return FleetDB(store)
    except duckdb.Error as exc:
        if "lock" in str(exc).lower():
            # DuckDB allows one writing process per file: the server's
            fail(f"{store} is in use by another process (a running `taskscope fleet serve`?): stop it, run this "
                 "command, start it again")
        fail(f"cannot open {store}: {str(exc).splitlines()[0]}")


@fleet_app.command("serve")
@user_errors
def serve(
    store: str = FleetStoreOption,
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on; 0.0.0.0 to accept from other machines."),
    port: int = typer.Option(8090, "--port", "-p", min=0, max=65535,
                             help="TCP port (0: any free port, printed in the URL line)."),
    tls_cert: Optional[Path] = typer.Option(None, "--tls-cert", help="PEM certificate: serve HTTPS."),
    tls_key: Optional[Path] = typer.Option(None, "--tls-key", help="PEM private key of --tls-cert."),
) -> None:
    """Run the fleet server: ingest from Dask plugins and `fleet upload`, the read API and the pages.

    Example: taskscope fleet serve --store fleet.duckdb --host 0.0.0.0 --port 8443 --tls-cert cert.pem --tls-key key.pem
    """
    # the fleet server and uvicorn take a second to import: only this command needs them
    from taskscope.fleet import server
    from taskscope.web.server import CannotListen, open_listener

    if (tls_cert is None) != (tls_key is None):
        fail("give both --tls-cert and --tls-key, or neither")
    for path in (tls_cert, tls_key):
        if path is not None and not path.is_file():
            fail(f"no such file: {path}")
    try:
        sock = open_listener(host, port)  # a taken port fails here, before the URL line and the store
    except CannotListen as exc:
        fail(str(exc))
    try:
        _open_db(store).close()  # a locked or broken store fails here, in one line
    except BaseException:
        sock.close()
        raise
    scheme = "https" if tls_cert else "http"
    err_console.print(f"fleet server on {scheme}://{url_host(host)}:{sock.getsockname()[1]} storing into {store}; "
                      "Ctrl-C to stop", highlight=False)
    server.serve(store, host=host, port=port, tls_cert=str(tls_cert) if tls_cert else None,
                 tls_key=str(tls_key) if tls_key else None, sock=sock)


@account_app.command("create")
@user_errors
def account_create(
    account: str = typer.Argument(..., help="Account (team) name."),
    store: str = FleetStoreOption,
    fmt: OutputFormat = FormatOption,
) -> None:
    """Create an account; saying so if it already existed.

    Example: taskscope fleet account create physics --store fleet.duckdb
    """
    created = _in_store(store, lambda db: db.create_account(account))
    if fmt is not OutputFormat.table:
        _print_record({"account": account, "created": created}, fmt)
    else:
        console.print(f"account {account} {'created' if created else 'already exists'}", highlight=False)


ServerOption = typer.Option(None, "--server", envvar="TASKSCOPE_FLEET_SERVER",
                            help="Fleet server URL (default: $TASKSCOPE_FLEET_SERVER).")
TokenOption = typer.Option(None, "--token", envvar="TASKSCOPE_FLEET_TOKEN",
                           help="API token (default: $TASKSCOPE_FLEET_TOKEN).")
CaBundleOption = typer.Option(None, "--ca-bundle", help="CA certificate(s) to trust for an HTTPS server.")


@token_app.command("create")
@user_errors
def token_create(
    user: str = typer.Option(..., "--user", "-u", help="Who the token is for."),
    account: Optional[str] = typer.Option(None, "--account", "-a", help="The account the token reads and writes "
                                          "(through a server it is the admin token's: another is refused)."),
    admin: bool = typer.Option(False, "--admin", help="The token may also create and revoke tokens of its account."),
    store: str = FleetStoreOption,
    server: Optional[str] = typer.Option(None, "--server", help="Create it through this running server instead of "
                                         "in --store (needs an admin --token)."),
    token: Optional[str] = typer.Option(None, "--token", help="With --server: an admin token of the account."),
    ca_bundle: Optional[Path] = CaBundleOption,
    fmt: OutputFormat = FormatOption,
) -> None:
    """Create an API token and print it once (only its SHA-256 hash is stored).

    In the store (server stopped), or through a running server with an admin token of the account.

    Examples:

      taskscope fleet token create --account physics --user lead --admin --store fleet.duckdb

      taskscope fleet token create --user carol --server http://127.0.0.1:8090 --token tsf_<admin token>
    """
    if server:
        verify = _verify(ca_bundle)
        made = _through_server(lambda api: api.token_made(user, admin, account=account, server=server, token=token,
                                                          verify=verify))
        created, account = made["token"], made["account"]
    else:
        if not account:
            fail("give --account (or --server and an admin --token)")
        created = _in_store(store, lambda db: db.create_token(account, user, admin=admin))
    if fmt is not OutputFormat.table:
        _print_record({"account": account, "user": user, "admin": admin, "token": created}, fmt)
    else:
        sys.stdout.write(created + "\n")
        err_console.print("store it now: it is not kept and cannot be shown again", highlight=False)


@token_app.command("revoke")
@user_errors
def token_revoke(
    revoked: str = typer.Argument(..., help="The token to revoke (in full)."),
    store: str = FleetStoreOption,
    server: Optional[str] = typer.Option(None, "--server", help="Revoke it through this running server (needs an "
                                         "admin --token of the same account)."),
    token: Optional[str] = typer.Option(None, "--token", help="With --server: an admin token of the account."),
    ca_bundle: Optional[Path] = CaBundleOption,
) -> None:
    """Revoke a token: requests with it are refused from now on.

    Examples:

      taskscope fleet token revoke tsf_abc... --store fleet.duckdb

      taskscope fleet token revoke tsf_abc... --server http://127.0.0.1:8090 --token tsf_<admin token>
    """
    if server:
        verify = _verify(ca_bundle)
        _through_server(lambda api: api.revoke_token(revoked, server=server, token=token, verify=verify))
    elif not _in_store(store, lambda db: db.revoke_token(revoked)):
        fail("no such live token")
    console.print("token revoked", highlight=False)


def _verify(ca_bundle: Path | None) -> bool | str:
    """What to verify an HTTPS server's certificate with: `ca_bundle`, else the system's CAs."""
    if ca_bundle is not None and not ca_bundle.is_file():
        fail(f"no such file: {ca_bundle} (--ca-bundle)")
    return str(ca_bundle) if ca_bundle else True


def _print_record(record: dict, fmt: OutputFormat) -> None:
    """One record as one JSON object, or as CSV: a header row and one row."""
    if fmt is OutputFormat.json:
        sys.stdout.write(json.dumps(record) + "\n")
    else:
        print_frame(pd.DataFrame([record]), fmt)


def _in_store(store: str, change):
    db = _open_db(store)
    try:
        return change(db)
    except AccountError as exc:
        fail(str(exc))
    finally:
        db.close()


def _through_server(request):
    try:
        return request(api)
    except api.FleetAPIError as exc:
        fail(str(exc))


@fleet_app.command("upload")
@user_errors
def upload(
    runinfo: Path = typer.Argument(..., help="A Parsl runinfo folder, one run's folder, or any logs taskscope ingests."),
    server: Optional[str] = ServerOption,
    token: Optional[str] = TokenOption,
    store: Optional[str] = typer.Option(None, "--store", "-s", help="Event store to ingest into (default: a temporary one)."),
    price_per_core_hour: float = typer.Option(0.05, "--price-per-core-hour", min=0, max=1e6, help="For the cost estimate (0 to 1e6)."),
    ca_bundle: Optional[Path] = CaBundleOption,
    fmt: OutputFormat = FormatOption,
) -> None:
    """Send each run's summary (tasks, apps, failures, workers, wall time, cost) to a fleet server.

    Example: taskscope fleet upload runinfo/ --server https://fleet.example.org:8443 --token tsf_...
    """
    require("httpx")  # before the ingest, not after it
    if not runinfo.exists():
        fail(f"no such folder: {runinfo}")
    verify = _verify(ca_bundle)
    try:
        sent = upload_runs(runinfo, server=server, token=token, store=store, price_per_core_hour=price_per_core_hour,
                           verify=verify)
    except (UploadError, FleetAPIError) as exc:
        fail(str(exc))
    print_frame(pd.DataFrame(sent), fmt, "uploaded runs")
