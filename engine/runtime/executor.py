"""Execute one claimed run until it finishes, pauses at an interrupt, or fails.

Each execution is one run session (`engine.runtime.session`): the graph writes through
a `FencedSaver` over it, and the execution ends with the session's transition.
"""

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.types import Command
from psycopg.types.json import Jsonb
from tenacity import AsyncRetrying

from engine.db.connections import Pool
from engine.db.status import Status
from engine.observability.telemetry import DISABLED, Telemetry
from engine.runtime.claims import Claim, Held
from engine.runtime.lease import Lease, LeaseLost
from engine.runtime.limits import Requests, requests_kept
from engine.runtime.retry import StepRetry, Unloadable
from engine.runtime.saver import FencedSaver, state_view
from engine.runtime.session import RunSession, change_status
from engine.runtime.tracing import RunTrace, execution, traced
from engine.runtime.waits import GateWait, UnclaimableWait, parse_wait
from engine.runtime.workflow import RunContext, Workflow
from engine.settings import Settings

log = logging.getLogger(__name__)


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
        # What the graphs' provider clients keep to, whichever daemon sends them.
        self._requests = Requests(pool, settings.worker_id)

    async def execute(self, claim: Claim) -> str | None:
        """Run until the graph pauses, ends or fails; the status the run is left in
        (None when this worker lost the run)."""
        with (
            execution(
                self._telemetry,
                run_id=claim.run_id,
                project=claim.project,
                workflow=claim.workflow,
                stored=claim.trace_context,
                approval=claim.resume if claim.approval_id is not None else None,
            ) as trace,
            requests_kept(self._requests),
        ):
            async with self._session(claim) as session:
                return await self._execute(claim, session, trace)

    async def _execute(self, claim: Claim, session: RunSession, trace: RunTrace) -> str | None:
        # The claim only takes runs of this worker's workflows, at their versions.
        workflow = self._workflows[claim.workflow]
        # Stored with the status this execution ends in (when it began the run's trace):
        # no write of its own.
        trace_context = Jsonb(trace.started) if trace.started is not None else None
        try:
            output = await self._invoke(claim, workflow, session)
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
            await session.fail(error, attempt=attempts, trace_context=trace_context)
            log.error("run failed", extra={"action": "run_failed"}, exc_info=exc)
            return Status.FAILED
        if interrupts := output.get("__interrupt__"):
            try:
                wait = parse_wait(interrupts[0].value)
                if isinstance(wait, GateWait) and (gate := workflow.gate(wait.gate)):
                    wait = wait.timed(gate.timeout, datetime.now(UTC))
                status = wait.status
            except UnclaimableWait as exc:
                # Parked, it would wait forever: nothing would ever claim it.
                trace.failed(exc)
                error = {"type": type(exc).__name__, "message": str(exc), "attempts": 1}
                await session.fail(error, attempt=1, trace_context=trace_context)
                log.error("run paused on nothing", extra={"action": "run_failed"}, exc_info=exc)
                return Status.FAILED
            # With the interrupt's writes, still waiting: one round trip.
            if not await session.pause(wait, trace_context=trace_context):
                return None
            log.info("run paused", extra={"action": "run_paused", "status": status})
            return status
        result = state_view({"channel_values": output})["values"]  # type: ignore[typeddict-item]
        if not await session.finish(result, trace_context=trace_context):
            return None
        log.info("run finished", extra={"action": "run_finished"})
        return Status.PUBLISHED

    async def _invoke(
        self, claim: Claim, workflow: Workflow, session: RunSession
    ) -> dict[str, Any]:
        graph = workflow.compiled.copy(update={"checkpointer": FencedSaver(session)})
        context = RunContext(claim.project, session)
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
                        None if session.wrote else first_input,
                        config,
                        context=context,
                        durability="sync",
                    )
                except Exception:
                    await session.writes.keep()
                    raise
                except BaseException:
                    await session.writes.discard()
                    raise
                return dict(output)
        raise AssertionError("unreachable: tenacity reraises the last error")

    async def requeue(self, claim: Claim) -> None:
        """Hand an unfinished run back to the queue (graceful shutdown)."""
        await self._session(claim).requeue()

    async def fail_unloadable(
        self, run: Held, error: Unloadable, trace_context: Jsonb | None = None
    ) -> None:
        """Fail a run no worker can load, so that it stops coming back to crash the next."""
        log.error(
            "run could not be loaded; failing it",
            extra={"action": "run_unloadable", "run_id": run.run_id, "epoch": run.epoch},
            exc_info=error.error,
        )
        await change_status(
            self._pool,
            run,
            "fail_run",
            status=Status.FAILED,
            error=Jsonb(error.as_error()),
            attempt=1,
            trace_context=trace_context,
        )

    def _session(self, claim: Claim) -> RunSession:
        return RunSession(
            self._pool,
            Lease(claim.run_id, claim.epoch, self._lease_ttl),
            resume=claim.resume,
            latest=claim.checkpoint,
        )
