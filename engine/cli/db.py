"""`orchestrator db ...`: the database the orchestrator uses."""

from typing import TYPE_CHECKING

from engine.cli.common import (
    db_app,
)
from engine.db.connections import database_url
from engine.settings import Settings, read

if TYPE_CHECKING:
    pass


@db_app.command("url")
def db_url() -> None:
    """Print the database URL (starting the embedded server if that is the one in use)."""
    print(database_url(read(Settings)))
