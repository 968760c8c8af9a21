"""Where Parsl puts its logs, and what a log's path says: the component that wrote it and
the ids its folders name (`<label>/block-<N>/<manager>/worker_<M>.log`).

>>> parsl_path_info("runinfo/000/htex/block-0/ab12/worker_3.jsonlog")
('worker', {'executor_label': 'htex', 'block_id': '0', 'manager_id': 'ab12', 'worker_id': '3'})
"""

from __future__ import annotations

import re

# <label>/block-<N>/<manager uid>/(manager|worker_<M>).(log|jsonlog)
_EXECUTOR_SIDE = re.compile(
    r"(?:^|/)(?P<label>[^/]+)/block-(?P<block>[^/]+)/(?P<manager>[^/]+)/"
    r"(?:manager|worker_(?P<worker>\d+))\.(?:log|jsonlog)$"
)
_INTERCHANGE = re.compile(r"(?:^|/)(?P<label>[^/]+)/(?:interchange|monitoring_zmq_router)\.(?:log|jsonlog)$")


def parsl_path_info(path: str) -> tuple[str, dict[str, str]]:
    """(component, stamps) of a Parsl log at `path` (a compression suffix is ignored)."""
    path = path.removesuffix(".gz")
    stem = path.rsplit("/", 1)[-1].rsplit(".", 1)[0]
    match = _EXECUTOR_SIDE.search(path)
    if match:
        stamps = {"executor_label": match["label"], "block_id": match["block"], "manager_id": match["manager"]}
        if match["worker"] is not None:
            stamps["worker_id"] = match["worker"]
            return "worker", stamps
        return "manager", stamps
    match = _INTERCHANGE.search(path)
    if match:
        component = "interchange" if stem == "interchange" else "router"
        return component, {"executor_label": match["label"]}
    if stem == "parsl":
        return "parsl", {}
    if stem == "database_manager":
        return "dbm", {}
    if stem.startswith("monitoring_"):
        return "router", {}
    return "log", {}
