"""Each run waiting at a gate as a structured request, in Agent Inbox's vocabulary.

LangGraph's Agent Inbox shows a `HumanInterrupt`: an `action_request` (the
action asked about and its `args`), a `config` saying which answers are allowed
(`allow_accept`, `allow_edit`, `allow_respond`, `allow_ignore`) and a
`description`. A gate's request is that, built from the gate's spec: the action
is the gate, the args are what its request shows, editing is allowed when the
gate declares what may be edited (`edit_schema` is that model's JSON schema),
and the answers map onto approval rows:

- accept: `decision = 'approved'`, no payload;
- edit: `decision = 'approved'` with a payload the schema accepts;
- respond: `decision = 'rejected'` with a `comment` the graph receives (a
  proposal made again with it, for instance);
- ignore: `decision = 'rejected'` with no comment.

`GET /inbox` lists them, longest waiting first; the console's inbox draws the
same requests as cards.
"""

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from engine.app import App
from engine.db.connections import Pool
from engine.db.queries import QUERIES
from engine.db.status import PENDING_LIKE, PENDING_PREFIX
from engine.runtime.waits import GateWait, UnclaimableWait, parse_wait
from engine.runtime.workflow import Gate
from engine.service.answers import GUARDED, refusals
from engine.service.previews import pruned

PAGE = 50
MAX_PAGE = 200
ARGS_PREVIEW_BYTES = 16 * 1024  # of each request's args: what a run's state holds is unbounded


class ActionRequest(BaseModel):
    action: str = Field(description="The gate the run waits at")
    args: dict[str, Any] = Field(description="What the gate's request shows the approver")


class AllowedAnswers(BaseModel):
    """Agent Inbox's `HumanInterruptConfig`."""

    allow_accept: bool = Field(description="Approve as asked")
    allow_edit: bool = Field(description="Approve with changes the edit schema accepts")
    allow_respond: bool = Field(description="Reject with a comment the graph receives")
    allow_ignore: bool = Field(description="Reject without a comment")


class GateRequest(BaseModel):
    """One run waiting at a gate (Agent Inbox's `HumanInterrupt`, with the run it is for)."""

    run_id: str
    project: str
    workflow: str | None
    gate: str
    title: str | None = Field(description="The gate's title, when its workflow declares it")
    description: str | None
    action_request: ActionRequest
    config: AllowedAnswers
    edit_schema: dict[str, Any] | None = Field(
        description="JSON schema of an approval's payload at this gate (null: no edits)"
    )
    pause_id: int | None = Field(description="The pause an approval must name")
    deadline: datetime | None = Field(description="When the gate stops waiting, if it does")
    waiting_since: datetime


class Inbox(BaseModel):
    total: int = Field(description="Runs waiting at a gate in all")
    requests: list[GateRequest] = Field(description="Those waiting longest, first")


def requests_router(pool: Pool, served: App) -> APIRouter:
    router = APIRouter()

    @router.get(
        "/inbox",
        summary="List the runs waiting at a gate, as Agent Inbox's structured requests",
        responses=refusals(*GUARDED),
    )
    async def inbox(limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = PAGE) -> Inbox:
        """The `limit` runs waiting longest at a gate, each with what it asks and which
        answers it takes (accept, edit, respond, ignore), and how many wait in all."""
        async with pool.connection() as conn:
            runs = await waiting_at_gates(conn, limit)
        return Inbox(
            total=runs[0]["waiting_total"] if runs else 0,
            requests=[gate_request(run, served) for run in runs],
        )

    return router


async def waiting_at_gates(conn: Any, limit: int) -> list[dict[str, Any]]:
    """The runs waiting longest at a gate, each with the approval sent for it that no
    worker has taken up yet, if any."""
    cursor = await conn.execute(QUERIES["inbox"], {"pending_like": PENDING_LIKE, "limit": limit})
    return [dict(row) for row in await cursor.fetchall()]


def gate_request(run: dict[str, Any], served: App) -> GateRequest:
    """The request of `run` (a row of the runs waiting at gates) as its gate declares it."""
    wait = _gate_wait(run)
    gate_name = wait.gate if wait is not None else run["status"].removeprefix(PENDING_PREFIX)
    spec: Gate | None = served.gate(run["workflow"], gate_name) if run["workflow"] else None
    edits = spec.edits if spec is not None else None
    return GateRequest(
        run_id=run["run_id"],
        project=run["project"],
        workflow=run["workflow"],
        gate=gate_name,
        title=spec.title if spec is not None else None,
        description=(spec.description or None) if spec is not None else None,
        action_request=ActionRequest(
            action=gate_name,
            args=pruned(dict(wait.request), budget=ARGS_PREVIEW_BYTES) if wait is not None else {},
        ),
        config=allowed_answers(spec),
        edit_schema=edits.model_json_schema() if edits is not None else None,
        pause_id=wait.pause_id if wait is not None else None,
        deadline=wait.wake_at if wait is not None else None,
        waiting_since=run["updated_at"],
    )


def allowed_answers(spec: Gate | None) -> AllowedAnswers:
    """Every gate takes an approval and a rejection, with a comment or without; an edit
    only where the gate declares what may change."""
    return AllowedAnswers(
        allow_accept=True,
        allow_edit=spec is not None and spec.edits is not None,
        allow_respond=True,
        allow_ignore=True,
    )


def _gate_wait(run: dict[str, Any]) -> GateWait | None:
    try:
        wait = parse_wait(run["waiting_for"])
    except UnclaimableWait:
        return None  # paused by plain SQL, or by an older version: the status names the gate
    return wait if isinstance(wait, GateWait) else None
