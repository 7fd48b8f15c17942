"""Who may read and who approved: identities, roles, sessions, and the request guard."""

import asyncio
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from psycopg import AsyncConnection, sql
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import DictRow, dict_row
from psycopg.types.json import Jsonb
from pydantic import SecretStr

from engine.db.connections import open_pool
from engine.runtime import store
from engine.service.access.identities import Role, create_token
from engine.service.api import create_app
from engine.settings import Settings
from tests.app import app as test_app
from tests.conftest import orchestrator
from tests.helpers import daemons, wait_for
from tests.stack import _until_up, free_port

Conn = AsyncConnection[DictRow]
TOKEN = "bootstrap-token-for-the-access-tests-0123456789"


@asynccontextmanager
async def api(
    db_url: str, *, peer: str = "203.0.113.7", base: str = "http://api.example", **settings: object
) -> AsyncIterator[httpx.AsyncClient]:
    chosen = Settings(**settings)  # type: ignore[arg-type]
    async with open_pool(db_url, chosen) as pool:
        app = create_app(test_app, test_app.configure(chosen), url=db_url, pool=pool)
        transport = httpx.ASGITransport(app=app, client=(peer, 4711))
        async with httpx.AsyncClient(transport=transport, base_url=base) as client:
            yield client


async def _waiting(conn: Conn) -> str:
    run = await store.create_run(conn, project="cats", payload={}, workflow="production")
    await conn.execute(
        "UPDATE runs SET status = 'pending_workflow', waiting_for = %s WHERE run_id = %s",
        (Jsonb({"gate": "workflow", "pause_id": 1}), run["run_id"]),
    )
    return str(run["run_id"])


OPEN_PATHS = ["/healthz", "/readyz"]
CLOSED_PATHS = ["/runs", "/runs/run_x", "/docs", "/openapi.json", "/metrics"]


async def test_with_a_token_every_endpoint_but_health_and_webhooks_needs_it(
    db_url: str, conn: Conn
) -> None:
    run_id = await _waiting(conn)
    async with api(db_url, api_token=SecretStr(TOKEN)) as client:
        for path in OPEN_PATHS:
            assert (await client.get(path)).status_code == 200, path
        for path in [*CLOSED_PATHS, f"/runs/{run_id}"]:
            response = await client.get(path)
            assert response.status_code == 401, path
            assert response.json()["field"] == "authorization"
        for page in ["/", "/console/runs", f"/console/runs/{run_id}"]:
            response = await client.get(page)
            assert response.status_code == 303 and response.headers["location"].startswith(
                "/console/login?next="
            )
        # Webhooks are signed by their providers, not by us: never a 401.
        assert (await client.post("/webhooks/nobody", content=b"{}")).status_code == 404
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        for path in ["/runs", "/docs", "/openapi.json"]:
            assert (await client.get(path, headers=bearer)).status_code == 200, path
        docs = await client.get("/docs", headers=bearer)
        policy = docs.headers["content-security-policy"]
        assert "'sha256-" in policy and "unsafe-inline" not in policy
        assert "frame-ancestors 'none'" in policy
    async with api(db_url, api_token=SecretStr(TOKEN), metrics_public=True) as client:
        # Public by setting (this app has no telemetry to show: not a 401, a 404).
        assert (await client.get("/metrics")).status_code == 404


