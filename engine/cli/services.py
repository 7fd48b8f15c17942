"""The long-running commands: migrate, daemon, api, the App's services, up; and prune."""

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Annotated, Any

import typer

from engine.cli.common import (
    UsageFailure,
    app,
    console,
    loaded,
    new_table,
    overridden,
    run_async,
)
from engine.cli.db import server_of, url_variable
from engine.db import embedded
from engine.db.connections import connect, database_url, open_pool
from engine.db.migrations import current_version, discover, migrate
from engine.observability import logs
from engine.runtime import store
from engine.service.access import LOOPBACK, identities
from engine.service.signals import stop_on_signals
from engine.settings import Settings, read

# How `up` learns that the API answers before it prints its banner.
READY_PROBE_INTERVAL = 0.1  # seconds
READY_PROBE_TIMEOUT = 2.0  # seconds

if TYPE_CHECKING:
    from engine.app import App, Service
    from engine.runtime.workflow import Workflow
    from engine.settings import Config


@app.command("migrate")
def migrate_command(
    to: Annotated[
        int | None, typer.Option("--to", help="Target version (default: newest).")
    ] = None,
) -> None:
    """Bring the schema to the newest version (or --to N, up or down)."""
    settings = read(Settings)
    logs.configure(settings.log_level, settings.log_format)
    before, after = run_async(migrate(database_url(settings), settings, to))
    console.print(f"schema at version {after} (was {before})")


@app.command()
def daemon(
    concurrency: Annotated[int | None, typer.Option(min=1, help="Runs at a time.")] = None,
    worker_id: Annotated[str | None, typer.Option(help="Name in leases and logs.")] = None,
) -> None:
    """Run the worker: claim runs, execute them, resume them after approvals and restarts."""
    chosen, config = loaded(overridden(concurrency=concurrency, worker_id=worker_id))
    run_async(_serve(chosen, config, daemon=True))


@app.command()
def api(
    port: Annotated[int | None, typer.Option(min=1, max=65535, help="Port to listen on.")] = None,
) -> None:
    """Serve the HTTP API: runs, approvals, provider webhooks, health."""
    chosen, config = loaded(overridden(api_port=port))
    run_async(_serve(chosen, config, api=True))


@app.command()
def service(
    name: Annotated[str, typer.Argument(help="A service of the App, as `services` lists them.")],
) -> None:
    """Serve one of the App's services on its own (`services` lists them)."""
    chosen, config = loaded(overridden())
    try:
        wanted = chosen.service(name)
    except ValueError as error:
        raise UsageFailure(str(error)) from None
    run_async(_serve(chosen, config, services=[wanted], needs_database=False))


@app.command()
def services() -> None:
    """List the App's services, and whether `up` starts each with these settings."""
    chosen, config = loaded(overridden())
    table = new_table("service", "started by up", "description")
    for each in chosen.services:
        table.add_row(each.name, "yes" if each.wanted(config) else "no", each.description)
    console.print(table)


@app.command()
def up(
    concurrency: Annotated[int | None, typer.Option(min=1, help="Runs at a time.")] = None,
) -> None:
    """All in one: database, migrations, daemon, API and the App's services; Ctrl-C stops all.

    The database is the embedded server unless DATABASE_URL is set; the services are those
    the App's settings want. Prints one banner once they answer; SIGINT or SIGTERM stops
    all it started, the embedded server too, and exits 0.
    """
    chosen, config = loaded(overridden(concurrency=concurrency))
    wanted = [each for each in chosen.services if each.wanted(config)]
    for each in wanted:
        if each.prepare is not None:
            config = each.prepare(config)
    settings = config.engine
    # Stopped on the way out only if this command starts it: a server that was already
    # running serves other commands too.
    ours = settings.database_url is None and embedded.running(settings.data_dir) is None
    try:
        run_async(
            _serve(
                chosen,
                config,
                migrate_first=True,
                daemon=True,
                api=True,
                services=wanted,
                ready=lambda: _announce(settings, wanted, ours=ours),
            )
        )
    finally:
        if ours:
            embedded.stop(settings.data_dir)
    stopped = ["the daemon", "the API", *(f"the {each.name} service" for each in wanted)]
    if ours:
        stopped.append("the embedded server")
    print(f"stopped {', '.join(stopped[:-1])} and {stopped[-1]}")


async def _announce(settings: Settings, services: "Sequence[Service]", *, ours: bool) -> None:
    """Once the API answers `/readyz` (its database too; the daemon has started by
    then), print where everything is: one banner on stdout, the logs being on stderr."""
    import httpx

    probe = f"http://{_loopback(settings.api_host)}:{settings.api_port}/readyz"
    async with httpx.AsyncClient(timeout=READY_PROBE_TIMEOUT) as client:
        while True:
            with contextlib.suppress(httpx.TransportError):
                if (await client.get(probe)).status_code == 200:
                    break
            await asyncio.sleep(READY_PROBE_INTERVAL)
    base = settings.public_base_url
    lines = {
        "console": f"{base}/",
        "API": f"{base} (GET /runs, POST /runs, ...)",
        "API docs": f"{base}/docs",
        "database": _database(settings, ours=ours),
    }
    if settings.health_port:
        health = f"http://{_loopback(settings.health_host)}:{settings.health_port}"
        lines["health"] = f"{health}/healthz, {health}/readyz (the daemon)"
    if services:
        lines["services"] = ", ".join(
            f"{each.name} ({each.description})" if each.description else each.name
            for each in services
        )
    lines["logs"] = f"stderr, as {_log_format()} (ORCHESTRATOR_LOG_FORMAT)"
    rule = "-" * 72
    shown = [f"  {label:<10}{value}" for label, value in lines.items()]
    banner = [rule, "orchestrator is up", *shown, "Ctrl-C stops everything.", rule]
    print("\n".join(banner), flush=True)


