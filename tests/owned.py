"""An App whose workflow owns a resource: built from the settings, closed on shutdown.

The resource is a file that says `open` while the daemon runs and `closed` after
(its path in `ORCHESTRATOR_OWNED_RESOURCE_FILE`), so a test in another process can tell.
"""

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TypedDict

from langgraph.graph import START, StateGraph

from engine import App, Config, Workflow
from engine.runtime.workflow import Graph


class Counted(TypedDict, total=False):
    greeting: str


@asynccontextmanager
async def greeter(config: Config) -> AsyncIterator[Graph]:
    marker = Path(os.environ["ORCHESTRATOR_OWNED_RESOURCE_FILE"])
    await asyncio.to_thread(marker.write_text, "open")
    worker = config.engine.worker_id

    def greet(state: Counted) -> Counted:
        return {"greeting": f"hello from {worker}"}

    builder = StateGraph(Counted)
    builder.add_node("greet", greet)
    builder.add_edge(START, "greet")
    try:
        yield builder.compile()
    finally:
        await asyncio.to_thread(marker.write_text, "closed")


app = App(workflows=[Workflow(name="greeter", version="1", build=greeter)])
