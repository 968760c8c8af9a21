"""Span records name the user's code: file, function and line of the `with` / `async with`
statement, or of the call of a decorated function (the await of a decorated coroutine; the
function itself when the event loop runs it as a task). Both records of a span name the same
place, on success and on error."""

from __future__ import annotations

import asyncio
import json
import logging
import sys

import pytest

from taskscope.emit import WideEventHandler, span


class Recorder(logging.Handler):
    """Keeps every record it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def spans(request):
    """(logger name, records): a fresh logger that keeps its records, for `span(logger=...)`."""
    logger = logging.getLogger(f"test_emit_spans.{request.node.name}")
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    recorder = Recorder()
    logger.addHandler(recorder)
    yield logger.name, recorder.records
    logger.removeHandler(recorder)


def next_line() -> int:
    """The line after the caller's current one."""
    return sys._getframe(1).f_lineno + 1


def sites(records: list[logging.LogRecord]) -> dict[str, tuple[str, str, int]]:
    """Each span record's event -> (pathname, funcName, lineno)."""
    return {record.event: (record.pathname, record.funcName, record.lineno)
            for record in records if hasattr(record, "event")}


def both(name: str, func: str, line: int) -> dict[str, tuple[str, str, int]]:
    """What `sites` gives for a span `name` opened in this file at `func`, `line`."""
    return {f"{name}.start": (__file__, func, line), f"{name}.end": (__file__, func, line)}


def test_with_block_names_the_with_line(spans):
    logger, records = spans
    line = next_line()
    with span("block", logger=logger):
        pass
    failing = next_line()
    with pytest.raises(KeyError), span("failing", logger=logger):
        raise KeyError("x")
    here = "test_with_block_names_the_with_line"
    assert sites(records) == {**both("block", here, line), **both("failing", here, failing)}
    assert records[-1].outcome == "error"


def test_async_with_names_the_async_with_line(spans):
    logger, records = spans
    lines = {}

    async def stage() -> None:
        lines["stage"] = next_line()
        async with span("stage", logger=logger):
            await asyncio.sleep(0)
        lines["failing"] = next_line()
        async with span("failing", logger=logger):
            raise ValueError("x")

    with pytest.raises(ValueError):
        asyncio.run(stage())
    assert sites(records) == {**both("stage", "stage", lines["stage"]), **both("failing", "stage", lines["failing"])}


def test_decorated_function_names_where_it_is_called(spans):
    logger, records = spans

    @span("inner", logger=logger)
    def inner(x: int) -> int:
        if x < 0:
            raise ValueError(x)
        return x

    @span("outer", logger=logger)
    def outer() -> int:
        return inner(1)  # the line inner's records name

    inner_line = outer.__wrapped__.__code__.co_firstlineno + 2
    outer_line = next_line()
    assert outer() == 1
    assert sites(records) == {**both("inner", "outer", inner_line),
                              **both("outer", "test_decorated_function_names_where_it_is_called", outer_line)}
    records.clear()
    with pytest.raises(ValueError):
        failing = next_line()
        inner(-1)
    assert sites(records) == both("inner", "test_decorated_function_names_where_it_is_called", failing)
    assert records[-1].outcome == "error"


def test_decorated_coroutine_names_where_it_is_awaited(spans):
    logger, records = spans
    lines = {}

    @span("fetch", logger=logger)
    async def fetch(fail: bool) -> int:
        if fail:
            raise ValueError("x")
        return 1

    async def main() -> None:
        lines["ok"] = next_line()
        assert await fetch(False) == 1
        records.append(logging.makeLogRecord({"msg": "between"}))
        lines["failing"] = next_line()
        await fetch(True)

    with pytest.raises(ValueError):
        asyncio.run(main())
    split = next(i for i, record in enumerate(records) if record.msg == "between")
    assert sites(records[:split]) == both("fetch", "main", lines["ok"])
    assert sites(records[split:]) == both("fetch", "main", lines["failing"])


def test_decorated_coroutine_run_as_a_task_names_the_function(spans):
    logger, records = spans
    line = next_line() + 1  # the function's first line: its decorator

    @span("task", logger=logger)
    async def task() -> int:
        return 1

    async def gathered() -> list[int]:
        return await asyncio.gather(task(), task())

    assert asyncio.run(task()) == 1 and asyncio.run(gathered()) == [1, 1]
    assert len(records) == 6
    assert {(r.pathname, r.funcName, r.lineno) for r in records} == {(__file__, "task", line)}


def test_wide_event_handler_writes_the_call_sites(tmp_path):
    """QA's reproduction: the JSON lines of a WideEventHandler name the user's file, not context.py."""
    handler = WideEventHandler(tmp_path / "out.jsonlog")
    logger = logging.getLogger("test_emit_spans.wide")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    logger.addHandler(handler)
    try:

        @span("simulate", logger=logger)
        def simulate(x: int) -> int:
            return x

        simulate_line = next_line()
        simulate(1)
        block_line = next_line()
        with span("block", logger=logger):
            pass
        handler.flush()
    finally:
        logger.removeHandler(handler)
        handler.close()
    here = "test_wide_event_handler_writes_the_call_sites"
    written = {event["event"]: (event["pathname"], event["funcName"], event["lineno"])
               for event in map(json.loads, (tmp_path / "out.jsonlog").read_text().splitlines())}
    assert written == {**both("simulate", here, simulate_line), **both("block", here, block_line)}