def _log_format() -> str:
    """What `logs.configure` chose for this process (`auto` decides by the terminal)."""
    handlers = logging.getLogger().handlers
    return (
        "JSON lines"
        if any(isinstance(h.formatter, logs.JsonFormatter) for h in handlers)
        else "text"
    )


def _database(settings: Settings, *, ours: bool) -> str:
    if settings.database_url is not None:
        url = settings.database_url.get_secret_value()
        return f"external, {server_of(url)} ({url_variable()}; left running)"
    where = embedded.pgdata(settings.data_dir)
    if ours:
        return f"embedded PostgreSQL in {where} (stopped with the rest)"
    return f"embedded PostgreSQL in {where} (already running: left running; 'db stop' stops it)"


def _loopback(host: str) -> str:
    """Where this machine reaches a server listening on `host`."""
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


async def _serve(
    chosen: "App",
    config: "Config",
    *,
    migrate_first: bool = False,
    daemon: bool = False,
    api: bool = False,
    services: "Sequence[Service]" = (),
    needs_database: bool = True,
    ready: "Callable[[], Coroutine[Any, Any, None]] | None" = None,
) -> None:
    # LangGraph and FastAPI take a second to import: only the services pay for them.
    from engine.observability.telemetry import DISABLED, setup
    from engine.runtime import limits
    from engine.runtime.channels import channels_from
    from engine.runtime.daemon import Daemon
    from engine.service.api import create_app
    from engine.service.health import health_app
    from engine.service.serving import serve_http

    settings = config.engine
    try:  # checked before anything starts: a bad channel stops the daemon with one line
        channels = channels_from(settings) if daemon else []
    except ValueError as error:
        raise UsageFailure(str(error)) from None
    url = database_url(settings) if needs_database else ""
    if needs_database:
        await _check_schema(url, settings, migrate_first=migrate_first)
    if api:
        await _check_exposure(url, settings)
    stop = asyncio.Event()
    # One for the process: `up` serves the daemon's metrics on the API's /metrics too.
    telemetry = setup(settings) if daemon or api else DISABLED
    with stop_on_signals(stop), contextlib.closing(telemetry):
        async with contextlib.AsyncExitStack() as opened:
            # Built before anything serves, outside the task group: a workflow that cannot
            # be built (a chat model setting that names no model) stops with one line.
            workflows = await _opened(opened, chosen, config) if daemon else {}
            tasks = await opened.enter_async_context(asyncio.TaskGroup())
            http: list[asyncio.Task[None]] = [
                tasks.create_task(each.run(config), name=each.name) for each in services
            ]
            if api:
                served = create_app(chosen, config, url=url, telemetry=telemetry)
                http.append(
                    tasks.create_task(
                        serve_http(
                            served, settings.api_host, settings.api_port, settings.trusted_proxies
                        )
                    )
                )
            if daemon:
                async with open_pool(url, settings) as pool:
                    async with pool.connection() as conn:  # the last daemon started decides
                        await limits.apply(conn, chosen.limits_for(config))
                    worker = Daemon(url, pool, settings, workflows, telemetry, channels)
                    if settings.health_port:
                        vitals = health_app(worker, pool, worker.stale_after, telemetry)
                        http.append(
                            tasks.create_task(
                                serve_http(vitals, settings.health_host, settings.health_port)
                            )
                        )
                    if ready is not None:  # the daemon starts before this task first runs
                        http.append(tasks.create_task(ready()))
                    await worker.serve(stop)
            else:
                await stop.wait()
            for task in http:
                task.cancel()


async def _opened(
    stack: contextlib.AsyncExitStack, chosen: "App", config: "Config"
) -> "dict[str, Workflow]":
    try:
        return await stack.enter_async_context(chosen.opened(config))
    except ValueError as error:
        raise UsageFailure(str(error)) from None


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
    if migrate_first:
        await migrate(url, settings)
    async with await connect(url, settings) as conn:
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
    from engine.runtime.retention import prune as prune_runs

    age = store.parse_duration(older_than, "--older-than")
    settings = read(Settings)
    logs.configure(settings.log_level, settings.log_format)
    done = run_async(prune_runs(database_url(settings), settings, age, delete_runs=delete_runs))
    if done is None:
        raise store.Refused("another prune is running; try again when it has finished")
    print(f"pruned history of {done.runs} runs, deleted {done.deleted} runs")
