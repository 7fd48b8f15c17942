"""The sandbox's memory: jobs and when they finish, the call log, pending faults, and
how many jobs of each provider were in flight at once at most (what a test of the
engine's limits reads).

Everything runs on one event loop and no handler awaits between reading and
changing this state, so it needs no lock.
"""

import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, ClassVar, TypeVar

from fastapi import Depends, Request

from providers.sandbox.config import SandboxConfig
from providers.sandbox.webhooks import WebhookSender


class Phase(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


@dataclass(frozen=True)
class Timing:
    """When a job was submitted and how it will end; its phase is computed when asked."""

    submitted_at: float  # time.monotonic()
    created_at: datetime
    latency: float
    ending: Phase | None  # SUCCEEDED or FAILED; None: the job never finishes

    def phase(self) -> Phase:
        elapsed = time.monotonic() - self.submitted_at
        if self.ending is not None and elapsed >= self.latency:
            return self.ending
        return Phase.QUEUED if elapsed < self.latency / 2 else Phase.RUNNING

    def in_flight(self, at: float) -> bool:
        """Submitted and not finished at `at` (on the `time.monotonic()` clock)."""
        finishes_at = self.finishes_at
        return self.submitted_at <= at and (finishes_at is None or at < finishes_at)

    @property
    def finishes_at(self) -> float | None:
        """On the `time.monotonic()` clock; None for a job that never finishes."""
        return None if self.ending is None else self.submitted_at + self.latency

    @property
    def completed_at(self) -> datetime:
        return self.created_at + timedelta(seconds=self.latency)


@dataclass
class JobSettings:
    """What `/_sandbox/config` changes; each applies to jobs submitted afterwards."""

    job_latency: float
    never_finish: bool = False
    fail_jobs: bool = False
    # Seconds an answer is held back after the call is handled and logged: a test
    # can kill its caller while the provider has acted but the caller doesn't know.
    response_delay: float = 0.0

    def timing(self) -> Timing:
        ending = None if self.never_finish else Phase.FAILED if self.fail_jobs else Phase.SUCCEEDED
        return Timing(time.monotonic(), datetime.now(UTC), self.job_latency, ending)


@dataclass(kw_only=True)
class Job:
    """One submitted job; each provider subclasses it with what its answers need."""

    provider: ClassVar[str]  # whose job it is, as a fault and the call log name it
    id: str
    timing: Timing

    def phase(self) -> Phase:
        return self.timing.phase()


@dataclass(frozen=True)
class Call:
    provider: str
    operation: str
    idempotency_key: str | None
    run_id: str | None
    method: str
    path: str
    status_code: int
    at: datetime

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "at": self.at.isoformat()}


@dataclass
class Fault:
    """The next `times` calls of one operation (None: any of the provider's) answer
    `status_code`."""

    provider: str
    operation: str | None
    status_code: int
    times: int = 1
    retry_after: float | None = None
    hard_cap: bool = False


J = TypeVar("J", bound=Job)


@dataclass
class SandboxState:
    config: SandboxConfig
    settings: JobSettings
    operations: frozenset[tuple[str, str]]  # (provider, operation) pairs a fault may name
    webhooks: WebhookSender = field(default_factory=WebhookSender)
    calls: list[Call] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    # Keyed by job type too: each provider's ids are its own (upload-post's are ours).
    _jobs: dict[tuple[type[Job], str], Job] = field(default_factory=dict)
    # Per provider: the most jobs in flight at once, as counted at each submit.
    most_in_flight: dict[str, int] = field(default_factory=dict)

    def add(self, job: Job) -> None:
        self._jobs[type(job), job.id] = job
        now = time.monotonic()
        count = self.in_flight(job.provider, now)
        self.most_in_flight[job.provider] = max(self.most_in_flight.get(job.provider, 0), count)

    def in_flight(self, provider: str, at: float) -> int:
        mine = (job for job in self._jobs.values() if job.provider == provider)
        return sum(1 for job in mine if job.timing.in_flight(at))

    def jobs(self) -> dict[str, dict[str, int]]:
        """Per provider: jobs submitted, in flight now, and the most in flight at once."""
        now = time.monotonic()
        return {
            provider: {
                "submitted": sum(1 for job in self._jobs.values() if job.provider == provider),
                "in_flight": self.in_flight(provider, now),
                "most_in_flight": most,
            }
            for provider, most in sorted(self.most_in_flight.items())
        }

    def find(self, kind: type[J], job_id: str) -> J | None:
        job = self._jobs.get((kind, job_id))
        return job if isinstance(job, kind) else None

    def take_fault(self, provider: str, operation: str) -> Fault | None:
        for fault in self.faults:
            if fault.provider == provider and fault.operation in (None, operation):
                fault.times -= 1
                if fault.times <= 0:
                    self.faults.remove(fault)
                return fault
        return None


def new_id() -> str:
    return uuid.uuid4().hex


def state_of(request: Request) -> SandboxState:
    """FastAPI dependency: the state of the app serving this request."""
    state = request.app.state.sandbox
    assert isinstance(state, SandboxState)
    return state


Sandbox = Annotated[SandboxState, Depends(state_of)]
