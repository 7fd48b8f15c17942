"""Execute one claimed run until it finishes, pauses at an interrupt, or fails."""

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from langchain_core.runnables import RunnableConfig
from langgraph.types import Command
from psycopg.types.json import Jsonb
from tenacity import AsyncRetrying

from engine.database import Pool
from engine.lease import Lease, LeaseLost
from engine.retry import StepRetry, Unloadable
from engine.saver import FencedSaver, state_view
from engine.settings import Settings
from engine.sql import QUERIES
from engine.status import STATUS_PARAMS, Status, pending
from engine.telemetry import DISABLED, Telemetry
from engine.tracing import RunTrace, execution, traced
from engine.workflow import RunContext, Workflow

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Claim:
    """A run this worker holds at `epoch`, and how to continue it."""

    run_id: str
    project: str
    workflow: str
    payload: dict[str, Any]
    epoch: int
    resume: dict[str, Any] | None  # the approval, or the provider events, it resumes with
    # Its latest checkpoint, as LangGraph's saver reads it (None: not begun).
    checkpoint: dict[str, Any] | None
    trace_context: dict[str, str] | None = None  # the run's trace, once an execution began it

    @property
    def approval_id(self) -> int | None:
        return int(self.resume["id"]) if self.resume and "gate" in self.resume else None


class Held(Protocol):
    """A run as this worker holds it: what a status change is fenced by."""

    @property
    def run_id(self) -> str: ...
    @property
    def epoch(self) -> int: ...


def pause_status(wait: object) -> tuple[str, datetime | None]:
    """The status for a run paused at an interrupt whose value is `wait`.

    Gates interrupt with `{"gate": name, ...}`; provider waits with
    `{"provider": name, "wake_at": iso-time, ...}`.
    """
    if isinstance(wait, dict) and isinstance(wait.get("gate"), str):
        return pending(wait["gate"]), None
    if isinstance(wait, dict) and isinstance(wait.get("provider"), str):
        wake_at = wait.get("wake_at")
        return Status.WAITING_PROVIDER, datetime.fromisoformat(wake_at) if wake_at else None
    raise ValueError(f"interrupt value {wait!r} names neither a gate nor a provider")


