"""The embedded server's life through the real CLI (`db status`, `db url`, `db stop`), and
`orchestrator up`: one banner once everything answers, and Ctrl-C stops what it started.

Each test has an embedded server of its own, in a temporary `ORCHESTRATOR_DATA_DIR`
with no `DATABASE_URL`, stopped at the end whatever happened.
"""

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from engine.db import embedded
from tests.conftest import orchestrator, orchestrator_env
from tests.helpers import free_port

NOT_RUNNING = 3  # `db status` when nothing answers (docs/cli.md)


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    where = tmp_path / "data"
    yield where
    embedded.stop(where)


def embedded_env(data_dir: Path, **settings: object) -> dict[str, str]:
    """The tests' environment for an `orchestrator` subprocess, on the embedded server."""
    env = orchestrator_env("", data_dir=data_dir, **settings)
    del env["DATABASE_URL"]
    return env


def cli(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """One command run to its end, from a directory with no `.env`."""
    return subprocess.run(
        [sys.executable, "-m", "engine", *args],
        env=embedded_env(data_dir),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=data_dir.parent,
    )


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def eventually(check: Callable[[], bool], what: str, within: float = 15.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, f"not within {within}s: {what}"
        time.sleep(0.05)


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def test_db_status_url_stop_and_status_again(data_dir: Path) -> None:
    before = cli(data_dir, "db", "status")
    assert before.returncode == NOT_RUNNING, before.stderr
    assert "state:          not running (not created yet" in before.stdout

    started = cli(data_dir, "db", "url")
    assert started.returncode == 0, started.stderr
    url = started.stdout.strip()
    pgdata = data_dir.resolve() / "pgdata"
    assert url == f"postgresql://postgres:@/postgres?host={pgdata}"

    shown = cli(data_dir, "db", "status")
    assert shown.returncode == 0, shown.stderr
    assert "state:          running\n" in shown.stdout
    assert f"data directory: {pgdata}\n" in shown.stdout
    status = json.loads(cli(data_dir, "db", "status", "--json").stdout)
    assert status["database"] == "embedded"
    assert (status["running"], status["answers"]) == (True, True)
    assert (status["data_dir"], status["url"]) == (str(pgdata), url)
    assert status["size_bytes"] > 1_000_000  # a cluster, migrated or not
    pid = status["pid"]
    assert alive(pid)

    stopped = cli(data_dir, "db", "stop")
    assert stopped.returncode == 0, stopped.stderr
    assert stopped.stdout == f"stopped the embedded server (pid {pid}, data directory {pgdata})\n"
    eventually(lambda: not alive(pid), f"postgres {pid} exits")

    after = cli(data_dir, "db", "status", "--json")
    assert after.returncode == NOT_RUNNING, after.stderr
    assert json.loads(after.stdout)["state"] == (
        "not running (the next command that needs the database starts it)"
    )
    again = cli(data_dir, "db", "stop")
    assert (again.returncode, again.stdout) == (
        0,
        f"the embedded server is not running (data directory {pgdata})\n",
    )


def test_db_stop_refuses_an_external_server_with_one_line(db_url: str) -> None:
    result = orchestrator(db_url, "db", "stop")
    assert result.returncode == 2, result.stderr
    assert result.stderr == (
        "error: DATABASE_URL names an external server: 'db stop' stops only the embedded one "
        "(stop that server with its own tools)\n"
    )
    status = orchestrator(db_url, "db", "status", "--json")
    assert status.returncode == 0, status.stderr
    found = json.loads(status.stdout)
    assert (found["database"], found["setting"], found["answers"]) == (
        "external",
        "DATABASE_URL",
        True,
    )


def test_db_status_of_an_external_server_that_does_not_answer_hides_its_password() -> None:
    url = f"postgresql://ann:s3cret-pw@127.0.0.1:{free_port()}/orders"
    result = orchestrator(url, "db", "status")
    assert result.returncode == NOT_RUNNING, result.stderr
    assert "database:       external server (DATABASE_URL)\n" in result.stdout
    assert "state:          not answering\n" in result.stdout
    assert "server:         host=127.0.0.1 port=" in result.stdout
    assert "dbname=orders user=ann" in result.stdout
    assert "s3cret-pw" not in result.stdout + result.stderr


def start_up(data_dir: Path, log_dir: Path) -> tuple[subprocess.Popen[bytes], Path, int]:
    """`orchestrator up` on the embedded server, its stdout and stderr in files."""
    sandbox_port = free_port()
    out = log_dir / "up.out"
    with out.open("wb") as stdout, (log_dir / "up.err").open("wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "engine", "up"],
            env=embedded_env(data_dir, api_port=free_port(), sandbox_port=sandbox_port),
            stdout=stdout,
            stderr=stderr,
            cwd=log_dir,
        )
    return process, out, sandbox_port


def banner_of(process: subprocess.Popen[bytes], out: Path, log_dir: Path) -> dict[str, str]:
    """The banner's `label  value` lines, once it is printed."""
    deadline = time.monotonic() + 30
    while "Ctrl-C stops everything." not in out.read_text():
        assert process.poll() is None, (log_dir / "up.err").read_text()
        assert time.monotonic() < deadline, (log_dir / "up.err").read_text()
        time.sleep(0.05)
    text = out.read_text()
    assert text.count("orchestrator is up") == 1, text
    lines = text.split("orchestrator is up\n")[1].split("Ctrl-C")[0].splitlines()
    return {line[2:12].strip(): line[12:] for line in lines}


@pytest.mark.parametrize("stop_signal", ["SIGINT", "SIGTERM"])
def test_up_prints_one_banner_and_a_stop_signal_stops_all_it_started(
    data_dir: Path, tmp_path: Path, stop_signal: str
) -> None:
    process, out, sandbox_port = start_up(data_dir, tmp_path)
    try:
        banner = banner_of(process, out, tmp_path)
        console = banner["console"]
        assert console.startswith("http://127.0.0.1:") and console.endswith("/")
        assert answers(console)
        assert answers(banner["API docs"])
        pgdata = data_dir.resolve() / "pgdata"
        assert banner["database"] == f"embedded PostgreSQL in {pgdata} (stopped with the rest)"
        assert banner["services"].startswith("sandbox")
        assert banner["logs"].startswith("stderr, as JSON lines")
        server = embedded.running(data_dir)
        assert server is not None
        sandbox = f"http://127.0.0.1:{sandbox_port}/_sandbox/config"
        assert answers(sandbox)

        process.send_signal(signal.Signals[stop_signal])
        assert process.wait(timeout=30) == 0, (tmp_path / "up.err").read_text()
    finally:
        if process.poll() is None:
            process.kill()
    assert out.read_text().endswith(
        "stopped the daemon, the API, the sandbox service and the embedded server\n"
    )
    eventually(lambda: not alive(server.pid), f"postgres {server.pid} exits")
    assert embedded.running(data_dir) is None
    assert not answers(console)
    assert not answers(sandbox)


def test_up_leaves_running_an_embedded_server_it_did_not_start(
    data_dir: Path, tmp_path: Path
) -> None:
    assert cli(data_dir, "db", "url").returncode == 0
    server = embedded.running(data_dir)
    assert server is not None
    process, out, _ = start_up(data_dir, tmp_path)
    try:
        banner = banner_of(process, out, tmp_path)
        assert banner["database"].endswith("(already running: left running; 'db stop' stops it)")
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0, (tmp_path / "up.err").read_text()
    finally:
        if process.poll() is None:
            process.kill()
    assert out.read_text().endswith("stopped the daemon, the API and the sandbox service\n")
    assert embedded.running(data_dir) == server
