"""When a step is tried again: node errors a few times, a database outage for a while."""

import time

import psycopg
from tenacity import RetryCallState, wait_exponential

from engine.runtime.deadlines import GateTimedOut
from engine.runtime.lease import LeaseLost

OUTAGE_PROBE = 0.5  # seconds between attempts while the database is unreachable
# What a database outage looks like from here: a lost or closed connection (the
# pool's timeout is an OperationalError too).
OUTAGE = (psycopg.OperationalError, psycopg.InterfaceError)


class Unloadable(Exception):
    """A run whose stored row or state cannot be decoded. Every attempt, on any
    worker, reads the same bytes: the run fails at once rather than being retried
    or handed on to crash the next worker."""

    def __init__(self, error: Exception) -> None:
        super().__init__(f"run could not be loaded: {error}")
        self.error = error

    def as_error(self) -> dict[str, str]:
        """As `runs.error`: the type of what went wrong, and that it was loading."""
        return {"type": type(self.error).__name__, "message": str(self)}


_FINAL = (LeaseLost, Unloadable, GateTimedOut)


class StepRetry:
    """A tenacity stop/retry policy for one execution of a run.

    A node's error counts against `max_attempts`. A lost database connection
    says nothing about the node: it is retried until the outage has lasted
    `outage_tolerance` seconds (the run's lease may expire meanwhile; the fence
    then decides whether this worker may still write). `LeaseLost`,
    `Unloadable` and `GateTimedOut` (it would time out again) are final, and
    so is anything not an `Exception`: tenacity's
    `with attempt:` catches `BaseException`, and a cancelled step (shutdown, a
    lost lease) retried would keep calling providers after it was told to stop.
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
        return isinstance(error, Exception) and not isinstance(error, _FINAL)

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