class Executor:
    def __init__(
        self,
        pool: Pool,
        settings: Settings,
        workflows: dict[str, Workflow],
        telemetry: Telemetry = DISABLED,
    ) -> None:
        self._pool = pool
        self._settings = settings
        # With telemetry on, every node of every graph opens a span and times itself.
        self._workflows = traced(workflows) if telemetry.enabled else workflows
        self._lease_ttl = timedelta(seconds=settings.lease_ttl)
        self._telemetry = telemetry

    async def execute(self, claim: Claim) -> str | None:
        """Run until the graph pauses, ends or fails; the status the run is left in
        (None when this worker lost the run)."""
        with execution(
            self._telemetry,
            run_id=claim.run_id,
            project=claim.project,
            workflow=claim.workflow,
            stored=claim.trace_context,
            approval=claim.resume if claim.approval_id is not None else None,
        ) as trace:
            return await self._execute(claim, trace)

    async def _execute(self, claim: Claim, trace: RunTrace) -> str | None:
        # The claim only takes runs of this worker's workflows, at their versions.
        workflow = self._workflows[claim.workflow]
        # Stored with the status this execution ends in (when it began the run's trace):
        # no write of its own.
        trace_context = Jsonb(trace.started) if trace.started is not None else None
        saver = FencedSaver(
            self._pool,
            Lease(claim.run_id, claim.epoch, self._lease_ttl),
            resuming=claim.resume is not None,
            approval_id=claim.approval_id,
            latest=claim.checkpoint,
        )
        try:
            output = await self._invoke(claim, workflow, saver)
        except LeaseLost:
            log.warning("lease lost; abandoning run", extra={"action": "lease_lost"})
            return None
        except Unloadable as exc:
            trace.failed(exc)
            await self.fail_unloadable(claim, exc, trace_context=trace_context)
            return Status.FAILED
        except Exception as exc:
            attempts = self._settings.max_attempts
            error = {"type": type(exc).__name__, "message": str(exc), "attempts": attempts}
            trace.failed(exc)
            await self._update(
                "fail_run",
                claim,
                status=Status.FAILED,
                error=Jsonb(error),
                attempt=attempts,
                trace_context=trace_context,
            )
            log.error("run failed", extra={"action": "run_failed"}, exc_info=exc)
            return Status.FAILED
        if interrupts := output.get("__interrupt__"):
            wait = interrupts[0].value
            status, wake_at = pause_status(wait)
            # With the interrupt's writes, still waiting: one round trip.
            if not await self._update(
                "pause_run",
                claim,
                saver,
                status=status,
                waiting_for=Jsonb(wait),
                wake_at=wake_at,
                trace_context=trace_context,
            ):
                return None
            log.info("run paused", extra={"action": "run_paused", "status": status})
            return status
        result = state_view({"channel_values": output})["values"]  # type: ignore[typeddict-item]
        if not await self._update(
            "finish_run",
            claim,
            saver,
            status=Status.PUBLISHED,
            result=Jsonb(result),
            trace_context=trace_context,
        ):
            return None
        log.info("run finished", extra={"action": "run_finished"})
        return Status.PUBLISHED

    async def _invoke(self, claim: Claim, workflow: Workflow, saver: FencedSaver) -> dict[str, Any]:
        graph = workflow.graph.copy(update={"checkpointer": saver})
        context = RunContext(claim.run_id, claim.project, saver.lease, self._pool)
        first_input: Any
        if claim.resume is not None:
            first_input = Command(resume=claim.resume)
        elif claim.checkpoint is not None:
            first_input = None
        else:
            first_input = {**claim.payload, "project": claim.project}
        config: RunnableConfig = {"configurable": {"thread_id": claim.run_id}}
        settings = self._settings
        policy = StepRetry(
            settings.max_attempts,
            settings.db_outage_tolerance,
            settings.retry_backoff,
            settings.retry_backoff_max,
        )
        retrying = AsyncRetrying(
            stop=policy.stop,
            wait=policy.wait,
            retry=policy.retry,
            reraise=True,
            before_sleep=lambda state: log.warning(
                "step failed; retrying",
                extra={
                    "action": "run_retry",
                    "run_id": claim.run_id,
                    "attempt": state.attempt_number,
                },
                exc_info=state.outcome.exception() if state.outcome else None,
            ),
        )
        async for attempt in retrying:
            with attempt:
                # Once anything is written, the checkpoint holds the input (or
                # the resume value): continue from it instead of starting over.
                try:
                    output = await graph.ainvoke(
                        None if saver.wrote else first_input,
                        config,
                        context=context,
                        durability="sync",
                    )
                except Exception:
                    await saver.keep()
                    raise
                except BaseException:
                    saver.discard()
                    raise
                return dict(output)
        raise AssertionError("unreachable: tenacity reraises the last error")

    async def requeue(self, claim: Claim) -> None:
        """Hand an unfinished run back to the queue (graceful shutdown)."""
        await self._update("requeue_run", claim)

    async def fail_unloadable(
        self, run: Held, error: Unloadable, trace_context: Jsonb | None = None
    ) -> None:
        """Fail a run no worker can load, so that it stops coming back to crash the next."""
        log.error(
            "run could not be loaded; failing it",
            extra={"action": "run_unloadable", "run_id": run.run_id, "epoch": run.epoch},
            exc_info=error.error,
        )
        await self._update(
            "fail_run",
            run,
            status=Status.FAILED,
            error=Jsonb(error.as_error()),
            attempt=1,
            trace_context=trace_context,
        )

    async def _update(
        self, query: str, claim: Held, saver: FencedSaver | None = None, **params: object
    ) -> bool:
        """A status change, guarded by the claim's epoch; with `saver`, together
        with its writes still waiting. False when the run changed hands first."""
        params = {"run_id": claim.run_id, "epoch": claim.epoch, **STATUS_PARAMS, **params}
        try:
            if saver is not None:
                changed = await saver.settle(QUERIES[query], params)
            else:
                async with self._pool.connection() as conn:
                    changed = (await conn.execute(QUERIES[query], params)).rowcount
        except LeaseLost:
            changed = 0
        if changed == 0:
            log.warning(
                "run changed hands before its status could be written",
                extra={"action": "lease_lost", "run_id": claim.run_id, "query": query},
            )
            return False
        return True
