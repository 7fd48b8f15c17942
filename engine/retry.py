"""When a step is tried again: node errors a few times, a database outage for a while."""

import time

import psycopg
from tenacity import RetryCallState, wait_exponential

from engine.lease import LeaseLost

OUTAGE_PROBE = 0.5  # seconds between attempts while the database is unreachable
# What a database outage looks like from here: a lost or closed connection (the
# pool's timeout is an OperationalError too).
OUTAGE = (psycopg.OperationalError, psycopg.InterfaceError)


class StepRetry:
    """A tenacity stop/retry policy for one execution of a run.

    A node's error counts against `max_attempts`. A lost database connection
    says nothing about the node: it is retried until the outage has lasted
    `outage_tolerance` seconds (the run's lease may expire meanwhile; the fence
    then decides whether this worker may still write). `LeaseLost` is final.
    """

    def __init__(
        self, max_attempts: int, outage_tolerance: float, backoff: float, backoff_max: float
    ) -> None:
        self.max_attempts = max_attempts
        self.outage_tolerance = outage_tolerance
        self._backoff = wait_exponential(multiplier=backoff, max=backoff_max)
        self.node_failures = 0
        self._outage_since: float | None = None

    def retry(self, state: RetryCallState) -> bool:
        error = state.outcome.exception() if state.outcome else None
        return error is not None and not isinstance(error, LeaseLost)

    def wait(self, state: RetryCallState) -> float:
        """Back off between node failures; probe a lost database every half second."""
        error = state.outcome.exception() if state.outcome else None
        if isinstance(error, OUTAGE):
            return OUTAGE_PROBE
        return float(self._backoff(state))

    def stop(self, state: RetryCallState) -> bool:
        error = state.outcome.exception() if state.outcome else None
        if isinstance(error, OUTAGE):
            now = time.monotonic()
            self._outage_since = self._outage_since or now
            return now - self._outage_since >= self.outage_tolerance
        self._outage_since = None
        self.node_failures += 1
        return self.node_failures >= self.max_attempts
