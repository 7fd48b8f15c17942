"""The `orchestrator` command: a thin layer over the settings, the store and the daemon.

Each group of commands is a module; importing it registers its commands on `app`.
"""

import typer

# Typer vendors click; its usage errors are only reachable here.
from typer._click.exceptions import UsageError

from engine.cli import db, history, runs, schedules, services, tokens, workers
from engine.cli.common import UsageFailure, app, fail, run_async
from engine.db.migrations import MigrationError
from engine.runtime import store
from engine.runtime.schedules import ScheduleNotFound
from engine.settings import BadSetting

__all__ = [
    "app",
    "db",
    "history",
    "main",
    "run_async",
    "runs",
    "schedules",
    "services",
    "tokens",
    "workers",
]

# Bad arguments or settings (exit 2), and refusals of a named thing (exit 1): one line.
_USAGE = (UsageFailure, BadSetting, store.InvalidInput, store.KeyConflict, MigrationError)
_REFUSED = (store.RunNotFound, ScheduleNotFound, store.Refused)


def main() -> None:
    try:
        app(standalone_mode=False)
    except typer.Abort:
        fail("aborted", 1)
    except Exception as error:
        refusal = _refusal(error)
        if refusal is None:
            raise  # a fault of ours: its traceback
        fail(*refusal)


def _refusal(error: BaseException) -> tuple[str, int] | None:
    """The one line and exit code of an error its user can act on, wherever in the
    command it was raised: before anything ran, or in a service's TaskGroup."""
    if isinstance(error, BaseExceptionGroup):
        found = next(filter(None, map(_refusal, error.exceptions)), None)
        # A service that cannot bind its port (another process has it) ends the TaskGroup.
        if found is None and (unbound := error.subgroup(OSError)) is not None:
            return f"cannot listen: {unbound.exceptions[0]}", 1
        return found
    if isinstance(error, UsageError):
        return error.format_message().replace("\n", " "), 2
    if isinstance(error, _USAGE):
        return str(error), 2
    if isinstance(error, _REFUSED):
        return str(error), 1
    return None
