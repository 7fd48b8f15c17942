"""`orchestrator runs ...`: create, inspect, approve and control runs."""

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.table import Table

from engine.cli.common import (
    UsageFailure,
    console,
    json_object,
    loaded,
    new_table,
    print_json,
    run_async,
    runs_app,
    short,
    with_db,
)
from engine.runtime import approvals, steps, store
from engine.runtime.timers import time_left
from engine.settings import Settings, read


@runs_app.command("create")
def runs_create(
    project: Annotated[str, typer.Option(help="Project slug.")],
    brief: Annotated[str | None, typer.Option(help="What the run should produce.")] = None,
    payload: Annotated[str | None, typer.Option(help="The run's input as a JSON object.")] = None,
    workflow: Annotated[
        str | None, typer.Option(help="A workflow of the App (default: its first).")
    ] = None,
    not_before: Annotated[
        str | None,
        typer.Option(
            help="Start no earlier than this ISO 8601 time, with its offset "
            "(2026-12-03T09:00:00+01:00); a past time starts at once."
        ),
    ] = None,
    key: Annotated[
        str | None,
        typer.Option(
            help="Idempotency key, unique per project: run again with the same key and "
            "input, it prints the run it created instead of creating another."
        ),
    ] = None,
    webhook: Annotated[
        str | None,
        typer.Option(help="A URL the run's gates and end are POSTed to, signed."),
    ] = None,
) -> None:
    """Queue a run; prints its run_id as the last line."""
    start = store.parse_not_before(not_before, "--not-before") if not_before is not None else None
    name, body = run_input(project, brief, payload, workflow)
    from engine.runtime.webhook_targets import run_webhook

    settings = read(Settings)
    target = run_async(
        run_webhook(webhook, loaded(settings)[0].default_webhook, settings, "--webhook")
    )
    started = with_db(
        lambda conn: store.start_run(
            conn,
            project=project,
            payload=body,
            workflow=name,
            not_before=start,
            idempotency_key=key,
            key_field="--key",
            webhook_url=target,
        )
    )
    if not started.created:
        print(f"--key {key!r} already started this run (status {started.run['status']})")
    print(started.run["run_id"])


def run_input(
    project: str, brief: str | None, payload: str | None, workflow: str | None
) -> tuple[str, dict[str, Any]]:
    """The workflow (default: the App's first) and the input a run of it starts with,
    checked against the workflow's input schema (exit 2 naming the option)."""
    body = json_object(payload, "--payload") if payload is not None else {}
    if brief is not None:
        body["brief"] = brief
    from engine.runtime.workflow import checked_input

    store.validate_project(project)
    chosen, _ = loaded(read(Settings))
    name = workflow or chosen.default_workflow
    if name not in chosen.by_name:
        raise UsageFailure(f"--workflow: no workflow named {name!r}")
    checked_input(chosen.by_name[name].input_schema, body)
    return name, body


