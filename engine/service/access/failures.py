"""Failed sign-ins counted per client and per identity, in a sliding window.

`limits`' in-memory storages expire keys with a timer (a thread every 10 ms,
or asyncio tasks nobody awaits); a deque of failure times per key, pruned
when it is read, owns nothing in the background. The number of keys is
capped, so a flood of made-up identities cannot grow it without bound.
"""

import logging
import time
from collections import OrderedDict, deque

log = logging.getLogger(__name__)

MAX_KEYS = 10_000


class FailureLimit:
    def __init__(self, failures: int, window: float) -> None:
        self.failures = failures
        self.window = window
        self._seen: OrderedDict[str, deque[float]] = OrderedDict()
        self._warned: dict[str, float] = {}  # key -> when its current burst was reported

    def retry_after(self, *keys: str) -> float | None:
        """Seconds until the first of `keys` over its limit may try again, or None."""
        now = time.monotonic()
        waits = [self._wait(key, now) for key in keys]
        blocked = [wait for wait in waits if wait is not None]
        return max(blocked) if blocked else None

    def failed(self, *keys: str) -> None:
        now = time.monotonic()
        for key in keys:
            times = self._seen.pop(key, None) or deque()
            times.append(now)
            self._seen[key] = times
            if len(times) >= self.failures and now - self._warned.get(key, -self.window) > (
                self.window
            ):
                # One warning per burst, not one per guess.
                self._warned[key] = now
                log.warning(
                    "sign-in failures over the limit for %s: %d in %.0f s; refusing with 429",
                    key,
                    len(times),
                    self.window,
                    extra={"action": "auth_rate_limited", "key": key},
                )
        while len(self._seen) > MAX_KEYS:
            oldest, _ = self._seen.popitem(last=False)
            self._warned.pop(oldest, None)

    def _wait(self, key: str, now: float) -> float | None:
        times = self._seen.get(key)
        if times is None:
            return None
        while times and now - times[0] > self.window:
            times.popleft()
        if len(times) < self.failures:
            return None
        return self.window - (now - times[-self.failures])
