"""Serving the web app: the listening socket (a taken port said in one line, a warning off
loopback), uvicorn in the foreground (`serve`) or in a thread beside the usage collector
(`BackgroundServer`, `serve_beside_collector`)."""

from __future__ import annotations

import errno
import ipaddress
import socket
import sys
import threading
import time

import uvicorn

from taskscope.web.app import create_app
from taskscope.web.dashboard import Dashboard


def is_loopback(host: str) -> bool:
    """True if `host` (a name or an address) only ever resolves to loopback addresses."""
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except socket.gaierror:
        return False
    return bool(addresses) and all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses)


class CannotListen(Exception):
    """A server cannot listen where asked (the port is taken, the address is not this machine's)."""


def listen(host: str, port: int) -> socket.socket:
    """The dashboard's listening socket: bind it first, so that a taken port is reported before
    anything is ingested or announced (warns when `host` is not loopback; raises `CannotListen`).

    >>> serve(open_dashboard("run.duckdb"), sock=listen("127.0.0.1", 8080))  # doctest: +SKIP
    """
    warn_unless_loopback(host)
    return open_listener(host, port)


def open_listener(host: str, port: int) -> socket.socket:
    """`listen_tcp`, with why it cannot listen said in one line (`CannotListen`), for a command
    to report before it announces anything.

    >>> sock = open_listener("127.0.0.1", 0)
    >>> sock.getsockname()[1] > 0
    True
    >>> sock.close()
    """
    try:
        return listen_tcp(host, port)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise CannotListen(f"port {port} on {host} is in use: stop what listens there "
                               "or choose another port with --port") from exc
        raise CannotListen(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc


def serve(dashboard: Dashboard, host: str = "127.0.0.1", port: int = 8080, sock: socket.socket | None = None) -> None:
    """Run the dashboard with uvicorn until interrupted, on `sock` (from `listen`) or else on
    `host:port` (warns when `host` is not loopback; raises `CannotListen`).

    >>> serve(open_dashboard("run.duckdb"), port=8080)  # doctest: +SKIP
    """
    try:
        sock = sock if sock is not None else listen(host, port)
        app = create_app(dashboard, loopback_only=is_loopback(sock.getsockname()[0]))
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", proxy_headers=False))
        server.run(sockets=[sock])
    except KeyboardInterrupt:
        pass
    finally:
        if sock is not None:
            sock.close()
        if dashboard.live:
            dashboard.live.stop()
        dashboard.store.close()


def warn_unless_loopback(host: str) -> None:
    """Warn on stderr that the dashboard (which has no login) is reachable from other machines."""
    if not is_loopback(host):
        print(f"warning: listening on {host}, not a loopback address: anyone who can reach this "
              "machine can read these logs (taskscope ui has no login)", file=sys.stderr)


def listen_tcp(host: str, port: int) -> socket.socket:
    """A TCP socket listening on `host:port` (port 0: any free port), for `BackgroundServer`; raises
    OSError at once when the port is taken, before anything else has started.

    It listens at once, so a browser opening the announced URL before uvicorn has started
    waits in the backlog rather than being refused.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)  # uvicorn's default backlog
    except OSError:
        sock.close()
        raise
    return sock


class BackgroundServer:
    """The dashboard under uvicorn in a daemon thread of this process, e.g. next to the usage
    collector, whose store it then reads through cursors of the collector's own connection.

    >>> server = BackgroundServer(dashboard, listen_tcp("127.0.0.1", 8080)).start()  # doctest: +SKIP
    >>> server.stop()                                                               # doctest: +SKIP
    """

    def __init__(self, dashboard: Dashboard, sock: socket.socket):
        self.sock = sock
        self.address: tuple[str, int] = sock.getsockname()[:2]
        warn_unless_loopback(self.address[0])
        app = create_app(dashboard, loopback_only=is_loopback(self.address[0]))
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", proxy_headers=False))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]},
                                       name="taskscope-dashboard", daemon=True)

    def start(self, timeout_s: float = 30.0) -> "BackgroundServer":
        """Start serving; return once the server accepts connections."""
        self.thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the dashboard did not start on {self.address[0]}:{self.address[1]}")
            time.sleep(0.02)
        return self

    def stop(self, timeout_s: float = 30.0) -> None:
        """Finish the requests in progress, then stop serving."""
        self.server.should_exit = True
        self.thread.join(timeout_s)
        self.sock.close()


def committed_batches(con) -> int:
    """How many batches the usage collector committed, as `con`'s transaction sees the store (each
    commit adds its row to `usage_spool_commits` in the same transaction)."""
    return con.execute("SELECT count(*) FROM usage_spool_commits").fetchall()[0][0]


def serve_beside_collector(collector, sock: socket.socket) -> BackgroundServer:
    """Serve the web app over a running `taskscope.usage.collector.Collector`'s store, from its process.

    Pages read through cursors of the collector's connection and are cached until its next
    commit; the collector stops the server after its last commit. Its receiving thread never
    touches the store, so page queries never hold up a datagram.

    >>> server = serve_beside_collector(collector, listen_tcp("127.0.0.1", 8080))  # doctest: +SKIP
    """
    dashboard = Dashboard(collector.store, committed=committed_batches)
    server = BackgroundServer(dashboard, sock).start()
    collector.before_close(server.stop)
    return server
