"""The operator console: server-rendered pages over the same store as the API.

`/` is the approvals inbox; `/console/runs` lists runs and `/console/runs/{id}`
shows one: where it is in its workflow's graph, its steps, who decided what at its
gates, its notifications and how each was delivered. Each of these has a
`…/live` twin that renders only its changing part,
which `static/console.js` polls and swaps in piece by piece. `/console/workers`
lists the daemons and the live runs none of them can take. `/console/schedules`
lists the schedules with the form to create one and each one's pause, resume,
backfill and delete, which call what the API's `/schedules` routes call. A run is
started, cancelled, retried and forked, and runs ticked on the list cancelled or
retried, each after a page that asks to confirm it (`console.actions`). Every page's
navigation counts the runs waiting at a gate.
"""

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import RedirectResponse
from psycopg.rows import DictRow

from engine.app import App
from engine.db.connections import Pool
from engine.db.queries import QUERIES as ENGINE_QUERIES
from engine.db.queries import load_queries
from engine.db.status import Status, pending
from engine.runtime import schedules, steps, store, workers
from engine.runtime.approvals import SHOWN as APPROVALS_SHOWN
from engine.runtime.approvals import run_approvals
from engine.runtime.forks import CheckpointNotFound, fork_run
from engine.runtime.history import run_history
from engine.runtime.schedule_times import DEFAULT_CATCHUP, DEFAULT_OVERLAP, OVERLAPS
from engine.runtime.store import Connection
from engine.service import inputs
from engine.service.access.guard import Guard, identity_of
from engine.service.access.identities import Role, escalation_refusal
from engine.service.console import actions, forms
from engine.service.console.actions import Outcome
from engine.service.console.auth import Auth, SignInRefused, remember_approver
from engine.service.console.graphs import Graphs
from engine.service.console.pages import Pages, static_files
from engine.service.console.views import (
    Done,
    Refusal,
    RunFilter,
    limit_wait,
    local_path,
    notifications,
    timeline,
    with_query,
)
from engine.service.requests import waiting_at_gates
from engine.settings import Config

QUERIES = load_queries(__name__)
CHANGING_SCHEDULES = "Creating and changing schedules needs the admin role."
ACTING_ON_RUNS = "Starting, cancelling, retrying and forking runs need the admin role."
# A schedule's buttons: the action in its path, what the page then says was done, and
# the API's own call for it.
SCHEDULE_CHANGES: dict[str, tuple[str, Callable[[Connection, str], Awaitable[object]]]] = {
    "pause": ("paused", schedules.pause_schedule),
    "resume": ("resumed", schedules.resume_schedule),
    "delete": ("deleted", schedules.delete_schedule),
}
INBOX_LIMIT = 50  # cards; the inbox says how many more wait (each live refresh renders them)
# A run's page shows its newest webhook events, and their payloads only when small:
# strangers can send deliveries naming any job.
EVENTS_LIMIT = 50
EVENT_PREVIEW_BYTES = 64 * 1024