async def test_named_tokens_carry_a_role_and_the_approver_is_their_identity(
    db_url: str, conn: Conn
) -> None:
    _, viewer = await create_token(conn, "vic", Role.VIEWER)
    _, approver = await create_token(conn, "ann", Role.APPROVER)
    run_id = await _waiting(conn)
    async with api(db_url) as client:  # no bootstrap token: the named ones switch auth on
        assert (await client.get("/runs")).status_code == 401

        def as_(token: str) -> dict[str, str]:
            return {"Authorization": f"Bearer {token}"}

        assert (await client.get("/runs", headers=as_(viewer))).status_code == 200
        denied = await client.post(
            f"/runs/{run_id}/approvals", json={"gate": "workflow"}, headers=as_(viewer)
        )
        assert denied.status_code == 403
        assert denied.json()["error"] == "vic is viewer: this needs the approver role"
        created = await client.post("/runs", json={"project": "p"}, headers=as_(approver))
        assert created.status_code == 403
        typed = await client.post(
            f"/runs/{run_id}/approvals",
            json={"gate": "workflow", "approver": "the-ceo"},
            headers=as_(approver),
        )
        assert typed.status_code == 422 and typed.json()["field"] == "approver"
        sent = await client.post(
            f"/runs/{run_id}/approvals", json={"gate": "workflow"}, headers=as_(approver)
        )
        assert sent.status_code == 201 and sent.json()["approver"] == "ann"
        # A token whose secret is wrong for its id is no one's.
        forged = approver[:-4] + ("AAAA" if not approver.endswith("AAAA") else "BBBB")
        assert (await client.get("/runs", headers=as_(forged))).status_code == 401


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


async def test_a_burst_of_wrong_guesses_gets_429_and_one_warning(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="engine.service.access.failures")
    async with api(db_url, api_token=SecretStr(TOKEN), auth_failures=10) as client:
        codes: Counter[int] = Counter()
        for i in range(100):
            response = await client.get("/runs", headers={"Authorization": f"Bearer guess-{i}"})
            codes[response.status_code] += 1
        assert codes == {401: 10, 429: 90}
        limited = await client.get("/runs", headers={"Authorization": "Bearer guess"})
        assert int(limited.headers["Retry-After"]) >= 1
        # The console's sign-in counts against the same client.
        form = await client.post("/console/login", data={"token": TOKEN, "next": "/"})
        assert form.status_code == 429
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "203.0.113.7" in warnings[0].getMessage()


async def test_guesses_at_one_identity_are_limited_from_any_client(db_url: str, conn: Conn) -> None:
    _, token = await create_token(conn, "ann", Role.ADMIN)
    wrong = token[:-1] + ("A" if token[-1] != "A" else "B")
    for i in range(10):  # ten clients, one wrong guess each
        async with api(db_url, peer=f"198.51.100.{i}", auth_failures=10) as client:
            await client.get("/runs", headers={"Authorization": f"Bearer {wrong}"})
    async with api(db_url, peer="198.51.100.99", auth_failures=10) as client:
        # Each test's app has its own counters: one client guesses ten times.
        for _ in range(10):
            await client.get("/runs", headers={"Authorization": f"Bearer {wrong}"})
        refused = await client.get("/runs", headers={"Authorization": f"Bearer {token}"})
    assert refused.status_code == 429


@pytest.mark.parametrize("token", ["", "   ", "CHANGE_ME", "short-token-of-31-characters-xx"])
async def test_startup_refuses_an_empty_short_or_placeholder_token(db_url: str, token: str) -> None:
    with pytest.raises(store.InvalidInput, match="ORCHESTRATOR_API_TOKEN"):
        async with api(db_url, api_token=SecretStr(token)):
            pass


def test_the_api_command_refuses_a_weak_token_in_one_line(db_url: str) -> None:
    result = orchestrator(db_url, "api", api_token="CHANGE_ME", api_port=free_port())
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: ORCHESTRATOR_API_TOKEN: is the shipped placeholder; set a random token"
    )
    exposed = orchestrator(db_url, "api", api_host="0.0.0.0", api_port=free_port())
    assert exposed.returncode == 2 and "listens on loopback only" in exposed.stderr


async def test_without_a_token_only_loopback_hosts_and_clients_are_served(db_url: str) -> None:
    async with api(db_url, peer="127.0.0.1", base="http://127.0.0.1:8000") as client:
        assert (await client.get("/runs")).status_code == 200
        rebound = await client.get("/runs", headers={"Host": "evil.example"})
        assert rebound.status_code == 421 and rebound.json()["field"] == "host"
    async with api(
        db_url, peer="127.0.0.1", base="http://127.0.0.1:8000", allowed_hosts=["box.lan"]
    ) as client:
        assert (await client.get("/runs", headers={"Host": "box.lan"})).status_code == 200
    async with api(db_url, peer="192.0.2.1", base="http://127.0.0.1:8000") as client:
        assert (await client.get("/runs")).status_code == 403


