"""Every `--format` of the fleet commands is honoured: `fleet account create` and `fleet token create`
print CSV for `--format csv` (a header row, one row per record: the data `--format json` prints),
where they once printed the person's text; a token made through a server names its real account.

Real `taskscope` processes, a real `taskscope fleet serve` on 127.0.0.1, real DuckDB files.
"""

from __future__ import annotations

import csv
import io
import json

from test_fleet_server import FleetServer, cli


def csv_rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def whoami(server: FleetServer, token: str) -> dict:
    reply = server.get("/api/v1/whoami", token)
    assert reply.status_code == 200, reply.text
    return reply.json()


def test_account_create_prints_each_format(tmp_path):
    store = str(tmp_path / "fleet.duckdb")
    made = cli("fleet", "account", "create", "physics", "--store", store, "--format", "csv").stdout
    assert made.splitlines() == ["account,created", "physics,True"]
    again = cli("fleet", "account", "create", "physics", "--store", store, "--format", "csv").stdout
    assert csv_rows(again) == [{"account": "physics", "created": "False"}]
    assert json.loads(cli("fleet", "account", "create", "physics", "--store", store, "--format", "json").stdout) == \
        {"account": "physics", "created": False}
    assert cli("fleet", "account", "create", "physics", "--store", store).stdout.strip() == \
        "account physics already exists"


def test_token_create_prints_csv_and_names_the_account_also_through_a_server(tmp_path):
    store = tmp_path / "fleet.duckdb"
    cli("fleet", "account", "create", "physics", "--store", str(store))
    done = cli("fleet", "token", "create", "--account", "physics", "--user", "lead", "--admin", "--store", str(store),
               "--format", "csv")
    [lead] = csv_rows(done.stdout)
    assert done.stdout.splitlines()[0] == "account,user,admin,token"
    assert (lead["account"], lead["user"], lead["admin"]) == ("physics", "lead", "True")
    assert lead["token"].startswith("tsf_") and "store it now" not in done.stderr  # only the data
    server = FleetServer(store)
    try:
        assert whoami(server, lead["token"]) == {"account": "physics", "user": "lead", "admin": True}
        for fmt in ("csv", "json"):
            done = cli("fleet", "token", "create", "--user", f"carol-{fmt}", "--server", server.url,
                       "--token", lead["token"], "--format", fmt)
            [made] = csv_rows(done.stdout) if fmt == "csv" else [json.loads(done.stdout)]
            # the account the server made it in (the admin token's), not a placeholder
            assert (made["account"], made["user"]) == ("physics", f"carol-{fmt}"), made
            assert whoami(server, made["token"]) == {"account": "physics", "user": f"carol-{fmt}", "admin": False}
    finally:
        server.stop()
