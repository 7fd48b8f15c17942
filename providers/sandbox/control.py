"""`/_sandbox`: read and clear the call log, inject faults, change how jobs end, count
the jobs in flight."""

from dataclasses import asdict
from typing import Any, Literal

from fastapi import APIRouter, HTTPException, Response
from pydantic import BaseModel, Field

from providers.sandbox.state import Fault, Sandbox

router = APIRouter(prefix="/_sandbox")


class FaultSpec(BaseModel):
    provider: Literal["kie", "shotstack", "upload-post"]
    operation: str | None = None  # None: whichever of the provider's operations comes next
    status_code: int = Field(ge=400, le=599)
    times: int = Field(default=1, ge=1)
    retry_after: float | None = Field(default=None, ge=0)
    hard_cap: bool = False


class SettingsChange(BaseModel):
    job_latency: float | None = Field(default=None, ge=0)
    never_finish: bool | None = None
    fail_jobs: bool | None = None
    response_delay: float | None = Field(default=None, ge=0, le=60)


@router.get("/calls")
async def list_calls(
    state: Sandbox,
    provider: str | None = None,
    operation: str | None = None,
    run_id: str | None = None,
) -> list[dict[str, Any]]:
    return [call.as_json() for call in state.calls(provider, operation, run_id)]


@router.delete("/calls", status_code=204)
async def clear_calls(state: Sandbox) -> Response:
    state.clear_calls()
    return Response(status_code=204)


@router.get("/faults")
async def list_faults(state: Sandbox) -> list[Fault]:
    return state.faults


@router.post("/faults", status_code=201)
async def add_fault(spec: FaultSpec, state: Sandbox) -> Fault:
    if spec.operation is not None and (spec.provider, spec.operation) not in state.operations:
        known = sorted(op for provider, op in state.operations if provider == spec.provider)
        raise HTTPException(422, f"{spec.provider} has no operation {spec.operation!r}: {known}")
    fault = Fault(**spec.model_dump())
    state.faults.append(fault)
    return fault


@router.delete("/faults", status_code=204)
async def clear_faults(state: Sandbox) -> Response:
    state.faults.clear()
    return Response(status_code=204)


@router.get("/jobs")
async def count_jobs(state: Sandbox) -> dict[str, dict[str, int]]:
    """Per provider: `submitted`, `in_flight` now and `most_in_flight` at once, a job
    being in flight from its submit until it finishes."""
    return state.jobs()


@router.get("/config")
async def get_settings(state: Sandbox) -> dict[str, Any]:
    return asdict(state.settings)


@router.post("/config")
async def change_settings(change: SettingsChange, state: Sandbox) -> dict[str, Any]:
    for name, value in change.model_dump(exclude_none=True).items():
        setattr(state.settings, name, value)
    return asdict(state.settings)
