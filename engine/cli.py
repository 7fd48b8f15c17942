"""The `orchestrator` command: a thin layer over the settings, the store and the daemon."""

import asyncio
import contextlib
import json
import secrets
import sys
from collections.abc import Awaitable, Callable, Coroutine
from typing import Annotated, Any, NoReturn, TypeVar

import psycopg
import typer
from pydantic import SecretStr, ValidationError
from rich.console import Console
from rich.table import Table

# Typer vendors click; its usage errors are only reachable here.
from typer._click.exceptions import UsageError

from engine import logs, store
from engine.access import LOOPBACK, identities
from engine.access.identities import Role
from engine.database import SHOWING, connect, database_url, open_pool
from engine.migrations import MigrationError, current_version, discover, migrate
from engine.settings import Settings
from engine.signals import stop_on_signals

app = typer.Typer(
    help="A durable workflow engine on LangGraph and PostgreSQL.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
runs_app = typer.Typer(help="Create, inspect, approve and control runs.", no_args_is_help=True)
db_app = typer.Typer(help="The database the orchestrator uses.", no_args_is_help=True)
tokens_app = typer.Typer(
    help="Named API and console identities, each with a role.", no_args_is_help=True
)
app.add_typer(runs_app, name="runs")
app.add_typer(db_app, name="db")
app.add_typer(tokens_app, name="tokens")

# Piped output is read by scripts and people with wide terminals: don't squeeze tables to 80.
console = Console(width=None if sys.stdout.isatty() else 240)
T = TypeVar("T")


class UsageFailure(Exception):
    """Bad arguments: exit 2 with one line."""


def _fail(message: str, code: int) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(code)


def main() -> None:
    try:
        app(standalone_mode=False)
    except typer.Abort:
        _fail("aborted", 1)
    except UsageError as error:
        _fail(error.format_message().replace("\n", " "), 2)
    except (UsageFailure, store.InvalidInput, MigrationError) as error:
        _fail(str(error), 2)
    except (store.RunNotFound, store.Refused) as error:
        _fail(str(error), 1)
    except ExceptionGroup as group:
        # A service that cannot bind its port (another process has it) ends the TaskGroup.
        unbound = group.subgroup(OSError)
        if unbound is None:
            raise
        _fail(f"cannot listen: {unbound.exceptions[0]}", 1)
    except ValidationError as error:
        first = error.errors()[0]
        field = "ORCHESTRATOR_" + str(first["loc"][0]).upper() if first["loc"] else "settings"
        _fail(f"setting {field}: {first['msg']}", 2)


async def _with_connection(
    settings: Settings, action: Callable[[store.Connection], Awaitable[T]]
) -> T:
    url = database_url(settings)
    SHOWING.set(True)  # a command shows what it reads; it runs no graph
    async with await connect(url, settings) as conn:
        return await action(conn)


def _run(action: Callable[[store.Connection], Awaitable[T]]) -> T:
    return run_async(_with_connection(Settings(), action))


def run_async(main: Coroutine[Any, Any, T]) -> T:
    """Run `main` on uvloop where it is installed, else on asyncio's own loop."""
    try:
        import uvloop
    except ImportError:  # Windows
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


def _json_object(text: str, option: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise UsageFailure(
            f"{option}: not valid JSON ({error.msg} at position {error.pos})"
        ) from None
    if not isinstance(value, dict):
        raise UsageFailure(f"{option}: must be a JSON object, got {type(value).__name__}")
    return value


def _print_json(value: object) -> None:
    print(json.dumps(value, default=str, indent=2))


# --- services -----------------------------------------------------------------


@app.command("migrate")
def migrate_command(
    to: Annotated[
        int | None, typer.Option("--to", help="Target version (default: newest).")
    ] = None,
) -> None:
    """Bring the schema to the newest version (or --to N, up or down)."""
    settings = Settings()
    logs.configure(settings.log_level, settings.log_format)
    before, after = _run(lambda conn: migrate(conn, to))
    console.print(f"schema at version {after} (was {before})")


@app.command()
def daemon(
    concurrency: Annotated[int | None, typer.Option(min=1, help="Runs at a time.")] = None,
    worker_id: Annotated[str | None, typer.Option(help="Name in leases and logs.")] = None,
) -> None:
    """Run the worker: claim runs, execute them, resume them after approvals and restarts."""
    settings = _overridden(concurrency=concurrency, worker_id=worker_id)
    run_async(_serve(settings, daemon=True))


@app.command()
def api(
    port: Annotated[int | None, typer.Option(min=1, max=65535, help="Port to listen on.")] = None,
) -> None:
    """Serve the HTTP API: runs, approvals, provider webhooks, health."""
    run_async(_serve(_overridden(api_port=port), api=True))


@app.command()
def sandbox(
    port: Annotated[int | None, typer.Option(min=1, max=65535, help="Port to listen on.")] = None,
) -> None:
    """Serve the sandbox providers (kie.ai, Shotstack, upload-post) on loopback."""
    run_async(_serve(_overridden(sandbox_port=port), sandbox=True, needs_database=False))


@app.command()
def up(
    concurrency: Annotated[int | None, typer.Option(min=1, help="Runs at a time.")] = None,
) -> None:
    """All in one: database (embedded unless DATABASE_URL is set), migrations, daemon, API,
    and the sandbox providers when no provider key is set."""
    settings = _overridden(concurrency=concurrency)
    if settings.uses_sandbox:
        # The sandbox and the API share this process: sign its webhooks with a secret
        # made up now, so they wake runs at once instead of leaving it to the timer.
        made_up = {
            name: SecretStr(secrets.token_urlsafe(32))
            for name in ("kie_webhook_secret", "upload_post_webhook_secret")
            if getattr(settings, name) is None
        }
        settings = settings.model_copy(update=made_up)
    run_async(
        _serve(settings, migrate_first=True, daemon=True, api=True, sandbox=settings.uses_sandbox)
    )


def _overridden(**options: object) -> Settings:
    settings = Settings()
    settings = settings.model_copy(update={k: v for k, v in options.items() if v is not None})
    logs.configure(settings.log_level, settings.log_format, worker_id=settings.worker_id)
    return settings


async def _serve(
    settings: Settings,
    *,
    migrate_first: bool = False,
    daemon: bool = False,
    api: bool = False,
    sandbox: bool = False,
    needs_database: bool = True,
) -> None:
    # LangGraph and FastAPI take a second to import: only the services pay for them.
    from engine.api import create_app
    from engine.daemon import Daemon
    from engine.health import health_app
    from engine.references import load_reference
    from engine.serving import serve_http
    from engine.telemetry import DISABLED, setup
    from engine.workflow import load_workflows

    url = database_url(settings) if needs_database else ""
    if needs_database:
        await _check_schema(url, settings, migrate_first=migrate_first)
    if api:
        await _check_exposure(url, settings)
    stop = asyncio.Event()
    # One for the process: `up` serves the daemon's metrics on the API's /metrics too.
    telemetry = setup(settings) if daemon or api else DISABLED
    with stop_on_signals(stop), contextlib.closing(telemetry):
        async with asyncio.TaskGroup() as services:
            http = []
            if sandbox:
                run_sandbox = load_reference(settings.sandbox_service, "sandbox_service")
                http.append(services.create_task(run_sandbox(settings)))
            if api:
                verifiers = load_reference(settings.webhook_verifiers, "webhook_verifiers")
                app = create_app(settings, verifiers(settings), url=url, telemetry=telemetry)
                http.append(
                    services.create_task(
                        serve_http(
                            app, settings.api_host, settings.api_port, settings.trusted_proxies
                        )
                    )
                )
            if daemon:
                workflows = load_workflows(settings.workflows)
                async with open_pool(url, settings) as pool:
                    worker = Daemon(url, pool, settings, workflows, telemetry)
                    if settings.health_port:
                        vitals = health_app(worker, pool, worker.stale_after, telemetry)
                        http.append(
                            services.create_task(
                                serve_http(vitals, settings.health_host, settings.health_port)
                            )
                        )
                    await worker.serve(stop)
            else:
                await stop.wait()
            for task in http:
                task.cancel()


async def _check_exposure(url: str, settings: Settings) -> None:
    """A weak token is refused; with no token at all the API may listen on loopback only."""
    if problem := identities.weak_bootstrap(settings.api_token):
        raise UsageFailure(problem)
    if settings.api_token is not None or settings.api_host in LOOPBACK:
        return
    async with await connect(url, settings) as conn:
        if await identities.any_live_token(conn):
            return
    raise UsageFailure(
        f"ORCHESTRATOR_API_HOST={settings.api_host}: with no token the API listens on loopback "
        "only; set ORCHESTRATOR_API_TOKEN or create one with 'orchestrator tokens create'"
    )


async def _check_schema(url: str, settings: Settings, *, migrate_first: bool) -> None:
    async with await connect(url, settings) as conn:
        if migrate_first:
            await migrate(conn)
        version, head = await current_version(conn), len(discover())
    # Newer is fine: migrations are additive, and old code must run on the new
    # schema through a rolling upgrade (or a rollback).
    if version < head:
        raise UsageFailure(
            f"database schema is at version {version}, this code needs {head}: "
            "run 'orchestrator migrate'"
        )


@app.command()
def prune(
    older_than: Annotated[
        str, typer.Option(help="Finished runs last changed longer ago than this: 30d, 12h, ...")
    ] = "30d",
    delete_runs: Annotated[
        bool, typer.Option("--delete-runs", help="Remove the runs altogether, not just history.")
    ] = False,
) -> None:
    """Shed LangGraph history of finished runs (keeping each one's latest checkpoint)."""
    from engine.retention import prune as prune_runs

    age = store.parse_duration(older_than, "--older-than")
    settings = Settings()
    logs.configure(settings.log_level, settings.log_format)
    done = _run(lambda conn: prune_runs(conn, age, delete_runs=delete_runs))
    if done is None:
        raise store.Refused("another prune is running; try again when it has finished")
    print(f"pruned history of {done.runs} runs, deleted {done.deleted} runs")


# --- runs ---------------------------------------------------------------------


@runs_app.command("create")
def runs_create(
    project: Annotated[str, typer.Option(help="Project slug.")],
    brief: Annotated[str | None, typer.Option(help="What the run should produce.")] = None,
    payload: Annotated[str | None, typer.Option(help="The run's input as a JSON object.")] = None,
    workflow: Annotated[str, typer.Option(help="Registered workflow name.")] = "production",
) -> None:
    """Queue a run; prints its run_id as the last line."""
    body = _json_object(payload, "--payload") if payload is not None else {}
    if brief is not None:
        body["brief"] = brief
    from engine.workflow import checked_input, input_schema_of

    store.validate_project(project)
    workflows = Settings().workflows
    if workflow not in workflows:
        raise UsageFailure(f"--workflow: no workflow named {workflow!r}")
    checked_input(input_schema_of(workflows[workflow], f"workflow {workflow!r}"), body)
    run = _run(
        lambda conn: store.create_run(conn, project=project, payload=body, workflow=workflow)
    )
    print(run["run_id"])


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
        rows = _run(lambda conn: store.stuck_runs(conn, older_than=age, limit=limit))
    else:
        rows = _run(lambda conn: store.list_runs(conn, status=status, project=project, limit=limit))
    if as_json:
        _print_json(rows)
        return
    table = _table(
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
    """The run, its current checkpoint and its artifacts."""
    view = _run(lambda conn: store.show_run(conn, run_id))
    if as_json:
        _print_json({"run": view.run, "checkpoint": view.checkpoint, "artifacts": view.artifacts})
        return
    run = _table("field", "value", title=f"run {run_id}")
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
    ):
        if view.run.get(key) is not None:
            run.add_row(key, _short(view.run[key]))
    console.print(run)
    if view.checkpoint:
        console.print(
            f"checkpoint step {view.checkpoint['step']} at {view.checkpoint['updated_at']}"
        )
        console.print_json(json.dumps(view.checkpoint["state"], default=str))
    artifacts = _table("type", "persona", "provider", "url", "created_at", title="artifacts")
    for artifact in view.artifacts:
        artifacts.add_row(
            artifact["type"],
            artifact["persona"] or "",
            artifact["provider"] or "",
            artifact["url"] or "",
            f"{artifact['created_at']:%H:%M:%S}",
        )
    console.print(artifacts)


def _table(*columns: str, title: str | None = None) -> Table:
    """Identifiers and times stay on one line, whatever the terminal's width."""
    table = Table(title=title)
    for column in columns:
        table.add_column(column, no_wrap=column != "value", overflow="fold")
    return table


def _short(value: object, width: int = 100) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= width else text[: width - 1] + "…"


@runs_app.command("approve")
def runs_approve(
    run_id: Annotated[str, typer.Argument(help="The run.")],
    gate: Annotated[str, typer.Option(help="The gate the run waits at.")],
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
    body = _json_object(payload, "--payload") if payload is not None else None
    row = _run(
        lambda conn: store.approve(
            conn,
            run_id,
            gate=gate,
            rejected=reject,
            comment=comment,
            approver=approver,
            payload=body,
            pause_id=pause,
        )
    )
    console.print(f"{row['decision']} {run_id} at gate {gate} (approval {row['id']})")


@runs_app.command("cancel")
def runs_cancel(run_id: Annotated[str, typer.Argument(help="The run.")]) -> None:
    """Cancel a run that has not ended."""
    _run(lambda conn: store.cancel_run(conn, run_id))
    console.print(f"cancelled {run_id}")


@runs_app.command("retry")
def runs_retry(run_id: Annotated[str, typer.Argument(help="The run.")]) -> None:
    """Queue a failed run again; it resumes from its last checkpoint, and a step
    whose provider job failed submits a new job."""
    run = _run(lambda conn: store.retry_run(conn, run_id))
    reopened = run["reopened_jobs"]
    jobs = f"; {reopened} failed provider job{'s' * (reopened != 1)} will be submitted anew"
    console.print(f"queued {run_id} again{jobs if reopened else ''}")


@tokens_app.command("create")
def tokens_create(
    name: Annotated[str, typer.Option(help="Who the token is for; recorded on their approvals.")],
    role: Annotated[
        Role, typer.Option(help="viewer reads; approver also approves; admin also runs.")
    ],
) -> None:
    """Create a token and print it, once: only its hash is kept."""
    if not identities.NAME.match(name):
        raise UsageFailure(
            f"--name: {name[:80]!r} must be 1 to 63 letters, digits or '_.@-', "
            "starting with a letter or digit"
        )

    async def create(conn: store.Connection) -> str:
        try:
            _, token = await identities.create_token(conn, name, role)
        except psycopg.errors.UniqueViolation:
            raise store.Refused(
                f"a live token named {name!r} exists: revoke it first ('tokens revoke {name}')"
            ) from None
        return token

    token = _run(create)
    print(token)
    print(f"token for {name} ({role}): shown once, keep it safe", file=sys.stderr)


@tokens_app.command("list")
def tokens_list(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Every token: name, role, when it was created and revoked (never the token)."""
    rows = _run(identities.list_tokens)
    if as_json:
        _print_json(rows)
        return
    table = _table("name", "role", "created", "revoked")
    for row in rows:
        table.add_row(
            row["name"], row["role"], str(row["created_at"]), str(row["revoked_at"] or "")
        )
    console.print(table)


@tokens_app.command("revoke")
def tokens_revoke(name: Annotated[str, typer.Argument(help="The token's name.")]) -> None:
    """Revoke the live token of NAME at once, with every console session it opened."""

    async def revoke(conn: store.Connection) -> None:
        if await identities.revoke_token(conn, name) is None:
            raise store.Refused(f"no live token named {name!r}")

    _run(revoke)
    console.print(f"revoked the token of {name}")


@db_app.command("url")
def db_url() -> None:
    """Print the database URL (starting the embedded server if that is the one in use)."""
    print(database_url(Settings()))
