"""A persona step that hands work to a provider: submit, wait without a worker, collect.

Three nodes per step, so that each wake-up is a fresh node execution:
- `<persona>` submits the job once: first it takes one of the provider's slots
  (jobs in flight across all daemons; with none free the run parks until it is
  handed one, and the node runs again from its first line), then an artifact
  with our idempotency key is recorded before the call and the provider's job
  id after it, so a re-executed node reuses the job (or asks the provider
  whether it got the request; a provider that calls back, with our key in the
  callback URL, is waited for, up to the policy's `adopt_window`, and the job
  its callback names adopted). A job the provider's acceptance settles (a post
  upload-post will make later) is done here, with no wait;
- `<persona>_wait` pauses the run with `interrupt()` (status `waiting_provider`,
  no lease held, `wake_at` for the poll fallback) until a webhook or the timer;
- `<persona>_collect` asks the provider for the job; not done yet → wait again,
  failed, unknown to the provider or too slow → the artifact says `failed` and
  why, and the step fails; done → the result artifact. Once it stops waiting
  for the job, its slot is given back.

A failed job stays failed, so asking about it again can never succeed: once
`runs retry` stamps its artifact `retried_at`, collect goes back to submit,
which submits a new job under a new key (`<persona>:<round>:<n>`, n = 2, 3, …)
and records which job it replaces and why.
"""

import itertools
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from langgraph.graph import StateGraph
from langgraph.runtime import Runtime
from langgraph.types import Command

from engine import ProviderWait, RunContext, pause
from personas.state import ProductionState, next_step, round_of
from providers.errors import PermanentProviderError, ProviderError

log = logging.getLogger(__name__)
# An intent: the submit began and its answer is not recorded yet.
SUBMITTING = "submitting"
# The provider refused the submit outright (4xx): it made no job.
REFUSED = "refused"
# When the submit the artifact records began (the adoption window counts from it).
SUBMITTING_AT = "submitting_at"


class ProviderJobFailed(RuntimeError):
    """The provider finished the job without a result."""


class ProviderJobTimeout(RuntimeError):
    """The job did not finish within the policy's time."""


@dataclass(frozen=True)
class Job:
    """A provider's answer about a job, in the terms the step needs."""

    done: bool
    succeeded: bool
    url: str | None = None
    error: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


class ProviderStep(Protocol):
    @property
    def persona(self) -> str: ...
    @property
    def provider(self) -> str:
        """As in `/webhooks/{provider}` and `artifacts.provider`."""

    @property
    def artifact_type(self) -> str: ...

    async def submit(self, state: ProductionState, ctx: RunContext, key: str) -> str:
        """Start the job with idempotency key `key`; the provider's job id."""

    async def find(self, state: ProductionState, ctx: RunContext, key: str) -> str | None:
        """The job an interrupted earlier submit started, if the provider can tell."""

    @property
    def calls_back(self) -> bool:
        """Whether the provider calls back with our key: a submit cut off may then
        have made a job that only its callback names (`find` reads it), so the step
        waits for it before submitting again."""

    async def check(self, job_id: str, ctx: RunContext) -> Job: ...

    def settled(self, state: ProductionState, job_id: str) -> Job | None:
        """The job's outcome when the provider taking it is all the step waits for;
        None: wait for the job to finish."""

    def finished(self, state: ProductionState, artifact: dict[str, Any]) -> dict[str, Any]:
        """The state update once the job succeeded (`artifact` is its result row)."""


@dataclass(frozen=True)
class WaitPolicy:
    poll_interval: timedelta
    job_timeout: timedelta
    # How long after a cut-off submit began to wait for the provider's callback about
    # it before submitting again (a job that long unheard of was never made).
    adopt_window: timedelta = timedelta(minutes=15)


