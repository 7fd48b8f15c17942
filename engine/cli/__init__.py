"""The `orchestrator` command: a thin layer over the settings, the store and the daemon.

Each group of commands is a module; importing it registers its commands on `app`.
"""

import re

import typer
from pydantic import ValidationError
from pydantic_settings import SettingsError

# Typer vendors click; its usage errors are only reachable here.
from typer._click.exceptions import UsageError

from engine.cli import db, runs, schedules, services, tokens
from engine.cli.common import UsageFailure, app, fail, run_async
from engine.db.migrations import MigrationError
from engine.runtime import store
from engine.runtime.schedules import ScheduleNotFound

__all__ = ["app", "db", "main", "run_async", "runs", "schedules", "services", "tokens"]


def main() -> None:
    try:
        app(standalone_mode=False)
    except typer.Abort:
        fail("aborted", 1)
    except UsageError as error:
        fail(error.format_message().replace("\n", " "), 2)
    except (UsageFailure, store.InvalidInput, store.KeyConflict, MigrationError) as error:
        fail(str(error), 2)
    except (store.RunNotFound, ScheduleNotFound, store.Refused) as error:
        fail(str(error), 1)
    except ExceptionGroup as group:
        # A service that cannot bind its port (another process has it) ends the TaskGroup.
        unbound = group.subgroup(OSError)
        if unbound is None:
            raise
        fail(f"cannot listen: {unbound.exceptions[0]}", 1)
    except ValidationError as error:
        first = error.errors()[0]
        field = "ORCHESTRATOR_" + str(first["loc"][0]).upper() if first["loc"] else "settings"
        # Inside a JSON setting: where (`name.concurrent`).
        inside = ".".join(str(part) for part in first["loc"][1:])
        fail(f"setting {field}{f' ({inside})' if inside else ''}: {first['msg']}", 2)
    except SettingsError as error:  # a JSON setting that is not JSON
        named = re.search(r'field "(\w+)"', str(error))
        field = "ORCHESTRATOR_" + named[1].upper() if named else "settings"
        fail(f"setting {field}: not valid JSON", 2)
