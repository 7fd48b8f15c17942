"""`orchestrator schedules ...`: runs started on a cron schedule (docs/time.md#schedules)."""

from datetime import datetime
from typing import Annotated

import typer

from engine.cli.common import (
    UsageFailure,
    console,
    new_table,
    print_json,
    schedules_app,
    with_db,
)
from engine.cli.runs import run_input
from engine.runtime import schedules
from engine.runtime.schedule_times import DEFAULT_CATCHUP, DEFAULT_OVERLAP, OVERLAPS, Timing

Id = Annotated[str, typer.Argument(help="The schedule.")]


@schedules_app.command("create")
def schedules_create(
    cron: Annotated[
        str,
        typer.Option(
            help="Cron expression: 5 fields (minute hour day month weekday), a 6th for "
            "seconds, e.g. '0 9 * * MON-FRI' or '* * * * * */2'."
        ),
    ],
    timezone: Annotated[str, typer.Option(help="IANA timezone the times are in.")],
    project: Annotated[str, typer.Option(help="Project slug of the runs.")],
    brief: Annotated[str | None, typer.Option(help="What each run should produce.")] = None,
    payload: Annotated[str | None, typer.Option(help="The runs' input as a JSON object.")] = None,
    workflow: Annotated[
        str | None, typer.Option(help="A workflow of the App (default: its first).")
    ] = None,
    overlap: Annotated[
        str,
        typer.Option(
            help=f"While a run it started has not ended: {', '.join(OVERLAPS)} (hold one start)."
        ),
    ] = DEFAULT_OVERLAP,
    catchup: Annotated[
        str,
        typer.Option(help="Fire times missed (downtime) up to this old still start: 45s, 30m, 2h."),
    ] = DEFAULT_CATCHUP,
) -> None:
    """Create a schedule; prints its id as the last line."""
    timing = Timing.parse(
        cron=cron, timezone=timezone, overlap=overlap, catchup=catchup, prefix="--"
    )
    name, body = run_input(project, brief, payload, workflow)
    row = with_db(
        lambda conn: schedules.create_schedule(
            conn, timing=timing, project=project, workflow=name, payload=body
        )
    )
    print(row["schedule_id"])


@schedules_app.command("list")
def schedules_list(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Every schedule with its next fire times (in its timezone)."""
    rows = with_db(schedules.list_schedules)
    if as_json:
        print_json([schedules.view(row) for row in rows])
        return
    table = new_table(
        "schedule_id", "cron", "timezone", "project", "workflow", "overlap", "catchup", "next"
    )
    for row in rows:
        shown = schedules.view(row)
        if "problem" in shown:
            upcoming = [shown["problem"]]
        else:
            zone = schedules.timing_of(row).zone
            upcoming = [f"{at.astimezone(zone):%Y-%m-%d %H:%M:%S%z}" for at in shown["upcoming"]]
        table.add_row(
            row["schedule_id"],
            row["cron"],
            row["timezone"],
            row["project"],
            row["workflow"],
            row["overlap"],
            str(row["catchup"]),
            "paused" if row["paused"] else ", ".join(upcoming),
        )
    console.print(table)


@schedules_app.command("pause")
def schedules_pause(schedule_id: Id) -> None:
    """Stop firing until resumed (a start held by buffer_one is dropped)."""
    with_db(lambda conn: schedules.pause_schedule(conn, schedule_id))
    console.print(f"paused {schedule_id}")


@schedules_app.command("resume")
def schedules_resume(schedule_id: Id) -> None:
    """Fire again, from the first fire time after now."""
    row = with_db(lambda conn: schedules.resume_schedule(conn, schedule_id))
    console.print(f"resumed {schedule_id}; next fire time {row['next_fire_at']}")


@schedules_app.command("delete")
def schedules_delete(schedule_id: Id) -> None:
    """Remove a schedule; the runs it started stay."""
    with_db(lambda conn: schedules.delete_schedule(conn, schedule_id))
    console.print(f"deleted {schedule_id}")


@schedules_app.command("backfill")
def schedules_backfill(
    schedule_id: Id,
    start: Annotated[
        str, typer.Option("--from", help="ISO time with its offset, e.g. 2026-12-01T00:00Z.")
    ],
    end: Annotated[str, typer.Option("--to", help="ISO time with its offset (inclusive).")],
) -> None:
    """Start a run for every fire time in the range that has none yet (at most 1000)."""
    begin, until = _instant(start, "--from"), _instant(end, "--to")
    done = with_db(lambda conn: schedules.backfill(conn, schedule_id, begin, until, prefix="--"))
    console.print(
        f"{len(done.fire_times)} fire times, {len(done.created)} runs started, "
        f"{len(done.fire_times) - len(done.created)} had one already"
    )
    for run_id in done.created:
        print(run_id)


def _instant(text: str, option: str) -> datetime:
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise UsageFailure(f"{option}: {text!r} is not an ISO 8601 time") from None
    if at.tzinfo is None:
        raise UsageFailure(f"{option}: {text!r} needs its UTC offset (or Z)")
    return at
