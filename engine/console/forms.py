"""The approval form: what an approver sent, checked before it reaches the database."""

import re
from dataclasses import dataclass
from typing import Any

from starlette.datastructures import FormData

from engine.store import InvalidInput

GATE = re.compile(r"^[a-z][a-z0-9_]{0,40}$")
MAX_COMMENT = 5_000
MAX_APPROVER = 200
# The production crew, offered in the workflow editor besides the names in the
# proposal itself. Display only: the engine imports no personas, and the gate
# validates the workflow it is given.
CREW = ("script_writer", "media", "editor", "publisher")


def proposal_of(waiting_for: dict[str, Any] | None) -> list[str]:
    proposal = (waiting_for or {}).get("proposal")
    if isinstance(proposal, list) and all(isinstance(name, str) for name in proposal):
        return proposal
    return []


def offered_personas(waiting_for: dict[str, Any] | None) -> list[str]:
    """The proposal in its order, then the rest of the crew."""
    proposal = proposal_of(waiting_for)
    return [*proposal, *(name for name in CREW if name not in proposal)]


@dataclass(frozen=True)
class ApprovalForm:
    gate: str
    rejected: bool
    approver: str
    comment: str | None
    workflow: list[str] | None  # the workflow as edited, when the form offered the editor
    pause_id: int | None  # the pause the form was shown for: refused if the run moved on

    def payload(self, waiting_for: dict[str, Any] | None) -> dict[str, Any] | None:
        """`{"workflow": [...]}` when the approver changed Brendan's proposal."""
        if self.rejected or self.workflow is None or self.workflow == proposal_of(waiting_for):
            return None
        return {"workflow": self.workflow}


def parse_approval(
    form: FormData, waiting_for: dict[str, Any] | None, identity: str | None = None
) -> ApprovalForm:
    """What the form asks; signed in, the approver is `identity`, whatever the form says."""
    gate = _text(form, "gate")
    if not GATE.match(gate):
        raise InvalidInput(f"gate: {gate!r} is not a gate name")
    decision = _text(form, "decision")
    if decision not in ("approved", "rejected"):
        raise InvalidInput(f"decision: must be 'approved' or 'rejected', not {decision!r}")
    approver = identity or _text(form, "approver").strip()
    if not approver:
        raise InvalidInput("approver: enter your name, so the approval says who gave it")
    if len(approver) > MAX_APPROVER:
        raise InvalidInput(f"approver: at most {MAX_APPROVER} characters")
    comment = _text(form, "comment").strip()
    if len(comment) > MAX_COMMENT:
        raise InvalidInput(f"comment: at most {MAX_COMMENT} characters")
    edited = _edited_workflow(form, waiting_for) if _text(form, "edit_workflow") else None
    pause = _text(form, "pause_id").strip()
    if pause and not (pause.isascii() and pause.isdigit() and len(pause) <= 18):
        raise InvalidInput(f"pause_id: {pause[:40]!r} is not a pause number")
    return ApprovalForm(
        gate,
        decision == "rejected",
        approver,
        comment or None,
        edited,
        int(pause) if pause else None,
    )


def _edited_workflow(form: FormData, waiting_for: dict[str, Any] | None) -> list[str]:
    offered = offered_personas(waiting_for)
    chosen = [_string(value, "persona") for value in form.getlist("persona")]
    if unknown := [name for name in chosen if name not in offered]:
        raise InvalidInput(
            f"workflow: unknown persona {unknown[0]!r} (choose from {', '.join(offered)})"
        )
    if not chosen:
        raise InvalidInput("workflow: tick at least one persona, or reject the proposal")

    def position(name: str) -> tuple[int, int]:
        given = _text(form, f"position_{name}").strip()
        if not given:
            return (offered.index(name) + 1, offered.index(name))
        if not given.isdigit() or not 1 <= int(given) <= 99:
            raise InvalidInput(f"workflow: the position of {name} must be 1 to 99, not {given!r}")
        return (int(given), offered.index(name))

    return sorted(dict.fromkeys(chosen), key=position)


def _text(form: FormData, field: str) -> str:
    return _string(form.get(field, ""), field)


def _string(value: object, field: str) -> str:
    if not isinstance(value, str):
        raise InvalidInput(f"{field}: expected text, not a file")
    return value