def add_provider_step(
    builder: StateGraph[Any, Any, Any, Any], step: ProviderStep, policy: WaitPolicy
) -> None:
    persona = step.persona
    wait_node, collect_node = f"{persona}_wait", f"{persona}_collect"

    async def submit(state: ProductionState, runtime: Runtime[RunContext]) -> Command[str]:
        ctx = runtime.context
        key, recorded, replaced = await _current_attempt(ctx, f"{persona}:{round_of(state)}")
        resubmission = _resubmission(replaced)
        job_id = recorded["provider_job_id"] if recorded else None
        if job_id is None:  # before any call: a parked run runs this node again
            await ctx.limits.slot(step.provider, key)
        if recorded is not None and job_id is None and recorded["status"] == SUBMITTING:
            # An earlier execution called the provider but died before hearing back.
            await ctx.ensure_held()
            job_id = await _found(step, state, ctx, key, recorded, policy)
        if job_id is None:
            if resubmission:
                log.warning(
                    "the run was retried: submitting a new provider job (%s)",
                    resubmission["because"],
                    extra={"action": "provider_resubmit", "persona": persona, **resubmission},
                )
            intent = {**resubmission, SUBMITTING_AT: datetime.now(UTC).isoformat()}
            recorded = await _record(ctx, step, key, status=SUBMITTING, metadata=intent)
            try:
                job_id = await step.submit(state, ctx, ctx.idempotency_key(key))
            except ProviderError as error:
                if error.status_code is not None and error.status_code < 500:
                    # It answered that it took nothing: the next attempt need not
                    # wait for a job it might have made.
                    await _record(ctx, step, key, status=REFUSED, metadata=intent)
                raise
        if recorded is None or recorded["provider_job_id"] != job_id:
            recorded = await _record(
                ctx, step, key, status="submitted", provider_job_id=job_id, metadata=resubmission
            )
        job_ref = {
            "job_id": job_id,
            "submitted_at": recorded["created_at"].isoformat(),
            "key": key,
            **resubmission,
        }
        jobs = {"jobs": {**state.get("jobs", {}), persona: job_ref}}
        settled = step.settled(state, job_id)
        if settled is None:
            return Command(goto=wait_node, update=jobs)
        return await _finished(ctx, step, state, key, job_id, settled, resubmission, jobs)

    def wait(state: ProductionState) -> dict[str, Any]:
        job = state["jobs"][persona]
        wake_at = datetime.now(UTC) + policy.poll_interval
        pause(ProviderWait(step.provider, job["job_id"], wake_at, {"persona": persona}))
        return {}

    async def collect(state: ProductionState, runtime: Runtime[RunContext]) -> Command[str]:
        ctx = runtime.context
        job_ref = state["jobs"][persona]
        # Checkpoints from before resubmission had no key: the round's first.
        key = job_ref.get("key", f"{persona}:{round_of(state)}")
        resubmission: dict[str, Any] = {
            name: job_ref[name] for name in ("replaces", "because") if name in job_ref
        }
        await ctx.ensure_held()
        job = await _check(step, job_ref["job_id"], ctx)
        failure: Exception | None = None
        if not job.done:
            waited = datetime.now(UTC) - datetime.fromisoformat(job_ref["submitted_at"])
            if waited <= policy.job_timeout:
                return Command(goto=wait_node)
            failure = ProviderJobTimeout(
                f"{step.provider} job {job_ref['job_id']} unfinished after {waited}"
            )
        elif not job.succeeded:
            failure = ProviderJobFailed(
                f"{step.provider} job {job_ref['job_id']} failed: {job.error or 'no reason given'}"
            )
        await ctx.limits.release(step.provider, key)  # the job is no longer in flight
        if failure is not None:
            recorded = await ctx.artifact(key)
            if recorded is not None and "retried_at" in recorded["metadata"]:
                return Command(goto=persona)  # the run was retried: a new job
            await _record(
                ctx,
                step,
                key,
                status="failed",
                provider_job_id=job_ref["job_id"],
                metadata={**resubmission, "error": str(failure)},
            )
            raise failure
        return await _finished(ctx, step, state, key, job_ref["job_id"], job, resubmission)

    builder.add_node(persona, submit, destinations=(wait_node,))
    builder.add_node(wait_node, wait)
    builder.add_node(collect_node, collect, destinations=(wait_node, persona))
    builder.add_edge(wait_node, collect_node)


