"""A small real Academy program whose JSON logs the Academy tests ingest.

Two agents, each in its own process, talk through a local HTTP exchange: `Coordinator.total`
calls `Square.square` once per number (an action calling another agent's action), and the
user calls both agents directly too, once with an action that raises and once with one it
cancels. Academy's own
`JSONPoolLogging` writes one `.jsonlog` per process under `$ACADEMY_HOME/logs/<pool uuid>/`.

    ACADEMY_HOME=/tmp/academy python tests/academy_workflow.py PORT

prints one JSON line: the pool folder and the results, for the test to check.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from academy.agent import Agent, action
from academy.exchange.cloud.client import spawn_http_exchange
from academy.handle import Handle
from academy.home import get_academy_home
from academy.logging.configs.jsonpool import JSONPoolLogging
from academy.manager import Manager


class Square(Agent):
    """Squares numbers; refuses negative ones; waits when asked to."""

    @action
    async def square(self, number: int) -> int:
        if number < 0:
            raise ValueError(f"no square for negative {number}")
        return number * number

    @action
    async def wait(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class Coordinator(Agent):
    """Sums squares by asking the Square agent for each one."""

    def __init__(self, squarer: Handle[Square]) -> None:
        super().__init__()
        self.squarer = squarer

    @action
    async def total(self, numbers: list[int]) -> int:
        squares = [await self.squarer.square(number) for number in numbers]
        return sum(squares)


async def started(logs: Path, action_name: str) -> None:
    """Return once an agent's log in `logs` says it began action `action_name`."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for log in logs.glob("*.jsonlog"):
            for line in log.read_text().splitlines():
                try:
                    record = json.loads(line)
                except ValueError:  # a line still being written
                    continue
                if record.get("academy.action") == action_name and record.get("academy.action_state") == "execute_start":
                    return
        await asyncio.sleep(0.1)
    raise TimeoutError(f"no agent began action {action_name} in 60 s")


async def run(port: int) -> dict[str, Any]:
    """Launch both agents in a process pool, call their actions, return what happened."""
    log_config = JSONPoolLogging()
    logs = get_academy_home() / "logs" / log_config.uuid
    spawn = multiprocessing.get_context("spawn")
    with spawn_http_exchange("127.0.0.1", port) as factory, \
            ProcessPoolExecutor(max_workers=2, mp_context=spawn) as pool:
        async with await Manager.from_exchange_factory(
            factory=factory, executors=pool, log_config=log_config,
        ) as manager:
            squarer = await manager.launch(Square)
            coordinator = await manager.launch(Coordinator, args=(squarer,))
            totals = [await coordinator.total([1, 2, 3]), await coordinator.total([4])]
            direct = await squarer.square(5)
            try:
                await squarer.square(-1)
                refused = False
            except ValueError:
                refused = True
            # cancelled by the requester once the agent runs it: Academy sends the agent a cancel request
            waiting = asyncio.ensure_future(squarer.wait(600))
            await started(logs, "wait")
            waiting.cancel()
            try:
                await waiting
                cancelled = False
            except asyncio.CancelledError:
                cancelled = True
            agents = {"Square": str(squarer.agent_id), "Coordinator": str(coordinator.agent_id)}
    return {
        "pool": str(logs),
        "agents": agents,
        "totals": totals,
        "direct": direct,
        "refused": refused,
        "cancelled": cancelled,
    }


if __name__ == "__main__":
    print(json.dumps(asyncio.run(run(int(sys.argv[1])))))
