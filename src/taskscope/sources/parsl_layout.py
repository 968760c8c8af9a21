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
# what rotation appends to a log's name: `parsl.log.1` (RotatingFileHandler, logrotate),
# `parsl.log.2026-12-07` or `.2026-12-07_10` (TimedRotatingFileHandler, dateext), `.old`
_ROTATION = re.compile(r"\.(?:\d{1,4}|\d{4}-?\d\d-?\d\d(?:[-_T]\d\d(?:-?\d\d){0,2})?|old|bak)$")


def _without_rotation(path: str) -> str:
    """`path` without the suffixes rotation appended to a log's name (`x.log.3.old` -> `x.log`);
    a name that does not then end in `.log` or `.jsonlog` is left as it is."""
    stripped = path
    while _ROTATION.search(stripped):
        stripped = _ROTATION.sub("", stripped)
        if stripped.endswith((".log", ".jsonlog")):
            return stripped
    return path


def parsl_path_info(path: str) -> tuple[str, dict[str, str]]:
    """(component, stamps) of a Parsl log at `path` (a compression suffix and what rotation
    appends to a name are ignored).

    >>> parsl_path_info("runinfo/000/htex/interchange.log.1.gz"), parsl_path_info("000/parsl.log.2026-12-07")
    (('interchange', {'executor_label': 'htex'}), ('parsl', {}))
    """
    path = _without_rotation(path.removesuffix(".gz"))
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
