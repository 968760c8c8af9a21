"""Parsl JSON logs (`*.jsonlog`, written by `parsl.logconfigs.JSONLogging` or taskscope's
`WideEventLogging`): the DFK, interchange, manager, worker and database manager.

Each record's `parsl.*` fields (`parsl.task`, `parsl.dfk`, `parsl.executor_task`, ...) map to
columns (see `json_fields`); ids the path gives (executor label, block, manager, worker)
fill what the record does not say.
"""

from __future__ import annotations

from taskscope.sources import Sample, Source
from taskscope.sources.jsonlines import stage_lines
from taskscope.sources.parsl_layout import parsl_path_info

__all__ = ["SOURCE", "stage_lines"]


def is_parsl_jsonlog(sample: Sample) -> bool:
    """Parsl's JSON logs are known by name (`*.jsonlog`): a damaged first line still leaves
    the rest of the file to read, and kept aside, the damage.

    >>> is_parsl_jsonlog(Sample("worker_0.jsonlog", b""))
    True
    """
    return sample.name.endswith(".jsonlog")


# first: these logs carry epoch times, which teach the run's UTC offset to the formats with local times
SOURCE = Source(name="parsl_jsonlog", recognise=is_parsl_jsonlog, order=0, stage_lines=stage_lines,
                from_path=parsl_path_info)
