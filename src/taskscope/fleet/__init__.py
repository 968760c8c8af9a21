"""Fleet analytics: a self-hosted, auditable Coiled Analytics for Dask, with Parsl runs alongside.

Parts (one module each):

- `taskscope.fleet.protocol`: the wire format between plugin/uploader and server (the contract).
- `taskscope.fleet.dask`: the Dask scheduler plugin (`register()`, `dask_setup` for `--preload`).
- `taskscope.fleet.sender`: batching HTTP sender with a local spool (used by the plugin).
- `taskscope.fleet.server`: the FastAPI server (`taskscope fleet serve`), accounts and tokens.
- `taskscope.fleet.db`: the server's DuckDB store.
- `taskscope.fleet.api`: `list_clusters`, `list_computations`, `list_events`, `list_exceptions`, `list_profiles`.
- `taskscope.fleet.profiles`: Dask profile trees merged and flattened for the profile view.

Importing this package needs neither Dask nor the server's dependencies.
"""


def __getattr__(name: str):
    # the Python API at package level (taskscope.fleet.list_clusters), imported on first use
    if name in ("list_clusters", "list_computations", "list_events", "list_exceptions", "list_profiles"):
        from taskscope.fleet import api

        return getattr(api, name)
    raise AttributeError(f"module 'taskscope.fleet' has no attribute {name!r}")
