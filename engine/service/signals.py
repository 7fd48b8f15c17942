"""SIGTERM and SIGINT become a graceful stop, a second one an immediate exit; the
previous handlers come back afterwards."""

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Iterator

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)

log = logging.getLogger(__name__)


@contextlib.contextmanager
def stop_on_signals(stop: asyncio.Event) -> Iterator[None]:
    loop = asyncio.get_running_loop()
    previous = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}

    def on_signal(sig: signal.Signals) -> None:
        if not stop.is_set():
            log.info(
                "%s: stopping", sig.name, extra={"action": "stop_requested", "signal": sig.name}
            )
            stop.set()
            return
        # The operator does not want to wait for the drain (a step may ignore
        # its cancellation): the runs still held are left to their leases.
        log.warning(
            "%s again: exiting at once", sig.name, extra={"action": "exit_now", "signal": sig.name}
        )
        _flush_logs()
        os._exit(128 + sig)  # as a shell reports death by that signal

    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            loop.remove_signal_handler(sig)
            signal.signal(sig, handler)


def _flush_logs() -> None:
    for handler in logging.getLogger().handlers:
        handler.flush()
    sys.stdout.flush()
    sys.stderr.flush()
