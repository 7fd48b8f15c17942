"""`orchestrator workers`: the daemons' heartbeat rows, and the runs none of them can take."""

from typing import Annotated

import typer

from engine.cli.common import app, console, new_table, print_json, with_db
from engine.runtime import workers


@app.command("workers")
def workers_list(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """The daemons, live ones first, then gone ones, and the live runs that no live worker
    can take: their workflow, or their graph version, no live daemon has."""
    shown = with_db(workers.overview)
    if as_json:
        print_json(shown)
        return
    table = new_table(
        "worker_id", "host", "pid", "version", "workflows", "concurrency", "runs held", "last seen"
    )
    for worker in shown["workers"]:
        table.add_row(
            worker["worker_id"],
            worker["host"],
            str(worker["pid"]),
            worker["version"],
            ", ".join(f"{name} {version}" for name, version in sorted(worker["workflows"].items())),
            str(worker["concurrency"]),
            str(worker["runs_held"]),
            worker["seen"] if worker["live"] else f"{worker['seen']} (gone)",
        )
    console.print(table)
    for kind in shown["unrunnable"]:
        waiting = "1 live run waits" if kind["runs"] == 1 else f"{kind['runs']} live runs wait"
        console.print(f"{kind['reason']}: {waiting}")
