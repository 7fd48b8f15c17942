"""The HTTP API: runs, approvals, webhook ingress and health, over the same store as the CLI."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from engine.app import App
from engine.db.connections import Pool, open_pool
from engine.observability.telemetry import DISABLED, Telemetry
from engine.runtime import approvals, schedules, store, workers
from engine.runtime.workflow import checked_edit
from engine.service import answers, inputs
from engine.service.access.guard import Guard, Guarded, identity_of
from engine.service.access.identities import Role, escalation_refusal, weak_bootstrap
from engine.service.answers import GUARDED, refusals
from engine.service.console import console_router
from engine.service.docs import serve_docs
from engine.service.health import metrics, schema_ready
from engine.service.history import history_router
from engine.service.previews import bounded
from engine.service.refusals import RefuseUnholdable, error, first_invalid
from engine.service.requests import requests_router
from engine.service.webhooks import webhook_router
from engine.service.workers import workers_router
from engine.settings import Config

# Each run of a list shows at most this much of its payload and result; one run, more.
LISTED_VALUE_BYTES = 4096
SHOWN_VALUE_BYTES = 64 * 1024
RUN_VALUES = ("payload", "result", "error", "waiting_for")
# A bulk operation answers with this many of the run ids it took, and their count.
BULK_IDS_SHOWN = 100


class NewApproval(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # None: the gate the run waits at (a run waiting at none: 422 naming `gate`).
    gate: str | None = Field(default=None, pattern=r"^[a-z][a-z0-9_]{0,40}$")
    decision: Literal["approved", "rejected"] = "approved"
    comment: str | None = Field(default=None, max_length=5_000)
    approver: str | None = Field(default=None, max_length=200)
    payload: dict[str, Any] | None = None
    # The pause the approver was shown (`waiting_for.pause_id`): refused once the run moved on.
    pause_id: int | None = Field(default=None, ge=0, le=2**63 - 1, strict=True)


class BodyLimit:
    """Refuse bodies over `limit` bytes with 413, whatever Content-Length claims."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._refuse(scope, receive, send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise _TooLarge
            return message

        try:
            await self.app(scope, counted, send)
        except _TooLarge:
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = error(413, f"request body is larger than {self.limit} bytes", "body")
        await response(scope, receive, send)


class _TooLarge(Exception):
    pass


