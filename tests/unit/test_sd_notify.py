"""sd_notify against a real datagram socket, as systemd listens on it."""

import os
import socket
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from engine.observability import sd_notify

pytestmark = pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="needs AF_UNIX sockets")


@pytest.fixture
def systemd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """The socket systemd would give a `Type=notify` service, bound in tmp_path."""
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(str(path))
        listener.settimeout(5)  # a deadline for recv; the datagram is queued before send returns
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        yield listener


@pytest.mark.parametrize(
    ("send", "expected"),
    [
        (sd_notify.ready, "READY=1"),
        (sd_notify.watchdog, "WATCHDOG=1"),
        (sd_notify.stopping, "STOPPING=1"),
        (lambda: sd_notify.status("draining 3 runs"), "STATUS=draining 3 runs"),
        (lambda: sd_notify.status("two\nlines"), "STATUS=two lines"),
        (lambda: sd_notify.notify("READY=1\nSTATUS=up"), "READY=1\nSTATUS=up"),
    ],
)
def test_messages_reach_the_socket(
    systemd: socket.socket, send: Callable[[], bool], expected: str
) -> None:
    assert send() is True
    assert systemd.recv(4096).decode() == expected


@pytest.mark.skipif(sys.platform != "linux", reason="abstract sockets are Linux only")
def test_abstract_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"orchestrator-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind("\0" + name)
        listener.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert sd_notify.ready() is True
        assert listener.recv(4096) == b"READY=1"


def test_not_under_systemd(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert sd_notify.ready() is False
    assert sd_notify.watchdog() is False
    assert sd_notify.stopping() is False
    assert sd_notify.status("idle") is False


@pytest.mark.parametrize("address", ["", "vsock:2:1234", "relative/path"])
def test_unusable_address(monkeypatch: pytest.MonkeyPatch, address: str) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", address)
    assert sd_notify.ready() is False


def test_nobody_listening(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone"))
    assert sd_notify.watchdog() is False


@pytest.mark.parametrize(
    ("usec", "pid", "expected"),
    [
        ("30000000", None, 15.0),
        ("30000000", "self", 15.0),
        ("1000000", "self", 0.5),
        ("30000000", "other", None),  # meant for another process
        (None, None, None),
        ("0", None, None),
        ("soon", None, None),
    ],
)
def test_watchdog_interval(
    monkeypatch: pytest.MonkeyPatch, usec: str | None, pid: str | None, expected: float | None
) -> None:
    for key, value in (("WATCHDOG_USEC", usec), ("WATCHDOG_PID", pid)):
        if value is None:
            monkeypatch.delenv(key, raising=False)
        else:
            pids = {"self": str(os.getpid()), "other": str(os.getpid() + 1)}
            monkeypatch.setenv(key, pids.get(value, value))
    assert sd_notify.watchdog_interval() == expected
