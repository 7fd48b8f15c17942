"""`orchestrator runs history` and `runs fork`: a run's checkpoints, and a new run
from one of them."""

from typing import Annotated

import typer

from engine.cli.common import (
    UsageFailure,
    console,
    new_table,
    print_json,
    runs_app,
    short,
    with_db,
)
from engine.runtime import store
from engine.runtime.history import MAX_PAGE, PAGE, run_history


@runs_app.command("history")
def runs_history(
    run_id: Annotated[str, typer.Argument(help="The run.")],
    before: Annotated[
        str | None, typer.Option(help="Only checkpoints older than this one (the page before).")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=MAX_PAGE, help="At most this many.")] = PAGE,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """The run's checkpoints, oldest first: id, step, the nodes that made each, its time,
    what they wrote, what runs next and where the run paused."""
    from engine.service.history import history_json  # the API's JSON (imports FastAPI)

    found = with_db(lambda conn: run_history(conn, run_id, before=before, limit=limit))
    if as_json:
        print_json(history_json(found))
        return
    table = new_table(
        "checkpoint_id", "step", "nodes", "at", "wrote", "next", "paused", title=f"run {run_id}"
    )
    for entry in found.entries:
        wrote = [
            f"{w.channel}={short(w.value, 30)}" if w.shown else f"{w.channel} ({w.size} bytes)"
            for w in entry.writes
        ]
        if entry.writes_not_shown:
            wrote.append(f"and {entry.writes_not_shown} more")
        table.add_row(
            entry.checkpoint_id,
            "" if entry.step is None else str(entry.step),
            ", ".join(entry.nodes) or (entry.source or ""),
            f"{entry.at:%Y-%m-%d %H:%M:%S}" if entry.at else "",
            short("; ".join(wrote), 60),
            ", ".join(entry.next),
            short(entry.interrupts, 40) if entry.interrupts else "",
        )
    console.print(table)
    if found.before is not None:
        console.print(f"{found.earlier} earlier checkpoints: --before {found.before}")


@runs_app.command("fork")
def runs_fork(
    run_id: Annotated[str, typer.Argument(help="The run to fork; it is left as it was.")],
    checkpoint: Annotated[
        str | None,
        typer.Option(help="The checkpoint to continue from (`runs history`); default: the latest."),
    ] = None,
) -> None:
    """Queue a new run that continues from a checkpoint of RUN_ID: the step after it runs
    again, and its effects (publishing) happen afresh. Prints the new run id last."""
    from engine.runtime.forks import CheckpointNotFound, fork_run

    try:
        fork = with_db(lambda conn: fork_run(conn, run_id, checkpoint))
    except (CheckpointNotFound, store.Refused) as error:
        raise UsageFailure(str(error)) from None
    console.print(f"forked {run_id} at checkpoint {fork['forked_from_checkpoint']}")
    print(fork["run_id"])
