"""The composition root: Brendan, the workflow gate, the crew, the publish gate and the
publisher's hold until the approved time."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Annotated

from langgraph.graph import START, StateGraph
from pydantic import BaseModel, ConfigDict, Field

from engine import Config, Graph, RunContext, Workflow
from gates.production import GATES, publish_gate, workflow_gate
from personas.brendan import make_brendan
from personas.crew import make_script_writer
from personas.editor import ShotstackRenderStep
from personas.media import KieImageStep
from personas.model import load_chat_model
from personas.provider_step import WaitPolicy, add_provider_step
from personas.publisher import UploadPostStep
from personas.settings import PersonaSettings
from personas.state import CREW, PUBLISHER, PUBLISHER_HOLD, ProductionState, next_step
from providers.clients import ProviderClients
from providers.settings import ProviderSettings

# Bump when a change makes old checkpoints unsafe to resume on this graph.
GRAPH_VERSION = "production-2"


class ProductionInput(BaseModel):
    """What the personas read from a run's payload, and nothing else: any other key would
    reach the graph's state (a script, media, jobs) without an approver seeing it."""

    model_config = ConfigDict(extra="forbid", strict=True)
    brief: str = Field(default="", max_length=20_000)  # Brendan and the crew
    # The publisher's targets; upload-post refuses names it does not know.
    platforms: list[Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,39}$")]] = Field(
        default_factory=list, max_length=10
    )


@asynccontextmanager
async def production_graph(config: Config) -> AsyncIterator[Graph]:
    """The graph, with the chat models and one HTTP client for the daemon's lifetime,
    shared by every run and closed when the daemon stops."""
    settings, personas = config[ProviderSettings], config[PersonaSettings]
    callback = config.engine.public_base_url + "/webhooks/"
    policy = WaitPolicy(
        poll_interval=timedelta(seconds=settings.provider_poll_interval),
        job_timeout=timedelta(seconds=settings.provider_job_timeout),
        adopt_window=timedelta(seconds=settings.provider_adopt_window),
    )
    async with ProviderClients(settings) as clients:
        builder = StateGraph(ProductionState, context_schema=RunContext)
        builder.add_node("brendan", make_brendan(load_chat_model(personas, "brendan")))
        builder.add_node(
            "workflow_gate", workflow_gate, destinations=("brendan", "publish_gate", *CREW)
        )
        builder.add_node(
            "script_writer", make_script_writer(load_chat_model(personas, "script_writer"))
        )
        builder.add_conditional_edges("script_writer", next_step)
        publisher = UploadPostStep(
            clients.upload_post,
            settings.upload_post_user,
            frozenset(settings.upload_post_schedulable_platforms),
        )
        for step in (
            KieImageStep(clients.kie, callback + "kie"),
            ShotstackRenderStep(clients.shotstack, callback + "shotstack"),
            publisher,
        ):
            add_provider_step(builder, step, policy)
        builder.add_node("publish_gate", publish_gate, destinations=("brendan", PUBLISHER_HOLD))
        builder.add_node(PUBLISHER_HOLD, publisher.hold)
        builder.add_edge(PUBLISHER_HOLD, PUBLISHER)
        builder.add_edge(START, "brendan")
        builder.add_edge("brendan", "workflow_gate")
        yield builder.compile()


PRODUCTION = Workflow(
    name="production",
    version=GRAPH_VERSION,
    build=production_graph,
    input_schema=ProductionInput,
    gates=GATES,
)