async def _found(
    step: ProviderStep,
    state: ProductionState,
    ctx: RunContext,
    key: str,
    intent: dict[str, Any],
    policy: WaitPolicy,
) -> str | None:
    """The job a submit cut off before hearing back made, if the provider can tell. A
    provider that calls back may still name it: the run waits for that callback
    (paused, holding no worker, asking again every poll interval) until
    `adopt_window` after that submit began; nothing by then: it made no job."""
    idempotency_key = ctx.idempotency_key(key)
    began = datetime.fromisoformat(
        intent["metadata"].get(SUBMITTING_AT, intent["created_at"].isoformat())
    )
    while (job_id := await step.find(state, ctx, idempotency_key)) is None and step.calls_back:
        left = began + policy.adopt_window - datetime.now(UTC)
        if left <= timedelta(0):
            log.warning(
                "no callback about a cut-off submit: submitting again",
                extra={"action": "provider_unadopted", "persona": step.persona, "key": key},
            )
            return None
        wake_at = datetime.now(UTC) + min(policy.poll_interval, left)
        waiting = {"persona": step.persona, "adopting": idempotency_key}
        pause(ProviderWait(step.provider, None, wake_at, waiting))
    if job_id is not None:
        log.info(
            "adopted the job a cut-off submit made",
            extra={"action": "provider_adopted", "persona": step.persona, "job_id": job_id},
        )
    return job_id


async def _finished(
    ctx: RunContext,
    step: ProviderStep,
    state: ProductionState,
    key: str,
    job_id: str,
    job: Job,
    resubmission: dict[str, Any],
    update: dict[str, Any] | None = None,
) -> Command[str]:
    """Record the job's result and go on to the next persona."""
    artifact = await _record(
        ctx,
        step,
        key,
        status="done",
        provider_job_id=job_id,
        url=job.url,
        metadata={**job.metadata, **resubmission},
    )
    done = {"done": [*state.get("done", []), step.persona], **step.finished(state, artifact)}
    update = {**(update or {}), **done}
    return Command(goto=next_step({**state, **update}), update=update)  # type: ignore[typeddict-item]


async def _record(
    ctx: RunContext,
    step: ProviderStep,
    key: str,
    *,
    status: str,
    provider_job_id: str | None = None,
    url: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return await ctx.record_artifact(
        step.artifact_type,
        key=key,
        persona=step.persona,
        provider=step.provider,
        status=status,
        provider_job_id=provider_job_id,
        url=url,
        metadata={"idempotency_key": ctx.idempotency_key(key), **(metadata or {})},
    )


async def _current_attempt(
    ctx: RunContext, first_key: str
) -> tuple[str, dict[str, Any] | None, dict[str, Any] | None]:
    """The key of the step's live attempt, its artifact (None: not begun) and
    the failed attempt it replaces (None: it is the first).

    Each failed job that `runs retry` stamped is followed by one under the next
    key, so the live one is the first key not stamped.
    """
    key, replaced = first_key, None
    for attempt in itertools.count(2):
        recorded = await ctx.artifact(key)
        if recorded is None or "retried_at" not in recorded["metadata"]:
            return key, recorded, replaced
        key, replaced = f"{first_key}:{attempt}", recorded
    raise AssertionError("unreachable")


def _resubmission(replaced: dict[str, Any] | None) -> dict[str, Any]:
    """What a new job's artifact says about the failed one it replaces."""
    if replaced is None:
        return {}
    return {
        "replaces": replaced["provider_job_id"],
        "because": replaced["metadata"].get("error", "it failed"),
    }


async def _check(step: ProviderStep, job_id: str, ctx: RunContext) -> Job:
    """The provider's answer; a job it no longer knows (a render past its
    retention) counts as failed, so that a retry can submit it again."""
    try:
        return await step.check(job_id, ctx)
    except PermanentProviderError as error:
        if error.status_code != 404:
            raise
        return Job(done=True, succeeded=False, error=f"unknown to the provider ({error})")
