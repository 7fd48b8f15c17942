"""A real PgBouncer in transaction mode in front of the suite's server (Debian's package)."""

import getpass
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from psycopg.conninfo import conninfo_to_dict, make_conninfo

from tests.helpers import free_port

# Debian installs it in /usr/sbin, which a user's PATH may lack.
BINARY = shutil.which("pgbouncer", path=f"{os.environ.get('PATH', '')}:/usr/sbin")
# Few server connections for the clients of all the processes of a test: transaction
# pooling shares them, and a statement that relied on its session would show it.
SERVER_CONNECTIONS = 4


@dataclass(frozen=True)
class Route:
    """How processes reach a test's database: a URL, and the settings that go with it."""

    url: str
    settings: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class Bouncer:
    port: int
    log: Path

    def url(self, db_url: str) -> str:
        """`db_url`'s database, through PgBouncer."""
        return make_conninfo(db_url, host="127.0.0.1", port=str(self.port))

    def route(self, db_url: str) -> Route:
        """Through PgBouncer, as docs/operations.md says to configure it: no prepared
        statements, LISTEN on the server itself."""
        return Route(self.url(db_url), {"prepare_threshold": "", "listen_url": db_url})


@contextmanager
def pgbouncer(server_url: str, directory: Path) -> Iterator[Bouncer]:
    """PgBouncer in transaction mode on a free loopback port, in front of
    `server_url`'s server (every database of it), until the block ends."""
    assert BINARY is not None
    server = conninfo_to_dict(server_url)
    host = str(server.get("host") or "127.0.0.1")
    user = str(server.get("user") or getpass.getuser())
    port = free_port()
    (directory / "users.txt").write_text(f'"{user}" ""\n')
    config = directory / "pgbouncer.ini"
    config.write_text(
        "[databases]\n"
        f"* = host={host} port={server.get('port') or 5432}\n"
        "[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
        f"auth_type = trust\nauth_file = {directory / 'users.txt'}\n"
        f"pool_mode = transaction\ndefault_pool_size = {SERVER_CONNECTIONS}\n"
        "max_client_conn = 1000\nlog_connections = 0\nlog_disconnections = 0\n"
    )
    log = directory / "pgbouncer.log"
    with log.open("w") as output:
        process = subprocess.Popen(
            [BINARY, *_unprivileged(host), str(config)], stdout=output, stderr=subprocess.STDOUT
        )
    try:
        _until_accepting(process, port, log)
        yield Bouncer(port, log)
    finally:
        process.send_signal(signal.SIGINT)  # its safe shutdown
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _unprivileged(server_host: str) -> list[str]:
    """PgBouncer refuses to run as root: `-u` a user who can reach the server (it
    reads its files before it switches). For a socket, the owner of its directory
    (the embedded server's); else `postgres`, as Debian's unit runs it (the
    package depends on postgresql-common, which creates the user)."""
    if os.geteuid() != 0:
        return []
    if server_host.startswith("/"):
        return ["-u", pwd.getpwuid(Path(server_host).stat().st_uid).pw_name]
    return ["-u", "postgres"]


def _until_accepting(process: subprocess.Popen[bytes], port: int, log: Path) -> None:
    deadline = time.monotonic() + 10
    while True:
        assert process.poll() is None, f"pgbouncer exited: {log.read_text()}"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            assert time.monotonic() < deadline, f"pgbouncer never listened: {log.read_text()}"
            time.sleep(0.02)
