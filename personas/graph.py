"""The composition root: Brendan, the workflow gate, the crew, the publish gate."""

from langgraph.graph import START, StateGraph

from engine.settings import Settings
from engine.workflow import RunContext, Workflow
from gates.production import publish_gate, workflow_gate
from personas.brendan import make_brendan
from personas.crew import editor, make_script_writer, media, publisher
from personas.model import load_chat_model
from personas.state import CREW, ProductionState, next_step

# Bump when a change makes old checkpoints unsafe to resume on this graph.
GRAPH_VERSION = "production-1"


def production_workflow() -> Workflow:
    model = load_chat_model(Settings().chat_model)
    builder = StateGraph(ProductionState, context_schema=RunContext)
    builder.add_node("brendan", make_brendan(model))
    builder.add_node(
        "workflow_gate", workflow_gate, destinations=("brendan", "publish_gate", *CREW)
    )
    builder.add_node("script_writer", make_script_writer(model))
    builder.add_node("media", media)
    builder.add_node("editor", editor)
    builder.add_node("publish_gate", publish_gate, destinations=("brendan", "publisher"))
    builder.add_node("publisher", publisher)
    builder.add_edge(START, "brendan")
    builder.add_edge("brendan", "workflow_gate")
    for persona in CREW:
        builder.add_conditional_edges(persona, next_step)
    return Workflow("production", GRAPH_VERSION, builder.compile())
