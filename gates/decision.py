"""Asking a person: pause the run at a gate and read the approval it is resumed with."""

from dataclasses import dataclass, field
from typing import Any

from langgraph.types import interrupt


@dataclass(frozen=True)
class Decision:
    approved: bool
    comment: str | None = None
    approver: str | None = None
    payload: dict[str, Any] = field(default_factory=dict)


def ask(gate: str, **request: Any) -> Decision:
    """Pause at `gate` (status `pending_<gate>`) until an approval row arrives.

    The node that calls this runs again from its first line on resume, so it
    must do nothing with side effects before calling it.
    """
    approval = interrupt({"gate": gate, **request})
    return Decision(
        approved=approval.get("decision", "approved") == "approved",
        comment=approval.get("comment"),
        approver=approval.get("approver"),
        payload=approval.get("payload") or {},
    )