def create_app(
    served: App,
    config: Config,
    *,
    url: str,
    pool: Pool | None = None,
    telemetry: Telemetry = DISABLED,
) -> FastAPI:
    """The API of `served` on its own pool (or `pool`, when the caller shares one). It
    reads the App's declarations only: it runs no graph, and builds one only for the
    console to draw it (once per workflow version, closed at once)."""
    settings = config.engine
    if problem := weak_bootstrap(settings.api_token):
        raise store.InvalidInput(problem)
    verifiers = served.webhooks(config) if served.webhooks is not None else {}
    owned = pool is None
    pool = pool if pool is not None else open_pool(url, settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if owned:
            await pool.open()
        try:
            yield
        finally:
            if owned:
                await pool.close()

    app = FastAPI(title="orchestrator", lifespan=lifespan, docs_url=None, redoc_url=None)
    # Innermost: it reads whole bodies, which BodyLimit bounds first.
    app.add_middleware(RefuseUnholdable)
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    guard = Guard(settings, pool, served.console_media(config))
    app.add_middleware(Guarded, guard=guard)
    admin, approver = [needs(Role.ADMIN)], [needs(Role.APPROVER)]

    @app.exception_handler(_Forbidden)
    async def forbidden(_: Request, exc: Exception) -> JSONResponse:
        return error(403, str(exc), "authorization")

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        field, message = first_invalid(exc.errors())
        return JSONResponse(
            {
                "error": message,
                "field": field,
                "detail": jsonable_encoder(exc.errors(), exclude={"input", "ctx", "url"}),
            },
            status_code=422,
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        # e.g. a body that is not UTF-8 or not JSON at all: same shape as our own errors.
        field = "body" if exc.status_code == 400 else None
        return error(exc.status_code, str(exc.detail), field)

    @app.exception_handler(store.InvalidInput)
    async def invalid_input(_: Request, exc: Exception) -> JSONResponse:
        return error(422, str(exc), str(exc).split(":", 1)[0])

    @app.exception_handler(store.RunNotFound)
    async def not_found(_: Request, exc: Exception) -> JSONResponse:
        return error(404, str(exc), "run_id")

    @app.exception_handler(store.Refused)
    async def refused(_: Request, exc: Exception) -> JSONResponse:
        return error(409, str(exc))

    @app.exception_handler(store.KeyConflict)
    async def key_conflict(_: Request, exc: Exception) -> JSONResponse:
        return error(409, str(exc), "idempotency_key")

    @app.exception_handler(schedules.ScheduleNotFound)
    async def schedule_not_found(_: Request, exc: Exception) -> JSONResponse:
        return error(404, str(exc), "schedule_id")

    @app.post(
        "/runs",
        status_code=201,
        dependencies=admin,
        summary="Start a run",
        response_model=answers.ShownRun,
        responses={
            200: {"model": answers.ShownRun, "description": "The run this key already started"},
            **refusals(*GUARDED, 409, 413),
        },
    )
    async def create_run(new: inputs.NewRun) -> JSONResponse:
        checked = await inputs.checked_run(served, settings, new)
        async with pool.connection() as conn:
            started = await checked.start(conn)
        # 200: the run this key already created, as it is now.
        return JSONResponse(
            jsonable_encoder(_with_due(started.run)), status_code=201 if started.created else 200
        )

    @app.get(
        "/runs",
        summary="List runs, newest first",
        response_model=list[answers.Run],
        responses=refusals(*GUARDED),
    )
    async def list_runs(
        status: Annotated[
            str | None,
            Query(
                max_length=64,
                description="queued, running, waiting_provider, waiting_timer, pending_<gate> "
                "for a gate of the App, published, failed or cancelled; any other: 422",
            ),
        ] = None,
        project: Annotated[str | None, Query(max_length=63)] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> JSONResponse:
        if status is not None:
            store.known_status(status, served.gate_names())
        async with pool.connection() as conn:
            runs = await store.list_runs(conn, status=status, project=project, limit=limit)
            runs = await workers.flag_unrunnable(conn, runs)
        for run in runs:
            for key in RUN_VALUES:
                run[key] = bounded(run[key], LISTED_VALUE_BYTES)
        return JSONResponse(jsonable_encoder(runs))

    @app.get(
        "/runs/{run_id}",
        summary="Show a run, its checkpoint, its artifacts and its approvals",
        response_model=answers.RunView,
        responses=refusals(*GUARDED, 404),
    )
    async def show_run(run_id: str) -> JSONResponse:
        async with pool.connection() as conn:
            view = await store.show_run(conn, run_id)
            [flagged] = await workers.flag_unrunnable(conn, [view.run])
            decided = await approvals.run_approvals(conn, run_id)
        # Whole up to SHOWN_VALUE_BYTES a value: more only plain SQL or a graph could store.
        run = {**flagged, **{k: bounded(view.run[k], SHOWN_VALUE_BYTES) for k in RUN_VALUES}}
        run = _with_due(run)
        checkpoint = view.checkpoint and {
            **view.checkpoint,
            "state": bounded(view.checkpoint["state"], SHOWN_VALUE_BYTES),
        }
        artifacts = [
            {**a, "metadata": bounded(a["metadata"], SHOWN_VALUE_BYTES)} for a in view.artifacts
        ]
        decided = [{**a, "payload": bounded(a["payload"], SHOWN_VALUE_BYTES)} for a in decided]
        return JSONResponse(
            jsonable_encoder(
                {"run": run, "checkpoint": checkpoint, "artifacts": artifacts, "approvals": decided}
            )
        )

    @app.post(
        "/runs/{run_id}/approvals",
        status_code=201,
        dependencies=approver,
        summary="Approve or reject the gate a run waits at",
        response_model=answers.Approval,
        responses=refusals(*GUARDED, 404, 409, 413),
    )
    async def approve(run_id: str, approval: NewApproval, request: Request) -> JSONResponse:
        identity = identity_of(request)
        name = approval.approver
        if identity is not None:
            if name is not None and name != identity.name:
                return error(
                    422,
                    f"approver: approvals are recorded as the identity that sends them "
                    f"({identity.name}); leave approver out",
                    "approver",
                )
            name = identity.name

        def check(run: dict[str, Any], gate: str) -> None:
            # 404 before the trigger's 409; 403 for a pause escalated past this
            # identity's role; 422 for an edit the gate would refuse
            if refusal := escalation_refusal(identity, run["waiting_for"]):
                raise _Forbidden(refusal)
            checked_edit(
                served.gate(run["workflow"], gate),
                approval.payload if approval.decision == "approved" else None,
            )

        async with pool.connection() as conn:
            row = await approvals.approve(
                conn,
                run_id,
                check=check,
                gate=approval.gate,
                field="gate",
                rejected=approval.decision == "rejected",
                comment=approval.comment,
                approver=name,
                approver_ip=request.client.host if request.client else None,
                payload=approval.payload,
                pause_id=approval.pause_id,
            )
        return JSONResponse(jsonable_encoder(row), status_code=201)

    @app.post(
        "/runs/cancel",
        dependencies=admin,
        summary="Cancel the live runs a filter selects",
        response_model=answers.BulkResult,
        responses=refusals(*GUARDED, 413),
    )
    async def cancel_runs(change: inputs.BulkChange) -> JSONResponse:
        return await bulk("cancel", change)

    @app.post(
        "/runs/retry",
        dependencies=admin,
        summary="Queue again the failed runs a filter selects",
        response_model=answers.BulkResult,
        responses=refusals(*GUARDED, 413),
    )
    async def retry_runs(change: inputs.BulkChange) -> JSONResponse:
        return await bulk("retry", change)

    async def bulk(operation: str, change: inputs.BulkChange) -> JSONResponse:
        """The runs `change` selects, counted, and unless a dry run changed (each
        checked again as it changes: `changed` counts those that had not moved on)."""
        selection = store.bulk_selection(
            operation,
            status=change.status,
            project=change.project,
            older_than=change.older_than,
            gates=served.gate_names(),
        )
        async with pool.connection() as conn:
            run_ids = await store.matching_runs(conn, selection)
            if change.dry_run:
                changed = []
            elif operation == "cancel":
                changed = await store.cancel_runs(conn, run_ids)
            else:
                changed = await store.retry_runs(conn, run_ids)
        shown = run_ids if change.dry_run else [run["run_id"] for run in changed]
        body = {
            "matched": len(run_ids),
            "changed": len(changed),
            "dry_run": change.dry_run,
            "limited": len(run_ids) == store.BULK_LIMIT,
            "run_ids": shown[:BULK_IDS_SHOWN],
        }
        return JSONResponse(body)

    @app.post(
        "/runs/{run_id}/cancel",
        dependencies=admin,
        summary="Cancel a run that has not ended",
        response_model=answers.Run,
        responses=refusals(*GUARDED, 404, 409),
    )
    async def cancel(run_id: str) -> JSONResponse:
        async with pool.connection() as conn:
            return JSONResponse(jsonable_encoder(await store.cancel_run(conn, run_id)))

    @app.post(
        "/runs/{run_id}/retry",
        dependencies=admin,
        summary="Queue a failed run again, from its last checkpoint",
        response_model=answers.Run,
        responses=refusals(*GUARDED, 404, 409),
    )
    async def retry(run_id: str) -> JSONResponse:
        async with pool.connection() as conn:
            return JSONResponse(jsonable_encoder(await store.retry_run(conn, run_id)))

    @app.post(
        "/schedules",
        status_code=201,
        dependencies=admin,
        summary="Create a schedule",
        response_model=answers.Schedule,
        responses=refusals(*GUARDED, 413),
    )
    async def create_schedule(new: inputs.NewSchedule) -> JSONResponse:
        async with pool.connection() as conn:
            schedule = await inputs.create_schedule(conn, served, new)
        return JSONResponse(jsonable_encoder(schedule), status_code=201)

    @app.get(
        "/schedules",
        summary="List the schedules",
        response_model=list[answers.Schedule],
        responses=refusals(*GUARDED),
    )
    async def list_schedules() -> JSONResponse:
        async with pool.connection() as conn:
            rows = await schedules.list_schedules(conn)
        return JSONResponse(jsonable_encoder([schedules.view(row) for row in rows]))

    @app.get(
        "/schedules/{schedule_id}",
        summary="Show a schedule and its next fire times",
        response_model=answers.Schedule,
        responses=refusals(*GUARDED, 404),
    )
    async def show_schedule(schedule_id: str) -> JSONResponse:
        async with pool.connection() as conn:
            row = await schedules.get_schedule(conn, schedule_id)
        return JSONResponse(jsonable_encoder(schedules.view(row)))

    @app.post(
        "/schedules/{schedule_id}/pause",
        dependencies=admin,
        summary="Stop a schedule firing",
        response_model=answers.Schedule,
        responses=refusals(*GUARDED, 404),
    )
    async def pause_schedule(schedule_id: str) -> JSONResponse:
        async with pool.connection() as conn:
            row = await schedules.pause_schedule(conn, schedule_id)
        return JSONResponse(jsonable_encoder(schedules.view(row)))

    @app.post(
        "/schedules/{schedule_id}/resume",
        dependencies=admin,
        summary="Fire a schedule again, from the next fire time",
        response_model=answers.Schedule,
        responses=refusals(*GUARDED, 404),
    )
    async def resume_schedule(schedule_id: str) -> JSONResponse:
        async with pool.connection() as conn:
            row = await schedules.resume_schedule(conn, schedule_id)
        return JSONResponse(jsonable_encoder(schedules.view(row)))

    @app.post(
        "/schedules/{schedule_id}/backfill",
        dependencies=admin,
        summary="Start a run for each fire time in a range that has none",
        response_model=answers.Backfill,
        responses=refusals(*GUARDED, 404, 413),
    )
    async def backfill_schedule(schedule_id: str, span: inputs.BackfillRange) -> JSONResponse:
        async with pool.connection() as conn:
            done = await schedules.backfill(conn, schedule_id, span.start, span.end)
        return JSONResponse(
            jsonable_encoder({"fire_times": done.fire_times, "created": done.created})
        )

    @app.delete(
        "/schedules/{schedule_id}",
        status_code=204,
        dependencies=admin,
        summary="Delete a schedule (its runs stay)",
        responses=refusals(*GUARDED, 404),
    )
    async def delete_schedule(schedule_id: str) -> Response:
        async with pool.connection() as conn:
            await schedules.delete_schedule(conn, schedule_id)
        return Response(status_code=204)

    serve_docs(app)

    @app.get("/healthz", summary="Liveness: the process answers", response_model=answers.Health)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/readyz",
        summary="Readiness: the database answers with a schema this code can use",
        response_model=answers.Ready,
        responses={503: {"model": answers.Ready, "description": "Not ready: why"}},
    )
    async def readyz() -> JSONResponse:
        return await schema_ready(pool)

    @app.get(
        "/metrics",
        summary="Prometheus metrics of this process",
        response_class=Response,
        responses={
            200: {"description": "Prometheus text", "content": {"text/plain": {}}},
            **refusals(*GUARDED, 404),
        },
    )
    async def metrics_text() -> Response:
        return await metrics(telemetry, pool)

    app.include_router(webhook_router(pool, verifiers, settings))
    app.include_router(history_router(pool, admin))
    app.include_router(requests_router(pool, served))
    app.include_router(workers_router(pool))
    app.include_router(console_router(pool, guard, served, config))
    return app


def _with_due(run: dict[str, Any]) -> dict[str, Any]:
    """A run as the API shows it: with `due_at`, when a timer or provider wait is due."""
    return {**run, "due_at": store.due_at(run)}


def needs(role: Role) -> Any:
    """A route dependency: the request's identity must hold `role` (open mode: anyone)."""

    async def check(request: Request) -> None:
        identity = identity_of(request)
        if identity is not None and not identity.allows(role):
            raise _Forbidden(f"{identity.name} is {identity.role}: this needs the {role} role")

    return Depends(check)


class _Forbidden(Exception):
    pass
