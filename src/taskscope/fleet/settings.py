"""The Dask plugin's settings, read from Dask config keys under ``taskscope.fleet``.

Defaults (registered with ``dask.config.update_defaults`` when `taskscope.fleet.dask` is imported):

.. code-block:: yaml

    taskscope:
      fleet:
        disabled: false            # true: the plugin sends nothing at all
        server: null               # e.g. http://fleet.example.org:8090
        token: null                # from `taskscope fleet token create`
        verify: true               # TLS: true (system CAs), a CA bundle path (private CA), or false
        user: null                 # default: the login name where register()/the scheduler runs
        interval: 10s              # between two sends
        price-per-core-hour: 0.05
        price-per-gb-hour: 0.005
        code: {transmit: true}     # the calling code of each computation
        profile: {transmit: false, interval: 60s, max-bytes: 65536}
        events: {allow: [worker-fail-hard, ...]}   # log_event topics (or scheduler actions) sent
        spool: {directory: null, max-bytes: 64 MiB, retry-max: 60s}
        close-timeout: 5s          # the scheduler's shutdown waits this long for the last batch

Environment variables work as for any Dask key, e.g. ``DASK_TASKSCOPE__FLEET__SERVER``.
This module imports `dask` only inside `FleetSettings.from_config`.
"""

from __future__ import annotations

import getpass
from dataclasses import asdict, dataclass, field, fields

from taskscope.fleet import protocol

#: Dask failure topics and scheduler actions worth forwarding; they carry no task data.
DEFAULT_EVENTS_ALLOW = [
    "worker-fail-hard", "invalid-worker-transition", "invalid-worker-task-state", "worker-restart-memory",
    "transitions", "scheduler-transition-failed", "remove-worker", "worker-ttl-timed-out",
    "no-workers-timeout-exceeded", "restart-workers", "retire-workers",
]

#: seconds the scheduler's shutdown waits for the last batch to be delivered (it stays spooled otherwise)
DEFAULT_CLOSE_TIMEOUT_S = 5.0

DEFAULTS = {"taskscope": {"fleet": {
    "disabled": False,
    "server": None,
    "token": None,
    "verify": True,
    "user": None,
    "interval": f"{protocol.DEFAULT_SEND_INTERVAL_S:g}s",
    "price-per-core-hour": protocol.DEFAULT_PRICE_PER_CORE_HOUR,
    "price-per-gb-hour": protocol.DEFAULT_PRICE_PER_GB_HOUR,
    "code": {"transmit": True},
    "profile": {"transmit": False, "interval": "60s", "max-bytes": 64 * 1024},
    "events": {"allow": DEFAULT_EVENTS_ALLOW},
    "spool": {"directory": None, "max-bytes": 64 * 1024 * 1024, "retry-max": "60s"},
    "close-timeout": f"{DEFAULT_CLOSE_TIMEOUT_S:g}s",
}}}

#: FleetSettings field -> Dask config key (under taskscope.fleet)
CONFIG_KEYS = {
    "disabled": "disabled", "server": "server", "token": "token", "verify": "verify", "user": "user",
    "interval": "interval",
    "price_per_core_hour": "price-per-core-hour", "price_per_gb_hour": "price-per-gb-hour",
    "code_transmit": "code.transmit", "profile_transmit": "profile.transmit",
    "profile_interval": "profile.interval", "profile_max_bytes": "profile.max-bytes",
    "events_allow": "events.allow", "spool_directory": "spool.directory",
    "spool_max_bytes": "spool.max-bytes", "retry_max": "spool.retry-max", "close_timeout": "close-timeout",
}
_DURATIONS = {"interval", "profile_interval", "retry_max", "close_timeout"}


@dataclass
class FleetSettings:
    """Everything the plugin needs, as plain picklable values (shipped to the scheduler by `register`).

    >>> FleetSettings(server="http://127.0.0.1:8090", token="t").privacy()  # doctest: +ELLIPSIS
    {'code.transmit': True, 'profile.transmit': False, 'events.allow': [...]}
    """

    server: str | None = None
    token: str | None = None
    verify: bool | str = True
    user: str | None = None
    disabled: bool = False
    interval: float = protocol.DEFAULT_SEND_INTERVAL_S
    price_per_core_hour: float = protocol.DEFAULT_PRICE_PER_CORE_HOUR
    price_per_gb_hour: float = protocol.DEFAULT_PRICE_PER_GB_HOUR
    code_transmit: bool = True
    profile_transmit: bool = False
    profile_interval: float = 60.0
    profile_max_bytes: int = 64 * 1024
    events_allow: list[str] = field(default_factory=lambda: list(DEFAULT_EVENTS_ALLOW))
    spool_directory: str | None = None
    spool_max_bytes: int = 64 * 1024 * 1024
    retry_max: float = 60.0
    close_timeout: float = DEFAULT_CLOSE_TIMEOUT_S

    @classmethod
    def from_config(cls, **overrides) -> FleetSettings:
        """Settings from the Dask config in force here, with keyword `overrides` (None = not given).

        Use it where the config is the user's: on the client in `register()`, on the scheduler for
        ``--preload``.
        """
        # Dask is the `fleet` extra: importing taskscope.fleet must not need it
        import dask.config
        from dask.utils import parse_timedelta

        dask.config.update_defaults(DEFAULTS)
        unknown = set(overrides) - {f.name for f in fields(cls)}
        if unknown:
            raise TypeError(f"unknown taskscope.fleet option(s): {', '.join(sorted(unknown))}")
        values = {}
        for name, key in CONFIG_KEYS.items():
            value = overrides.get(name)
            if value is None:
                value = dask.config.get(f"taskscope.fleet.{key}")
            if name in _DURATIONS and value is not None:
                value = parse_timedelta(value, default="s")
            values[name] = value
        values["user"] = values["user"] or getpass.getuser()
        values["events_allow"] = list(values["events_allow"] or [])
        for name in protocol.PRICE_FIELDS:  # the server refuses every batch of a cluster priced outside
            price = values[name]
            if not isinstance(price, (int, float)) or isinstance(price, bool) or not 0 <= price <= protocol.MAX_PRICE:
                raise ValueError(f"taskscope.fleet {CONFIG_KEYS[name]} must be a number from 0 to "
                                 f"{protocol.MAX_PRICE:g}, not {price!r}")
        return cls(**values)

    def privacy(self) -> dict:
        """The privacy settings in force, as sent in ``cluster.start`` (auditable on the server)."""
        return {"code.transmit": self.code_transmit, "profile.transmit": self.profile_transmit,
                "events.allow": list(self.events_allow)}

    def as_dict(self) -> dict:
        """All settings except the token."""
        return {key: value for key, value in asdict(self).items() if key != "token"}
