"""The production gates' deadlines (docs/time.md, "Gate deadlines"): off unless set."""

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from engine import Duration, Durations

OnDeadline = Literal["reject", "approve", "fail", "escalate"]


class GateSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ORCHESTRATOR_", env_file=".env", extra="ignore")

    workflow_gate_deadline: Duration | None = Field(
        default=None,
        description="how long the workflow gate waits for a person (e.g. 48h); unset: for ever",
    )
    workflow_gate_on_deadline: OnDeadline = Field(
        default="reject",
        description="what the workflow gate decides at its deadline: reject (Brendan proposes "
        "again), approve (the proposal as it is), fail, or escalate (to admins)",
    )
    publish_gate_deadline: Duration | None = Field(
        default=None,
        description="how long the publish gate waits for a person (e.g. 72h); unset: for ever",
    )
    publish_gate_on_deadline: OnDeadline = Field(
        default="reject",
        description="what the publish gate decides at its deadline: reject (back to Brendan), "
        "approve (publish), fail, or escalate (to admins)",
    )
    gate_reminders: Durations = Field(
        default=(),
        description="when to remind approvers before a gate's deadline, e.g. 24h,1h",
    )