def console_router(pool: Pool, guard: Guard, served: App, config: Config) -> APIRouter:
    graphs = Graphs(served, config)
    auth = Auth(guard, pool)
    gate_statuses = [pending(gate) for gate in served.gate_names()]

    async def count_inbox(request: Request) -> None:
        """The navigation's count of runs waiting at a gate, for every page but the live
        parts and the static files, and only for who may see the inbox."""
        path = request.url.path
        if path.endswith("/live") or path.startswith("/console/static/"):
            return
        if not auth.signed_in(request):
            return
        async with pool.connection() as conn:
            cursor = await conn.execute(QUERIES["console_inbox_count"], {"pending": gate_statuses})
            row = await cursor.fetchone()
        request.state.inbox_count = row["n"] if row else 0

    router = APIRouter(include_in_schema=False, dependencies=[Depends(count_inbox)])
    pages = Pages(auth, served)
    static = static_files()

    async def inbox_context(request: Request) -> dict[str, Any]:
        async with pool.connection() as conn:
            runs = [_with_sent(run) for run in await waiting_at_gates(conn, INBOX_LIMIT)]
            notice = None
            if (sent := request.query_params.get("sent", "")).isdigit():
                cursor = await conn.execute(QUERIES["console_approval"], {"id": int(sent)})
                notice = await cursor.fetchone()
        total = runs[0]["waiting_total"] if runs else 0
        return {"runs": runs, "total": total, "notice": notice, "next": "/"}

    @router.get("/")
    async def inbox(request: Request) -> Response:
        return pages.render(request, "inbox.html", **await inbox_context(request))

    @router.get("/console/inbox/live")
    async def inbox_live(request: Request) -> Response:
        return pages.render(request, "inbox_cards.html", **await inbox_context(request))

    async def runs_context(request: Request, counted: bool = False) -> dict[str, Any]:
        """The page of runs the query string asks for; `counted`: with the runs of each
        status the other filters find (the full page's status list, not its live part)."""
        chosen = RunFilter.parse(request.query_params, served.gate_names(), served.by_name)
        params = chosen.sql_params()
        async with pool.connection() as conn:
            cursor = await conn.execute(QUERIES["console_runs"], params)
            rows = [dict(row) for row in await cursor.fetchall()]
            rows = await workers.flag_unrunnable(conn, rows)
            counts = {}
            if counted:
                cursor = await conn.execute(QUERIES["console_status_counts"], params)
                counts = {row["status"]: row["n"] for row in await cursor.fetchall()}
        more = len(rows) > chosen.limit
        rows = rows[: chosen.limit]
        older = chosen.query(before=(rows[-1]["created_at"], rows[-1]["run_id"])) if more else None
        return {"rows": rows, "filter": chosen, "older": older, "counts": counts}

    blank_run = {
        **dict.fromkeys(forms.NEW_RUN_FIELDS, ""),
        "workflow": served.default_workflow,
        "priority": "0",
    }

    async def runs_page(
        request: Request, status_code: int = 200, refusal: Refusal | None = None
    ) -> Response:
        try:
            context = await runs_context(request, counted=True)
        except store.InvalidInput as exc:
            return pages.error(request, 422, str(exc), back="/console/runs")
        return pages.render(
            request,
            "runs.html",
            status_code,
            workflows=list(served.by_name),
            new=refusal.typed if refusal else blank_run,
            refusal=refusal,
            outcome=Outcome.parse(request.query_params),
            **context,
        )

    @router.get("/console/runs")
    async def runs(request: Request) -> Response:
        return await runs_page(request)

    @router.get("/console/runs/live")
    async def runs_live(request: Request) -> Response:
        try:
            return pages.render(request, "runs_table.html", **await runs_context(request))
        except store.InvalidInput as exc:
            return pages.error(request, 422, str(exc), back="/console/runs")

    async def workers_context() -> dict[str, Any]:
        async with pool.connection() as conn:
            shown = await workers.overview(conn)
            runs = await workers.unrunnable_runs(conn) if shown["unrunnable"] else []
        return {**shown, "unrunnable_runs": runs}

    @router.get("/console/workers")
    async def workers_page(request: Request) -> Response:
        return pages.render(request, "workers.html", **await workers_context())

    @router.get("/console/workers/live")
    async def workers_live(request: Request) -> Response:
        return pages.render(request, "workers_sections.html", **await workers_context())

    async def run_context(request: Request, run_id: str) -> dict[str, Any]:
        async with pool.connection() as conn:
            view = await store.show_run(conn, run_id)
            [run] = await workers.flag_unrunnable(conn, [view.run])

            async def rows(query: str, **params: object) -> list[DictRow]:
                cursor = await conn.execute(QUERIES[query], {"run_id": run_id, **params})
                return await cursor.fetchall()

            # The newest, in the timeline and the steps; `GET /runs/{id}/history` pages them all.
            history = await run_history(conn, run_id, limit=steps.CHECKPOINTS_SHOWN)
            approvals = await run_approvals(conn, run_id)
            finished = await steps.finished_nodes(conn, run_id)
            events = await rows(
                "console_webhook_events", limit=EVENTS_LIMIT, max_bytes=EVENT_PREVIEW_BYTES
            )
            notified = notifications(await rows("console_notifications"))
            waiting_for = view.run["waiting_for"] or {}
            limit = (
                await rows("console_limit", limit=waiting_for["limit"])
                if isinstance(waiting_for, dict) and isinstance(waiting_for.get("limit"), str)
                else []
            )
        taken = steps.run_steps(view.run, history.entries)
        return {
            "run": run,
            "checkpoint": view.checkpoint,
            "approvals": approvals,
            "steps": taken,
            "end": steps.run_end(view.run),
            "place": await graphs.place(view.run, taken, finished),
            "approvals_shown": APPROVALS_SHOWN,
            # Notifications have a section of their own, with their deliveries.
            "artifacts": [a for a in view.artifacts if a["type"] != "notification"],
            "notifications": notified,
            "timeline": timeline(view.run, history.entries, approvals, events),
            "checkpoints_hidden": history.earlier,
            "limit_wait": limit_wait(view.run, limit[0] if limit else None),
            "events_hidden": (events[0]["total"] - len(events)) if events else 0,
            # Forking is refused while the run runs: no button that could only fail.
            "may_fork": auth.allows(request, Role.ADMIN) and view.run["status"] != Status.RUNNING,
            "sent": next((a for a in approvals if a["consumed_at"] is None), None),
            "next": f"/console/runs/{run_id}",
            "notice": None,
        }

    @router.get("/console/runs/{run_id}")
    async def run_page(request: Request, run_id: str) -> Response:
        try:
            context = await run_context(request, run_id)
        except store.RunNotFound as exc:
            return pages.error(request, 404, str(exc), back="/console/runs")
        sent = request.query_params.get("sent", "")
        approvals = (e.row for e in context["timeline"] if e.kind == "approval")
        context["notice"] = next((a for a in approvals if str(a["id"]) == sent), None)
        context["outcome"] = Outcome.parse(request.query_params)
        return pages.render(request, "run.html", **context)

    @router.get("/console/runs/{run_id}/live")
    async def run_live(request: Request, run_id: str) -> Response:
        try:
            return pages.render(request, "run_sections.html", **await run_context(request, run_id))
        except store.RunNotFound as exc:
            return pages.error(request, 404, str(exc), back="/console/runs")

    @router.post("/console/runs/{run_id}/approvals")
    async def decide(request: Request, run_id: str) -> Response:
        form = await request.form()
        back = local_path(str(form.get("next", "")), default=f"/console/runs/{run_id}")
        if not auth.allows(request, Role.APPROVER):
            return pages.error(
                request, 403, "Approving and rejecting need the approver role.", back=back
            )
        identity = identity_of(request)
        try:
            async with pool.connection() as conn:
                run = await store.get_run(conn, run_id)
                if refusal := escalation_refusal(identity, run["waiting_for"]):
                    return pages.error(request, 403, refusal, back=back)
                approval = forms.parse_approval(
                    form,
                    run["waiting_for"],
                    lambda gate: served.gate(run["workflow"], gate),
                    identity.name if identity else None,
                )
                row = await store.approve(
                    conn,
                    run_id,
                    gate=approval.gate,
                    rejected=approval.rejected,
                    comment=approval.comment,
                    approver=approval.approver,
                    approver_ip=request.client.host if request.client else None,
                    payload=approval.payload,
                    pause_id=approval.pause_id,
                )
        except store.RunNotFound as exc:
            return pages.error(request, 404, str(exc), back=back)
        except store.InvalidInput as exc:
            return pages.error(request, 422, str(exc), back=back)
        except store.Refused as exc:
            return pages.error(request, 409, str(exc), back=back)
        response = RedirectResponse(with_query(back, sent=row["id"]), status_code=303)
        if identity is None:
            remember_approver(response, request, approval.approver)
        return response

    # Acting on runs: every form is answered with a page asking to confirm it, then,
    # sent again with confirm=yes, done by what the API's routes call.

    @router.post("/console/runs")
    async def start_run(request: Request) -> Response:
        if not auth.allows(request, Role.ADMIN):
            return pages.error(request, 403, ACTING_ON_RUNS, back="/console/runs")
        form = await request.form()
        fields = blank_run
        try:
            fields = forms.typed(form, forms.NEW_RUN_FIELDS)
            checked = await inputs.checked_run(served, config.engine, forms.parse_new_run(fields))
            if not actions.confirmed(form):
                key = fields["idempotency_key"] or store.new_id("console_")
                confirmation = actions.starting(checked, _without_key(fields), key)
                return pages.render(request, "confirm.html", confirmation=confirmation)
            async with pool.connection() as conn:
                started = await checked.start(conn)
        except store.InvalidInput as exc:
            return await runs_page(request, 422, Refusal(str(exc), fields))
        except store.Refused as exc:  # the key started another run
            return pages.error(request, 409, str(exc), back="/console/runs")
        back = f"/console/runs/{started.run['run_id']}"
        return RedirectResponse(Outcome("started").path(back), status_code=303)

    @router.post("/console/runs/bulk")
    async def act_on_runs(request: Request) -> Response:
        form = await request.form()
        back = local_path(str(form.get("next", "")), default="/console/runs")
        if not auth.allows(request, Role.ADMIN):
            return pages.error(request, 403, ACTING_ON_RUNS, back=back)
        try:
            chosen = forms.parse_bulk(form)
            async with pool.connection() as conn:
                if not actions.confirmed(form):
                    cursor = await conn.execute(
                        QUERIES["console_selection"], {"run_ids": chosen.run_ids}
                    )
                    confirmation = actions.bulk(chosen, await cursor.fetchall(), back)
                    return pages.render(request, "confirm.html", confirmation=confirmation)
                change = store.cancel_runs if chosen.operation == "cancel" else store.retry_runs
                changed = await change(conn, chosen.run_ids)
        except store.InvalidInput as exc:
            return pages.error(request, 422, str(exc), back=back)
        except store.Refused as exc:
            return pages.error(request, 409, str(exc), back=back)
        done = Outcome(actions.DONE[chosen.operation], len(changed), len(chosen.run_ids))
        return RedirectResponse(done.path(back), status_code=303)

    async def act_on_run(request: Request, run_id: str, operation: forms.Operation) -> Response:
        back = f"/console/runs/{run_id}"
        if not auth.allows(request, Role.ADMIN):
            return pages.error(request, 403, ACTING_ON_RUNS, back=back)
        form = await request.form()
        try:
            async with pool.connection() as conn:
                if not actions.confirmed(form):
                    run = await store.get_run(conn, run_id)
                    cursor = await conn.execute(QUERIES["console_failed_jobs"], {"run_id": run_id})
                    jobs = await cursor.fetchone()
                    confirmation = actions.single(operation, run, jobs["n"] if jobs else 0)
                    return pages.render(request, "confirm.html", confirmation=confirmation)
                change = store.cancel_run if operation == "cancel" else store.retry_run
                changed = await change(conn, run_id)
        except store.RunNotFound as exc:
            return pages.error(request, 404, str(exc), back="/console/runs")
        except store.Refused as exc:
            return pages.error(request, 409, str(exc), back=back)
        done = Outcome(actions.DONE[operation], jobs=changed.get("reopened_jobs") or 0)
        return RedirectResponse(done.path(back), status_code=303)

    @router.post("/console/runs/{run_id}/cancel")
    async def cancel(request: Request, run_id: str) -> Response:
        return await act_on_run(request, run_id, "cancel")

    @router.post("/console/runs/{run_id}/retry")
    async def retry(request: Request, run_id: str) -> Response:
        return await act_on_run(request, run_id, "retry")

    @router.post("/console/runs/{run_id}/fork")
    async def fork(request: Request, run_id: str) -> Response:
        back = f"/console/runs/{run_id}"
        if not auth.allows(request, Role.ADMIN):
            return pages.error(request, 403, "Forking a run needs the admin role.", back=back)
        form = await request.form()
        checkpoint_id = form.get("checkpoint_id")
        if not isinstance(checkpoint_id, str) or not checkpoint_id:
            return pages.error(request, 422, "checkpoint_id: which checkpoint to fork", back=back)
        try:
            async with pool.connection() as conn:
                if not actions.confirmed(form):
                    await store.get_run(conn, run_id)
                    params = {"run_id": run_id, "checkpoint_id": checkpoint_id}
                    cursor = await conn.execute(ENGINE_QUERIES["fork_point"], params)
                    if (point := await cursor.fetchone()) is None:
                        raise CheckpointNotFound(run_id, checkpoint_id)
                    confirmation = actions.fork(run_id, checkpoint_id, point["step"])
                    return pages.render(request, "confirm.html", confirmation=confirmation)
                forked = await fork_run(conn, run_id, checkpoint_id)
        except (store.RunNotFound, CheckpointNotFound) as exc:
            return pages.error(request, 404, str(exc), back=back)
        except store.InvalidInput as exc:
            return pages.error(request, 422, str(exc), back=back)
        except store.Refused as exc:
            return pages.error(request, 409, str(exc), back=back)
        path = Outcome("forked").path(f"/console/runs/{forked['run_id']}")
        return RedirectResponse(path, status_code=303)

    @router.get("/console/runs/{run_id}/actions/live")
    async def run_actions_live(request: Request, run_id: str) -> Response:
        try:
            async with pool.connection() as conn:
                run = await store.get_run(conn, run_id)
        except store.RunNotFound as exc:
            return pages.error(request, 404, str(exc), back="/console/runs")
        return pages.render(request, "run_buttons.html", run=run)

    blank_schedule = {
        **dict.fromkeys(forms.SCHEDULE_FIELDS, ""),
        "timezone": "UTC",
        "workflow": served.default_workflow,
        "overlap": DEFAULT_OVERLAP,
        "catchup": DEFAULT_CATCHUP,
    }

    async def schedules_page(
        request: Request, status_code: int = 200, refusal: Refusal | None = None
    ) -> Response:
        async with pool.connection() as conn:
            rows = await schedules.list_schedules(conn)
        return pages.render(
            request,
            "schedules.html",
            status_code,
            schedules=[schedules.view(r) for r in rows],
            may_change=auth.allows(request, Role.ADMIN),
            workflows=list(served.by_name),
            overlaps=OVERLAPS,
            new=refusal.typed if refusal and refusal.schedule_id is None else blank_schedule,
            done=Done.parse(request.query_params),
            refusal=refusal,
        )

    @router.get("/console/schedules")
    async def schedules_list(request: Request) -> Response:
        return await schedules_page(request)

    @router.post("/console/schedules")
    async def create_schedule(request: Request) -> Response:
        if not auth.allows(request, Role.ADMIN):
            return pages.error(request, 403, CHANGING_SCHEDULES, back="/console/schedules")
        fields = blank_schedule
        try:
            fields = forms.typed(await request.form(), forms.SCHEDULE_FIELDS)
            new = forms.parse_schedule(fields)
            async with pool.connection() as conn:
                created = await inputs.create_schedule(conn, served, new)
        except store.InvalidInput as exc:
            return await schedules_page(request, 422, Refusal(str(exc), fields))
        return RedirectResponse(Done("created", created["schedule_id"]).path(), status_code=303)

    @router.post("/console/schedules/{schedule_id}/backfill")
    async def backfill_schedule(request: Request, schedule_id: str) -> Response:
        if not auth.allows(request, Role.ADMIN):
            return pages.error(request, 403, CHANGING_SCHEDULES, back="/console/schedules")
        fields = dict.fromkeys(forms.BACKFILL_FIELDS, "")
        try:
            fields = forms.typed(await request.form(), forms.BACKFILL_FIELDS)
            span = forms.parse_backfill(fields)
            async with pool.connection() as conn:
                done = await schedules.backfill(conn, schedule_id, span.start, span.end)
        except schedules.ScheduleNotFound as exc:
            return pages.error(request, 404, str(exc), back="/console/schedules")
        except store.InvalidInput as exc:
            return await schedules_page(request, 422, Refusal(str(exc), fields, schedule_id))
        did = Done("backfilled", schedule_id, len(done.created), len(done.fire_times))
        return RedirectResponse(did.path(), status_code=303)

    @router.post("/console/schedules/{schedule_id}/{action}")
    async def change_schedule(request: Request, schedule_id: str, action: str) -> Response:
        if action not in SCHEDULE_CHANGES:
            return pages.error(request, 404, f"no schedule action {action!r}")
        if not auth.allows(request, Role.ADMIN):
            return pages.error(request, 403, CHANGING_SCHEDULES, back="/console/schedules")
        done, change = SCHEDULE_CHANGES[action]
        try:
            async with pool.connection() as conn:
                await change(conn, schedule_id)
        except schedules.ScheduleNotFound as exc:
            return pages.error(request, 404, str(exc), back="/console/schedules")
        except store.InvalidInput as exc:  # resuming a schedule that fires no more
            return pages.error(request, 422, str(exc), back="/console/schedules")
        return RedirectResponse(Done(done, schedule_id).path(), status_code=303)

    @router.get("/console/login")
    async def login_page(request: Request) -> Response:
        back = local_path(request.query_params.get("next"))
        if not auth.required(request):
            return RedirectResponse(back, status_code=303)
        return pages.render(request, "login.html", back=back, failed=False)

    @router.post("/console/login")
    async def login(request: Request) -> Response:
        form = await request.form()
        back = local_path(str(form.get("next", "")))
        token = form.get("token", "")
        if not auth.required(request):
            return RedirectResponse(back, status_code=303)
        response = RedirectResponse(back, status_code=303)
        try:
            await auth.sign_in(request, response, token if isinstance(token, str) else "")
        except SignInRefused as refused:
            if refused.retry_after is None:
                return pages.render(request, "login.html", 401, back=back, failed=True)
            page = pages.error(request, 429, "Too many failed sign-ins: wait a minute.", back=back)
            page.headers["Retry-After"] = str(max(1, round(refused.retry_after)))
            return page
        return response

    @router.post("/console/logout")
    async def logout(request: Request) -> Response:
        response = RedirectResponse("/", status_code=303)
        await auth.sign_out(request, response)
        return response

    @router.get("/console/static/{name}")
    async def static_file(request: Request, name: str) -> Response:
        if name not in static:
            return pages.error(request, 404, f"no static file {name!r}")
        media_type, content = static[name]
        return Response(content, media_type=media_type, headers={"Cache-Control": "no-cache"})

    return router


def _without_key(fields: dict[str, str]) -> dict[str, str]:
    return {name: value for name, value in fields.items() if name != "idempotency_key"}


def _with_sent(row: dict[str, Any]) -> dict[str, Any]:
    """The inbox row with its approval not yet taken up, if any, as `sent`."""
    sent = None
    if row["sent_id"] is not None:
        sent = {
            "id": row["sent_id"],
            "decision": row["sent_decision"],
            "approver": row["sent_by"],
            "created_at": row["sent_at"],
        }
    return {**row, "sent": sent}
