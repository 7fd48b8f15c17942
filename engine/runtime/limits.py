"""Limits that hold across every daemon, kept in PostgreSQL (docs/flow-control.md#limits).

- A provider's jobs in flight: a step takes a slot with `RunContext.limits.slot()`
  before it submits a job, and gives it back with `release()` once it learns the
  job ended (a run that ends gives back all of its own). With none free, the
  run parks (`waiting_limit`, no worker held) and is handed a slot in turn,
  priority then age, when one frees; the claim then resumes it.
- A provider's requests: at most `requests` in any `per`, and none while the
  provider is paused after a 429 any daemon was given. A provider client calls
  `wait_for_request()` before each request and `pause_requests()` on a 429 with
  a reset; inside a run these keep to the limit, elsewhere they do nothing.
- A project's runs executing at once: the claim sets no more of them running;
  a queued run it would have set running beyond that is parked instead, and
  handed room in turn, priority then age, when one of them stops executing
  (migration 0019).

An App declares its limits (`App.limits`); settings replace them per provider
(`ORCHESTRATOR_PROVIDER_LIMITS`, `ORCHESTRATOR_PROJECT_CONCURRENCY`). Each
daemon writes them to `flow_limits` at start (`apply`): the last one started
wins.
"""

import asyncio
import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from psycopg import AsyncConnection
from psycopg.rows import DictRow

from engine.db.connections import Pool
from engine.db.queries import QUERIES
from engine.runtime.session import RunSession
from engine.runtime.waits import LimitWait, pause
from engine.settings import ProviderLimit, Settings

log = logging.getLogger(__name__)

PROVIDER_PREFIX = "provider:"
PROJECTS = "project:*"  # the row whose `concurrent` is every project's limit
# A request waits in the worker up to this long; a longer wait parks the run.
LONGEST_SLEEP = 30.0


def provider_limit(provider: str) -> str:
    """The name of `provider`'s row in `flow_limits` (and in `waiting_for.limit`)."""
    return PROVIDER_PREFIX + provider


@dataclass(frozen=True)
class Limits:
    """What an App allows across all daemons: per provider, and per project."""

    providers: Mapping[str, ProviderLimit] = field(default_factory=dict)
    project_concurrency: int | None = None

    def overridden(self, settings: Settings) -> "Limits":
        """These limits with the settings' in their place (a provider's as a whole)."""
        return Limits(
            providers={**self.providers, **settings.provider_limits},
            project_concurrency=settings.project_concurrency or self.project_concurrency,
        )


async def apply(conn: AsyncConnection[DictRow], limits: Limits) -> None:
    """Make `flow_limits` say what `limits` say (a limit they do not name is lifted;
    a pause after a 429 stays), and hand the slots or room a raised limit frees to
    the runs parked for them."""
    names = sorted(limits.providers)
    chosen = [limits.providers[name] for name in names]
    rows = {
        "names": [provider_limit(name) for name in names] + [PROJECTS],
        "concurrent": [limit.concurrent for limit in chosen] + [limits.project_concurrency],
        "requests": [limit.requests for limit in chosen] + [None],
        "per": [limit.per for limit in chosen] + [None],
    }
    async with conn.transaction():
        await conn.execute(QUERIES["set_limits"], rows)
        await conn.execute(QUERIES["grant_parked"])
    log.info(
        "limits set",
        extra={
            "action": "limits_set",
            "providers": {
                name: limit.model_dump(mode="json")
                for name, limit in zip(names, chosen, strict=True)
            },
            "project_concurrency": limits.project_concurrency,
        },
    )


@dataclass(frozen=True)
class RunLimits:
    """The limits as one run's steps meet them (`RunContext.limits`)."""

    session: RunSession

    async def slot(self, provider: str, key: str) -> None:
        """Hold one of `provider`'s slots for this run's job `key`, from before the
        job is submitted until `release()`: at once when one is free (or this run
        holds it already), else park the run until it is handed one.

        Parking ends the step: the node runs again from its first line, so call
        this before anything with an effect, and ask no gate in the same node.
        """
        name = provider_limit(provider)
        # On a node's re-run, an earlier park's resume comes back at once: ask again.
        while not await self._take(name, key):
            pause(LimitWait(name, key))

    async def release(self, provider: str, key: str) -> None:
        """Give back the slot of job `key` (it ended): the next parked run gets it."""
        async with self.session.lease.transaction(self.session.pool) as conn:
            await conn.execute(
                QUERIES["release_slot"],
                {"limit": provider_limit(provider), "run_id": self.session.run_id, "key": key},
            )

    async def _take(self, name: str, key: str) -> bool:
        async with self.session.lease.transaction(self.session.pool) as conn:
            cursor = await conn.execute(
                QUERIES["take_slot"], {"limit": name, "run_id": self.session.run_id, "key": key}
            )
            row = await cursor.fetchone()
        assert row is not None
        return bool(row["taken"])


@dataclass(frozen=True)
class Requests:
    """The request side of the limits for the runs one process executes."""

    pool: Pool
    worker_id: str

    async def wait(self, provider: str) -> None:
        """Until a request to `provider` may go, counting it: slept in the worker,
        or, for longer than `LONGEST_SLEEP`, with the run parked until then."""
        name = provider_limit(provider)
        while (seconds := await self._take(name)) > 0:
            if seconds > LONGEST_SLEEP:
                # As in `RunLimits.slot`: a re-run's earlier resume comes back at once.
                pause(LimitWait(name, wake_at=datetime.now(UTC) + timedelta(seconds=seconds)))
                continue
            await asyncio.sleep(seconds)

    async def record_pause(self, provider: str, seconds: float) -> None:
        """No daemon sends `provider` a request for `seconds` (it answered 429)."""
        async with self.pool.connection() as conn:
            await conn.execute(
                QUERIES["pause_requests"],
                {
                    "limit": provider_limit(provider),
                    "seconds": seconds,
                    "worker_id": self.worker_id,
                },
            )
        log.warning(
            "provider paused after a 429",
            extra={"action": "provider_paused", "provider": provider, "seconds": seconds},
        )

    async def _take(self, name: str) -> float:
        async with self.pool.connection() as conn:
            cursor = await conn.execute(QUERIES["take_request"], {"limit": name})
            row = await cursor.fetchone()
        assert row is not None
        return float(row["wait"])


# Set by the executor while it runs a graph: the provider clients of its nodes read it.
_requests: ContextVar[Requests | None] = ContextVar("requests", default=None)


@contextmanager
def requests_kept(requests: Requests) -> Iterator[None]:
    """Provider requests made in this block keep to the limits through `requests`."""
    token = _requests.set(requests)
    try:
        yield
    finally:
        _requests.reset(token)


async def wait_for_request(provider: str) -> None:
    """Before each request to `provider`: wait while its requests per period are
    spent or it is paused after a 429 (inside a run; outside one, go at once)."""
    requests = _requests.get()
    if requests is not None:
        await requests.wait(provider)


async def pause_requests(provider: str, seconds: float) -> None:
    """`provider` answered 429, to come back in `seconds`: every daemon's requests to
    it wait until then (inside a run; outside one, nothing is recorded)."""
    requests = _requests.get()
    if requests is not None and seconds > 0:
        await requests.record_pause(provider, seconds)
