"""PgBouncer for the e2e tier: the tests that run through it, and the crash suite twice."""

from collections.abc import Iterator

import pytest

from tests.conftest import Postgres
from tests.pgbouncer import BINARY, Bouncer, Route, pgbouncer


@pytest.fixture(scope="session")
def bouncer(postgres: Postgres, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bouncer]:
    """PgBouncer in transaction mode in front of the suite's server, started once."""
    if BINARY is None:
        pytest.skip("pgbouncer is not installed (apt-get install pgbouncer; .ci/run does)")
    with pgbouncer(postgres.url, tmp_path_factory.mktemp("pgbouncer")) as running:
        yield running


@pytest.fixture(params=["direct", "pgbouncer"])
def route(request: pytest.FixtureRequest, db_url: str) -> Route:
    """The test's database straight, then through PgBouncer in transaction mode."""
    if request.param == "direct":
        return Route(db_url)
    bouncer: Bouncer = request.getfixturevalue("bouncer")
    return bouncer.route(db_url)
