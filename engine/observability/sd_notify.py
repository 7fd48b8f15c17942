"""Tell systemd how the service is doing (sd_notify(3)), without libsystemd.

Every function is a no-op returning False outside a `Type=notify` unit, so callers
need not know whether systemd started them.
"""

import os
import socket


def notify(message: str) -> bool:
    """Send `message` (newline-separated `KEY=value` assignments) to `$NOTIFY_SOCKET`.

    Returns True once systemd's socket has the datagram; False when not run by
    systemd, or when the message could not be delivered. The socket is
    non-blocking, so an event loop calling this never stalls on a full queue.
    """
    address = os.environ.get("NOTIFY_SOCKET", "")
    if address.startswith("@"):
        address = "\0" + address[1:]  # Linux abstract namespace
    elif not address.startswith("/"):
        return False  # unset, or a transport we don't speak (e.g. vsock)
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        try:
            sock.connect(address)
            sock.send(message.encode())
        except OSError:
            return False
    return True


def ready() -> bool:
    """Startup is finished: `systemctl start` returns and dependent units start."""
    return notify("READY=1")


def stopping() -> bool:
    """Shutdown has begun (the drain)."""
    return notify("STOPPING=1")


def watchdog() -> bool:
    """Still alive: without one of these every `WatchdogSec`, systemd restarts the service."""
    return notify("WATCHDOG=1")


def status(text: str) -> bool:
    """One line for `systemctl status`."""
    return notify("STATUS=" + " ".join(text.splitlines()))


def watchdog_interval() -> float | None:
    """Seconds between watchdog pings: half of `$WATCHDOG_USEC`, as sd_watchdog_enabled(3)
    recommends; None when the watchdog is off or meant for another process."""
    pid = os.environ.get("WATCHDOG_PID")
    if pid is not None and pid.strip() != str(os.getpid()):
        return None
    try:
        usec = int(os.environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    return usec / 2 / 1_000_000 if usec > 0 else None
