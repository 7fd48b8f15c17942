"""What every command shares: the Typer apps, errors that exit 2, connections, output."""

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from engine.db.connections import SHOWING, connect, database_url
from engine.observability import logs
from engine.runtime import store
from engine.settings import Settings, read

if TYPE_CHECKING:
    from engine.app import App
    from engine.settings import Config

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
schedules_app = typer.Typer(
    help="Start runs on a cron schedule, in a timezone (docs/time.md#schedules).",
    no_args_is_help=True,
)
app.add_typer(runs_app, name="runs")
app.add_typer(schedules_app, name="schedules")
app.add_typer(db_app, name="db")
app.add_typer(tokens_app, name="tokens")

# Piped output is read by scripts and people with wide terminals: don't squeeze tables to 80.
console = Console(width=None if sys.stdout.isatty() else 240)
T = TypeVar("T")


class UsageFailure(Exception):
    """Bad arguments: exit 2 with one line."""


def fail(message: str, code: int) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(code)


async def with_connection(
    settings: Settings, action: Callable[[store.Connection], Awaitable[T]]
) -> T:
    url = database_url(settings)
    SHOWING.set(True)  # a command shows what it reads; it runs no graph
    async with await connect(url, settings) as conn:
        return await action(conn)


def with_db(action: Callable[[store.Connection], Awaitable[T]]) -> T:
    return run_async(with_connection(read(Settings), action))


def run_async(main: Coroutine[Any, Any, T]) -> T:
    """Run `main` on uvloop where it is installed, else on asyncio's own loop."""
    try:
        import uvloop
    except ImportError:  # Windows
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


def json_object(text: str, option: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise UsageFailure(
            f"{option}: not valid JSON ({error.msg} at position {error.pos})"
        ) from None
    if not isinstance(value, dict):
        raise UsageFailure(f"{option}: must be a JSON object, got {type(value).__name__}")
    return value


def print_json(value: object) -> None:
    print(json.dumps(value, default=str, indent=2))


def new_table(*columns: str, title: str | None = None) -> Table:
    """Identifiers and times stay on one line, whatever the terminal's width."""
    table = Table(title=title)
    for column in columns:
        table.add_column(column, no_wrap=column != "value", overflow="fold")
    return table


def short(value: object, width: int = 100) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= width else text[: width - 1] + "…"


def overridden(**options: object) -> Settings:
    settings = read(Settings)
    settings = settings.model_copy(update={k: v for k, v in options.items() if v is not None})
    logs.configure(settings.log_level, settings.log_format, worker_id=settings.worker_id)
    return settings


def loaded(settings: Settings) -> "tuple[App, Config]":
    """The App `ORCHESTRATOR_APP` names, and its settings read (a bad one: exit 2)."""
    from engine.app import load_app

    try:
        chosen = load_app(settings)
    except ValueError as error:
        raise UsageFailure(str(error)) from None
    return chosen, chosen.configure(settings)
