"""The daemon under systemd and Kubernetes: READY, WATCHDOG and STOPPING on the notify
socket, /healthz and /readyz on its health port."""

import asyncio
import socket
import time
from pathlib import Path

import httpx
import pytest

from tests.helpers import daemons, free_port


async def _datagrams(sock: socket.socket, until: str, within: float = 30.0) -> list[str]:
    received: list[str] = []
    deadline = time.monotonic() + within
    while until not in received:
        assert time.monotonic() < deadline, f"never got {until}: {received}"
        try:
            received += sock.recv(4096).decode().splitlines()
        except BlockingIOError:
            await asyncio.sleep(0.02)
    return received


async def test_daemon_notifies_systemd_and_serves_health(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.setblocking(False)
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        port = free_port()
        with daemons(db_url, tmp_path) as start:
            daemon = start("unit", health_port=port, poll_interval=0.2)
            startup = await _datagrams(sock, "READY=1")
            ticking = await _datagrams(sock, "WATCHDOG=1")
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                deadline = time.monotonic() + 10
                while (ready := await client.get("/readyz")).status_code != 200:
                    assert time.monotonic() < deadline, ready.text
                    await asyncio.sleep(0.05)
                assert ready.json()["status"] == "ok"
                health = await client.get("/healthz")
                assert health.status_code == 200 and health.json()["loop_idle_s"] < 5
            assert daemon.terminate() == 0
            stopping = await _datagrams(sock, "STOPPING=1")
    assert "READY=1" in startup and "WATCHDOG=1" in ticking and "STOPPING=1" in stopping
