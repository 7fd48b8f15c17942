"""The production graph's state and the order in which personas run."""

from typing import Any, Literal, Protocol, TypedDict, get_args

from langgraph.graph import END
from langgraph.runtime import Runtime

from engine import RunContext

Persona = Literal["script_writer", "media", "editor", "publisher"]
CREW: tuple[Persona, ...] = get_args(Persona)
PUBLISHER = "publisher"
# What a persona works on that another makes before it: (that persona, what it makes).
# The workflow gate refuses a workflow that breaks one; Brendan is told them.
NEEDS: dict[Persona, tuple[Persona, str]] = {"publisher": ("editor", "video")}
PUBLISHER_HOLD = "publisher_hold"  # waits until the approved publish_at, when it must


class ProductionState(TypedDict, total=False):
    project: str
    brief: str
    proposal: list[str]  # Brendan's latest proposal
    feedback: list[str]  # comments of rejections, oldest first
    workflow: list[str]  # the approved workflow
    done: list[str]  # personas of the approved workflow that have finished
    publish_approved: bool
    publish_at: str | None  # the publish gate's approved time (ISO, UTC); None: at once
    scheduled_for: str | None  # the time upload-post is to post at (the hold decided)
    platforms: list[str]  # where the publisher posts (from the payload)
    jobs: dict[str, dict[str, Any]]  # persona -> the provider job it waits for
    script: str
    media: list[dict[str, Any]]
    render: dict[str, Any]
    publication: dict[str, Any]


class PersonaNode(Protocol):
    async def __call__(
        self, state: ProductionState, *, runtime: Runtime[RunContext]
    ) -> dict[str, Any]: ...


DEFAULT_PLATFORMS = ("tiktok",)


def platforms_of(state: ProductionState) -> list[str]:
    """Where the publisher posts: the run's platforms, else the default."""
    return list(state.get("platforms") or DEFAULT_PLATFORMS)


def round_of(state: ProductionState) -> int:
    """How many times the proposal was sent back: keys artifacts of each round apart."""
    return len(state.get("feedback", []))


def next_step(state: ProductionState) -> str:
    """The next persona of the approved workflow; the publisher only past the publish gate."""
    done = state.get("done", [])
    for persona in state.get("workflow", []):
        if persona not in done:
            if persona == PUBLISHER and not state.get("publish_approved"):
                return "publish_gate"
            return persona
    return END


def needs_sentences() -> str:
    """NEEDS as a model reads it: "The publisher needs the editor's video before it." """
    return " ".join(
        f"The {persona} needs the {needed}'s {what} before it."
        for persona, (needed, what) in NEEDS.items()
    )