@runs_app.command("list")
def runs_list(
    status: Annotated[str | None, typer.Option(help="Only runs with this status.")] = None,
    project: Annotated[str | None, typer.Option(help="Only runs of this project.")] = None,
    stuck: Annotated[
        bool, typer.Option("--stuck", help="Only live runs older than --older-than (oldest first).")
    ] = False,
    older_than: Annotated[
        str, typer.Option(help="With --stuck: age like 45s, 30m, 2h, 7d.")
    ] = "30m",
    limit: Annotated[int, typer.Option(min=1, max=10000, help="At most this many.")] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List runs, newest first; --stuck lists the seed's stuck runs, oldest first."""
    if stuck:
        age = store.parse_duration(older_than, "--older-than")
        rows = with_db(lambda conn: store.stuck_runs(conn, older_than=age, limit=limit))
    else:
        if status is not None:
            store.known_status(status, loaded(read(Settings))[0].gate_names(), "--status")
        rows = with_db(
            lambda conn: store.list_runs(conn, status=status, project=project, limit=limit)
        )
    if as_json:
        print_json(rows)
        return
    table = new_table(
        "run_id", "project", "status", "created_at", "minutes" if stuck else "updated_at"
    )
    for row in rows:
        last = (
            f"{row['minutes_running']:.0f}" if stuck else f"{row['updated_at']:%Y-%m-%d %H:%M:%S}"
        )
        table.add_row(
            row["run_id"],
            row["project"],
            row["status"],
            f"{row['created_at']:%Y-%m-%d %H:%M:%S}",
            last,
        )
    console.print(table)


@runs_app.command("show")
def runs_show(
    run_id: Annotated[str, typer.Argument(help="The run.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """The run, its current checkpoint and its artifacts; who decided what at its gates,
    its steps and how it ended."""
    from engine.runtime.history import run_history

    async def read(conn: store.Connection) -> tuple[store.RunView, list[dict[str, Any]], Any]:
        view = await store.show_run(conn, run_id)
        history = await run_history(conn, run_id, limit=steps.CHECKPOINTS_SHOWN)
        return view, await approvals.run_approvals(conn, run_id), history

    view, decided, history = with_db(read)
    taken = steps.run_steps(view.run, history.entries)
    end = steps.run_end(view.run)
    if as_json:
        print_json(
            {
                "run": view.run,
                "checkpoint": view.checkpoint,
                "artifacts": view.artifacts,
                "approvals": decided,
                "steps": [step.to_json() for step in taken],
                "end": end.to_json() if end else None,
            }
        )
        return
    run = new_table("field", "value", title=f"run {run_id}")
    for key in (
        "project",
        "status",
        "workflow",
        "graph_version",
        "created_at",
        "updated_at",
        "lease_owner",
        "payload",
        "result",
        "error",
        "waiting_for",
        "schedule_id",
        "schedule_fire_time",
    ):
        if view.run.get(key) is not None:
            run.add_row(key, short(view.run[key]))
    if (due := store.due_at(view.run)) is not None:
        run.add_row("due_at", f"{due.isoformat()} ({time_left(due, datetime.now(UTC))})")
    console.print(run)
    if view.checkpoint:
        console.print(
            f"checkpoint step {view.checkpoint['step']} at {view.checkpoint['updated_at']}"
        )
        console.print_json(json.dumps(view.checkpoint["state"], default=str))
    artifacts = new_table("type", "persona", "provider", "url", "created_at", title="artifacts")
    for artifact in view.artifacts:
        artifacts.add_row(
            artifact["type"],
            artifact["persona"] or "",
            artifact["provider"] or "",
            artifact["url"] or "",
            f"{artifact['created_at']:%H:%M:%S}",
        )
    console.print(artifacts)
    console.print(_approvals_table(decided))
    console.print(_steps_table(taken, history.earlier))
    if end is not None:
        console.print(f"{end.status} at {end.at:%Y-%m-%d %H:%M:%S}: {end.cause}")


def _approvals_table(decided: list[dict[str, Any]]) -> Table:
    columns = ("at", "gate", "decision", "approver", "comment", "taken up")
    table = new_table(*columns, title="approvals (newest first)")
    for row in decided:
        who = row["approver"] or ""
        if row["timed_out"]:
            who += " (deadline)"
        taken = row["void_reason"] or (
            f"{row['consumed_at']:%Y-%m-%d %H:%M:%S}" if row["consumed_at"] else "not yet"
        )
        table.add_row(
            f"{row['created_at']:%Y-%m-%d %H:%M:%S}",
            row["gate"],
            row["decision"],
            who,
            short(row["comment"] or "", 60),
            taken,
        )
    return table


def _steps_table(taken: list[steps.Step], earlier: int) -> Table:
    more = f", after {earlier} earlier checkpoints not shown" if earlier else ""
    table = new_table(
        "node", "state", "started_at", "seconds", "attempts", "waited / error", title=f"steps{more}"
    )
    for step in taken:
        seconds = step.seconds
        notes = [w.describe() for w in step.waited]
        if step.error is not None:
            notes.append(short(steps.error_text(step.error), 80))
        table.add_row(
            step.node,
            step.state,
            f"{step.started_at:%Y-%m-%d %H:%M:%S}" if step.started_at else "",
            f"{seconds:.3f}" if seconds is not None else "",
            str(step.attempts) if step.attempts is not None else "",
            "; ".join(notes),
        )
    return table


@runs_app.command("approve")
def runs_approve(
    run_id: Annotated[str, typer.Argument(help="The run.")],
    gate: Annotated[
        str | None, typer.Option(help="The gate the run waits at (default: the one it is at).")
    ] = None,
    reject: Annotated[bool, typer.Option("--reject", help="Reject instead of approving.")] = False,
    comment: Annotated[
        str | None, typer.Option(help="Why; the workflow receives it with a rejection.")
    ] = None,
    approver: Annotated[str | None, typer.Option(help="Who decides.")] = None,
    payload: Annotated[
        str | None, typer.Option(help="JSON object, e.g. an edited workflow.")
    ] = None,
    pause: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="The pause this answers (`waiting_for.pause_id` in `runs show`): refused "
            "if the run has moved on to another question since.",
        ),
    ] = None,
) -> None:
    """Approve (or --reject) the gate a run waits at."""
    body = json_object(payload, "--payload") if payload is not None else None
    row = with_db(
        lambda conn: approvals.approve(
            conn,
            run_id,
            gate=gate,
            field="--gate",
            check=_edit_checker(body, reject),
            rejected=reject,
            comment=comment,
            approver=approver,
            payload=body,
            pause_id=pause,
        )
    )
    console.print(f"{row['decision']} {run_id} at gate {row['gate']} (approval {row['id']})")


def _edit_checker(
    payload: dict[str, Any] | None, rejected: bool
) -> Callable[[dict[str, Any], str], None] | None:
    """How an approval's payload is checked against its gate's declared edits, once the
    run (and so its workflow and gate) is read; None when there is nothing to check."""
    if payload is None or rejected:
        return None
    from engine.runtime.workflow import checked_edit

    chosen, _ = loaded(read(Settings))
    return lambda run, gate: checked_edit(chosen.gate(run["workflow"], gate), payload)


RunArgument = Annotated[
    str | None, typer.Argument(help="The run; or leave it out and select runs by the options.")
]
StatusOption = Annotated[str | None, typer.Option(help="Only runs with this status.")]
ProjectOption = Annotated[str | None, typer.Option(help="Only runs of this project.")]
AgeOption = Annotated[
    str | None, typer.Option(help="Only runs created longer ago than this (45s, 30m, 2h, 7d).")
]
DryRunOption = Annotated[bool, typer.Option(help="Say how many runs it would take; change none.")]
YesOption = Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")]


@runs_app.command("cancel")
def runs_cancel(
    run_id: RunArgument = None,
    status: StatusOption = None,
    project: ProjectOption = None,
    older_than: AgeOption = None,
    dry_run: DryRunOption = False,
    yes: YesOption = False,
) -> None:
    """Cancel a run that has not ended, or every live run the options select."""
    if run_id is None:
        _bulk("cancel", status, project, older_than, dry_run=dry_run, yes=yes)
        return
    _single_only(status, project, older_than, dry_run)
    with_db(lambda conn: store.cancel_run(conn, run_id))
    console.print(f"cancelled {run_id}")


@runs_app.command("retry")
def runs_retry(
    run_id: RunArgument = None,
    status: StatusOption = None,
    project: ProjectOption = None,
    older_than: AgeOption = None,
    dry_run: DryRunOption = False,
    yes: YesOption = False,
) -> None:
    """Queue a failed run again (or every failed run the options select); each resumes
    from its last checkpoint, and a step whose provider job failed submits a new job."""
    if run_id is None:
        _bulk("retry", status, project, older_than, dry_run=dry_run, yes=yes)
        return
    _single_only(status, project, older_than, dry_run)
    run = with_db(lambda conn: store.retry_run(conn, run_id))
    reopened = run["reopened_jobs"]
    jobs = f"; {reopened} failed provider job{'s' * (reopened != 1)} will be submitted anew"
    console.print(f"queued {run_id} again{jobs if reopened else ''}")


def _single_only(*options: object) -> None:
    if any(options):
        raise UsageFailure("RUN_ID: give a run or the options that select runs, not both")


def _bulk(
    operation: str,
    status: str | None,
    project: str | None,
    older_than: str | None,
    *,
    dry_run: bool,
    yes: bool,
) -> None:
    """Cancel or retry the runs the options select: their count first, then (unless
    `--dry-run`) with confirmation, each run checked again as it changes."""
    app, _ = loaded(read(Settings))
    selection = store.bulk_selection(
        operation,
        status=status,
        project=project,
        older_than=older_than,
        gates=app.gate_names(),
        prefix="--",
    )
    run_ids = with_db(lambda conn: store.matching_runs(conn, selection))
    more = " (the most one command takes: run it again for the rest)" * (
        len(run_ids) == store.BULK_LIMIT
    )
    what = f"{len(run_ids)} run{'s' * (len(run_ids) != 1)}{more}"
    if dry_run or not run_ids:
        console.print(f"would {operation} {what}" if run_ids else f"no run to {operation}")
        for run_id in run_ids[:20]:
            console.print(f"  {run_id}")
        return
    if not yes:
        typer.confirm(f"{operation} {what}?", abort=True)
    change = store.cancel_runs if operation == "cancel" else store.retry_runs
    changed = with_db(lambda conn: change(conn, run_ids))
    done = "cancelled" if operation == "cancel" else "queued again"
    moved = len(run_ids) - len(changed)
    console.print(f"{done} {len(changed)} of {what}" + (f"; {moved} had moved on" * bool(moved)))
