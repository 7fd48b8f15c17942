"""The composition root: Brendan, the workflow gate, the crew, the publish gate."""

from datetime import timedelta
from typing import Annotated

from langgraph.graph import START, StateGraph
from pydantic import BaseModel, ConfigDict, Field

from engine.settings import Settings
from engine.workflow import RunContext, Workflow, takes_input
from gates.production import publish_gate, workflow_gate
from personas.brendan import make_brendan
from personas.crew import make_script_writer
from personas.editor import ShotstackRenderStep
from personas.media import KieImageStep
from personas.model import load_chat_model
from personas.provider_step import WaitPolicy, add_provider_step
from personas.publisher import UploadPostStep
from personas.state import CREW, ProductionState, next_step
from providers.clients import ProviderClients

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


@takes_input(ProductionInput)
def production_workflow() -> Workflow:
    settings = Settings()
    model = load_chat_model(settings.chat_model)
    # One HTTP client for the daemon's lifetime, shared by every run.
    clients = ProviderClients(settings)
    callback = settings.callback_base_url + "/webhooks/"
    policy = WaitPolicy(
        poll_interval=timedelta(seconds=settings.provider_poll_interval),
        job_timeout=timedelta(seconds=settings.provider_job_timeout),
    )
    builder = StateGraph(ProductionState, context_schema=RunContext)
    builder.add_node("brendan", make_brendan(model))
    builder.add_node(
        "workflow_gate", workflow_gate, destinations=("brendan", "publish_gate", *CREW)
    )
    builder.add_node("script_writer", make_script_writer(model))
    builder.add_conditional_edges("script_writer", next_step)
    for step in (
        KieImageStep(clients.kie, callback + "kie"),
        ShotstackRenderStep(clients.shotstack, callback + "shotstack"),
        UploadPostStep(clients.upload_post, settings.upload_post_user),
    ):
        add_provider_step(builder, step, policy)
    builder.add_node("publish_gate", publish_gate, destinations=("brendan", "publisher"))
    builder.add_edge(START, "brendan")
    builder.add_edge("brendan", "workflow_gate")
    return Workflow("production", GRAPH_VERSION, builder.compile())
