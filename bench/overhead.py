"""Per-run overhead: the reference graph through the engine, bare LangGraph and DBOS.

Each system runs `n1 → n2 → gate → n4 → n5` with no-op nodes, one run at a
time, resumed by an approval, all three in this process on one event loop
(uvloop, as the services run) and one PostgreSQL database, interleaved in
rounds so that drift hits them alike:

- engine: an in-process `engine.runtime.daemon.Daemon` (LISTEN on, concurrency 8,
  telemetry off as a directly constructed Daemon has it); a run is timed from
  the client's `INSERT INTO runs` through the claim, the nodes up to the gate,
  `pending_review` committed, the approval `INSERT`, the second claim and
  resume, to `published` committed. The client learns of each commit from the
  executor's `run_paused` / `run_finished` log records, so it neither polls
  nor adds load.
- bare LangGraph: `AsyncPostgresSaver` over the same kind of pool, `ainvoke`
  with `durability="sync"` to the interrupt, then `Command(resume=approval)`.
- DBOS Transact: a workflow of four `@DBOS.step`s and `DBOS.recv_async` as the
  gate, started with `DBOS.start_workflow_async` and approved with
  `DBOS.send_async` once it waits; its system tables live in the same database.

    python -m bench.overhead [--rounds 20] [--per-round 10]
"""

import argparse
import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from langgraph.types import Command
from psycopg import AsyncConnection
from pydantic import SecretStr

from bench import reference
from bench.harness import scratch_database, summary
from engine.cli import run_async
from engine.db.connections import open_pool
from engine.observability.logs import run_context
from engine.runtime.daemon import Daemon
from engine.runtime.store import new_run_id
from engine.settings import Settings

RunOnce = Callable[[], Awaitable[float]]


class Commits(logging.Handler):
    """Resolves a future when the executor logs a run's status commit."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self._waiting: dict[tuple[str, str], asyncio.Future[None]] = {}

    def expect(self, run_id: str, action: str) -> asyncio.Future[None]:
        future = asyncio.get_running_loop().create_future()
        self._waiting[(run_id, action)] = future
        return future

    def emit(self, record: logging.LogRecord) -> None:
        run_id, action = _run_id(record), getattr(record, "action", None)
        if action == "run_failed":
            for (waiting_id, _), future in self._waiting.items():
                if waiting_id == run_id and not future.done():
                    future.set_exception(RuntimeError(f"run {run_id} failed"))
        waiter = self._waiting.pop((str(run_id), str(action)), None)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


def _run_id(record: logging.LogRecord) -> str | None:
    """The run a record is about: its `run_id`, else the engine's logging context's."""
    run_id = getattr(record, "run_id", None) or run_context.get().get("run_id")
    return None if run_id is None else str(run_id)


def _settings(url: str) -> Settings:
    return Settings(database_url=SecretStr(url), concurrency=8, log_level="WARNING")


@asynccontextmanager
async def engine_runs(url: str) -> AsyncIterator[RunOnce]:
    settings = _settings(url)
    workflows = {reference.NAME: reference.reference_workflow()}
    commits = Commits()
    executor_log = logging.getLogger("engine.runtime.executor")
    executor_log.addHandler(commits)
    executor_log.setLevel(logging.INFO)
    stop = asyncio.Event()
    client = await AsyncConnection.connect(url, autocommit=True)

    async def run_once() -> float:
        run_id = new_run_id()
        paused = commits.expect(run_id, "run_paused")
        finished = commits.expect(run_id, "run_finished")
        started = time.perf_counter()
        await client.execute(
            "INSERT INTO runs (run_id, project, status, payload, workflow) "
            "VALUES (%s, 'bench', 'queued', '{}', %s)",
            (run_id, reference.NAME),
        )
        await asyncio.wait_for(paused, 30)
        await client.execute(
            "INSERT INTO hitl_approvals (run_id, gate, approver) VALUES (%s, 'review', 'bench')",
            (run_id,),
        )
        await asyncio.wait_for(finished, 30)
        return (time.perf_counter() - started) * 1000

    try:
        async with client, open_pool(url, settings) as pool, asyncio.TaskGroup() as tasks:
            tasks.create_task(Daemon(url, pool, settings, workflows).serve(stop))
            try:
                yield run_once
            finally:
                stop.set()
    finally:
        executor_log.removeHandler(commits)


@asynccontextmanager
async def bare_runs(url: str) -> AsyncIterator[RunOnce]:
    async with open_pool(url, _settings(url)) as pool:
        graph = reference.reference_graph().compile(checkpointer=AsyncPostgresSaver(pool))

        async def run_once() -> float:
            config: Any = {"configurable": {"thread_id": new_run_id()}}
            started = time.perf_counter()
            paused = await graph.ainvoke({"project": "bench"}, config, durability="sync")
            assert "__interrupt__" in paused
            done = await graph.ainvoke(
                Command(resume=reference.APPROVAL), config, durability="sync"
            )
            assert done["visited"] == ["n1", "n2", "n4", "n5"], done
            return (time.perf_counter() - started) * 1000

        yield run_once


@asynccontextmanager
async def dbos_runs(url: str) -> AsyncIterator[RunOnce]:
    from bench import dbos_peer  # optional: `pip install .[bench]`

    async with dbos_peer.launched(url):
        yield dbos_peer.run_once


async def measure(url: str, rounds: int, per_round: int) -> dict[str, Any]:
    samples: dict[str, list[float]] = {"engine": [], "bare": [], "dbos": []}
    async with AsyncExitStack() as stack:
        systems = {
            "engine": await stack.enter_async_context(engine_runs(url)),
            "bare": await stack.enter_async_context(bare_runs(url)),
            "dbos": await stack.enter_async_context(dbos_runs(url)),
        }
        for run_once in systems.values():  # warm-up: imports, prepared statements, caches
            for _ in range(5):
                await run_once()
        order = list(systems)
        for round_ in range(rounds):
            for name in order[round_ % 3 :] + order[: round_ % 3]:
                for _ in range(per_round):
                    samples[name].append(await systems[name]())
    result: dict[str, Any] = {f"{name}_ms_per_run": summary(s) for name, s in samples.items()}
    engine = result["engine_ms_per_run"]["p50"]
    result["engine_vs_bare"] = round(engine / result["bare_ms_per_run"]["p50"], 2)
    result["engine_vs_dbos"] = round(engine / result["dbos_ms_per_run"]["p50"], 2)
    result["daemon"] = (
        "in-process engine.runtime.daemon.Daemon, concurrency 8, LISTEN/NOTIFY, telemetry off"
    )
    return result


def run(admin_url: str, *, quick: bool) -> dict[str, Any]:
    with scratch_database(admin_url) as url:
        return run_async(measure(url, rounds=6 if quick else 20, per_round=10))


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--per-round", type=int, default=10)
    args = parser.parse_args()
    with scratch_database() as url:
        result = run_async(measure(url, args.rounds, args.per_round))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
