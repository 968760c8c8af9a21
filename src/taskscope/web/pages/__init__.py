"""One module per page; each defines `router` with an HTML view and its `/api/...` JSON twin."""

from taskscope.web import ids  # noqa: F401 (first: registers the run_id path convertor the routes use)
from taskscope.web.pages import compare, dag, gantt, logs, resources, run, runs, task, tasks, usage

ROUTERS = [runs.router, run.router, tasks.router, task.router, dag.router, gantt.router, resources.router,
           logs.router, compare.router, usage.router]