async def test_state_changing_requests_from_another_origin_are_refused(
    db_url: str, conn: Conn
) -> None:
    async with api(db_url, peer="127.0.0.1", base="http://127.0.0.1:8000") as client:
        for headers in (
            {"Origin": "http://evil.example"},
            {"Origin": "null"},
            {"Sec-Fetch-Site": "cross-site"},
        ):
            response = await client.post("/runs", json={"project": "p"}, headers=headers)
            assert response.status_code == 403 and response.json()["field"] == "origin"
        same = await client.post(
            "/runs", json={"project": "p"}, headers={"Origin": "http://127.0.0.1:8000"}
        )
        assert same.status_code == 201
    count = await (await conn.execute("SELECT count(*) AS n FROM runs")).fetchone()
    assert count == {"n": 1}


async def test_html_pages_carry_the_security_headers_and_redirect_only_home(
    db_url: str,
) -> None:
    async with api(db_url, api_token=SecretStr(TOKEN)) as client:
        for path in ["/console/login", "/console/login?next=/console/runs"]:
            page = await client.get(path)
            policy = page.headers["content-security-policy"]
            assert "frame-ancestors 'none'" in policy and "script-src 'self'" in policy
            assert "unsafe-inline" not in policy
            assert page.headers["x-content-type-options"] == "nosniff"
            assert page.headers["referrer-policy"] == "same-origin"
        assert (await client.get("/healthz")).headers["x-content-type-options"] == "nosniff"
        for target in ["//evil.example", "/\t/evil.example", "https://evil.example", "/\\evil"]:
            signed = await client.post("/console/login", data={"token": TOKEN, "next": target})
            assert signed.status_code == 303 and signed.headers["location"] == "/", target


async def test_forwarded_for_is_believed_only_from_a_trusted_proxy(
    db_url: str, conn: Conn, tmp_path: Path
) -> None:
    forged = {"X-Forwarded-For": "6.6.6.6", "Authorization": f"Bearer {TOKEN}"}
    seen: list[str] = []
    for trusted in ("", '["127.0.0.1"]'):
        run_id = await _waiting(conn)
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


async def test_concurrent_sign_ins_each_get_their_own_session(db_url: str) -> None:
    async with api(db_url, api_token=SecretStr(TOKEN)) as client:
        responses = await asyncio.gather(
            *(client.post("/console/login", data={"token": TOKEN, "next": "/"}) for _ in range(5))
        )
    cookies = {r.cookies["orchestrator_session"] for r in responses}
    assert len(cookies) == 5


async def test_with_the_database_gone_health_answers_and_nothing_opens(
    admin_url: str, db_url: str
) -> None:
    """The guard asks the database whether named tokens exist: unreachable, health
    still answers at once and everything else stays closed."""
    dbname = str(conninfo_to_dict(db_url)["dbname"])
    name = sql.Identifier(dbname)
    async with (
        api(db_url, peer="127.0.0.1", base="http://127.0.0.1") as client,
        await AsyncConnection.connect(admin_url, autocommit=True, row_factory=dict_row) as admin,
    ):
        await admin.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS false").format(name))
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
            (dbname,),
        )
        # pg_terminate_backend only signals: until the backends are gone, the pool's
        # connection may still answer.
        await wait_for(
            admin,
            "SELECT count(*) AS n FROM pg_stat_activity WHERE datname = %s",
            (dbname,),
            until=lambda rows: rows[0]["n"] == 0,
        )
        try:
            started = time.monotonic()
            assert (await client.get("/healthz")).status_code == 200
            assert (await client.get("/healthz")).status_code == 200
            assert (await client.get("/runs")).status_code == 401
            assert time.monotonic() - started < 5
        finally:
            await admin.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS true").format(name))
