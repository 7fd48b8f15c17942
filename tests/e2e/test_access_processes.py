"""Access control through real processes: the CLI's token commands, the `api` command's
refusals, and a daemon behind a trusted proxy (the in-process checks are in
tests/integration/test_access.py)."""

from pathlib import Path

import httpx
from psycopg import AsyncConnection
from psycopg.rows import DictRow

from engine.service.access.identities import Role, create_token
from tests.access import TOKEN, api, waiting_run
from tests.conftest import orchestrator
from tests.helpers import daemons, free_port
from tests.stack import _until_up

Conn = AsyncConnection[DictRow]


def test_tokens_create_list_revoke_through_the_cli(db_url: str) -> None:
    created = orchestrator(db_url, "tokens", "create", "--name", "ann", "--role", "approver")
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    assert token.startswith("orch_") and len(token) > 40
    assert "shown once" in created.stderr
    again = orchestrator(db_url, "tokens", "create", "--name", "ann", "--role", "admin")
    assert again.returncode == 1 and "a live token named 'ann' exists" in again.stderr
    bad = orchestrator(db_url, "tokens", "create", "--name", "a b", "--role", "admin")
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
    badrole = orchestrator(db_url, "tokens", "create", "--name", "bob", "--role", "root")
    assert badrole.returncode == 2
    listed = orchestrator(db_url, "tokens", "list", "--json")
    assert listed.returncode == 0 and token not in listed.stdout
    assert '"name": "ann"' in listed.stdout and "secret" not in listed.stdout
    revoked = orchestrator(db_url, "tokens", "revoke", "ann")
    assert revoked.returncode == 0, revoked.stderr
    assert orchestrator(db_url, "tokens", "revoke", "ann").returncode == 1


async def test_revoking_a_token_ends_its_console_sessions(db_url: str, conn: Conn) -> None:
    _, token = await create_token(conn, "ann", Role.APPROVER)
    async with api(db_url) as client:
        signed = await client.post("/console/login", data={"token": token, "next": "/"})
        assert signed.status_code == 303
        assert (await client.get("/")).status_code == 200
        assert orchestrator(db_url, "tokens", "revoke", "ann").returncode == 0
        assert (await client.get("/")).status_code == 303


def test_the_api_command_refuses_a_weak_token_in_one_line(db_url: str) -> None:
    result = orchestrator(db_url, "api", api_token="CHANGE_ME", api_port=free_port())
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: ORCHESTRATOR_API_TOKEN: is the shipped placeholder; set a random token"
    )
    exposed = orchestrator(db_url, "api", api_host="0.0.0.0", api_port=free_port())
    assert exposed.returncode == 2 and "listens on loopback only" in exposed.stderr


async def test_forwarded_for_is_believed_only_from_a_trusted_proxy(
    db_url: str, conn: Conn, tmp_path: Path
) -> None:
    forged = {"X-Forwarded-For": "6.6.6.6", "Authorization": f"Bearer {TOKEN}"}
    seen: list[str] = []
    for trusted in ("", '["127.0.0.1"]'):
        run_id = await waiting_run(conn)
        port = free_port()
        settings: dict[str, object] = {"api_port": port, "api_token": TOKEN}
        if trusted:
            settings["trusted_proxies"] = trusted
        with daemons(db_url, tmp_path) as start:
            process = start(f"api{len(seen)}", "api", **settings)
            async with httpx.AsyncClient(timeout=10) as http:
                url = f"http://127.0.0.1:{port}"
                await _until_up(http, f"{url}/readyz", process)
                sent = await http.post(
                    f"{url}/runs/{run_id}/approvals", json={"gate": "workflow"}, headers=forged
                )
                assert sent.status_code == 201, sent.text
                seen.append(sent.json()["approver_ip"])
    assert seen == ["127.0.0.1", "6.6.6.6"]
