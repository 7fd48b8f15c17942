"""LangGraph's own checkpointer suite (`langgraph-checkpoint-conformance`) against FencedSaver.

The suite drives one checkpointer over many threads; the engine gives each run
its own saver, fenced by the run's lease. The adapter does what the daemon's
claim does, per thread: a `runs` row held at an epoch, and a FencedSaver for
it. Every call goes to the saver of the thread it names.

Capabilities the saver refuses on purpose are skipped with the reason
(`REFUSED`): the rest must pass in full.
"""

from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack
from datetime import timedelta
from typing import Any

import pytest
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
)
from langgraph.checkpoint.conformance import checkpointer_test, validate
from langgraph.checkpoint.conformance.capabilities import Capability

from engine.db.connections import Pool, open_pool
from engine.runtime.lease import Lease
from engine.runtime.saver import FencedSaver
from engine.runtime.session import RunSession
from engine.settings import Settings

TTL = timedelta(minutes=5)
REFUSED = {
    Capability.DELETE_FOR_RUNS: "deletes by LangGraph run id across every thread: one run's "
    "lease cannot fence the others' rows (FencedSaver refuses it)",
    Capability.COPY_THREAD: "writes a thread no lease holds: a copy would be a run no worker "
    "claimed (FencedSaver refuses it)",
}


class LeasedRuns(BaseCheckpointSaver[str]):
    """The checkpointer interface over one FencedSaver per thread, each over the
    session of a leased run (as the executor opens one per claim)."""

    def __init__(self, pool: Pool, savers: AsyncExitStack) -> None:
        super().__init__()
        self._pool = pool
        self._stack = savers
        self._savers: dict[str, FencedSaver] = {}

    async def _saver(self, thread_id: str) -> FencedSaver:
        if thread_id not in self._savers:
            async with self._pool.connection() as conn:
                await conn.execute(
                    "INSERT INTO runs (run_id, project, status, workflow, lease_owner, "
                    "lease_expires_at, lease_epoch) "
                    "VALUES (%s, 'conformance', 'running', 'conformance', 'suite', "
                    "NOW() + %s, 1)",
                    (thread_id, TTL),
                )
            session = RunSession(self._pool, Lease(thread_id, 1, TTL))
            await self._stack.enter_async_context(session)
            self._savers[thread_id] = FencedSaver(session)
        return self._savers[thread_id]

    async def _for(self, config: RunnableConfig) -> FencedSaver:
        return await self._saver(str(config["configurable"]["thread_id"]))

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return await (await self._for(config)).aget_tuple(config)

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        assert config is not None, "the suite always names a thread"
        saver = await self._for(config)
        async for found in saver.alist(config, filter=filter, before=before, limit=limit):
            yield found

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        return await (await self._for(config)).aput(config, checkpoint, metadata, new_versions)

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        await (await self._for(config)).aput_writes(config, writes, task_id, task_path)

    async def adelete_thread(self, thread_id: str) -> None:
        await (await self._saver(str(thread_id))).adelete_thread(thread_id)

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        for thread_id in thread_ids:
            await (await self._saver(str(thread_id))).aprune([thread_id], strategy=strategy)


@pytest.mark.parametrize(
    "capability",
    [
        pytest.param(capability, marks=pytest.mark.skip(reason=REFUSED[capability]))
        if capability in REFUSED
        else capability
        for capability in Capability
    ],
    ids=lambda capability: capability.value,
)
async def test_langgraph_conformance(db_url: str, capability: Capability) -> None:
    settings = Settings()
    async with open_pool(db_url, settings) as pool:

        @checkpointer_test(name="FencedSaver")
        async def leased_runs() -> AsyncIterator[BaseCheckpointSaver[str]]:
            async with AsyncExitStack() as savers:
                yield LeasedRuns(pool, savers)

        report = await validate(leased_runs, capabilities={capability.value})
    result = report.results[capability.value]
    assert result.detected, f"the adapter does not implement {capability.value}"
    assert result.passed, "\n".join(result.failures)
