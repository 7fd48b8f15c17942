"""Who may read and who approved: identities, roles, sessions, and the request guard."""

import asyncio
import logging
import time
from collections import Counter

import pytest
from psycopg import AsyncConnection, sql
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import DictRow, dict_row
from psycopg.types.json import Jsonb
from pydantic import SecretStr

from engine.runtime import store
from engine.service.access.identities import Role, create_token
from engine.settings import Settings
from tests.access import TOKEN, api, waiting_run
from tests.helpers import wait_for

Conn = AsyncConnection[DictRow]


OPEN_PATHS = ["/healthz", "/readyz"]
CLOSED_PATHS = ["/runs", "/runs/run_x", "/docs", "/openapi.json", "/metrics"]


async def test_with_a_token_every_endpoint_but_health_and_webhooks_needs_it(
    db_url: str, conn: Conn
) -> None:
    run_id = await waiting_run(conn)
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
    run_id = await waiting_run(conn)
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


async def test_a_pause_escalated_to_admins_refuses_an_approver(db_url: str, conn: Conn) -> None:
    _, approver = await create_token(conn, "ann", Role.APPROVER)
    _, admin = await create_token(conn, "ada", Role.ADMIN)
    run_id = await waiting_run(conn)
    escalated = {
        "gate": "workflow",
        "pause_id": 1,
        "escalated": {"from": "workflow", "role": "admin"},
    }
    await conn.execute(
        "UPDATE runs SET waiting_for = %s WHERE run_id = %s", (Jsonb(escalated), run_id)
    )
    async with api(db_url) as client:
        refused = await client.post(
            f"/runs/{run_id}/approvals",
            json={"gate": "workflow"},
            headers={"Authorization": f"Bearer {approver}"},
        )
        assert refused.status_code == 403
        assert refused.json()["error"] == (
            "ann is approver: the workflow gate was escalated to the admin role at its deadline"
        )
        accepted = await client.post(
            f"/runs/{run_id}/approvals",
            json={"gate": "workflow"},
            headers={"Authorization": f"Bearer {admin}"},
        )
        assert accepted.status_code == 201 and accepted.json()["approver"] == "ada"


async def test_the_pages_policy_lets_previews_come_from_the_configured_media_origins(
    db_url: str,
) -> None:
    loopback = {"peer": "127.0.0.1", "base": "http://127.0.0.1"}
    async with api(db_url, **loopback, console_media_sources=["http://127.0.0.1:8100"]) as client:
        policy = (await client.get("/console/runs")).headers["content-security-policy"]
    assert "media-src 'self' https: http://127.0.0.1:8100;" in policy
    assert "img-src 'self' https: data: http://127.0.0.1:8100;" in policy
    with pytest.raises(ValueError, match="is not an origin"):
        Settings(console_media_sources=["http://x:1; script-src *"])


def test_the_console_may_show_the_media_of_the_sandbox_the_providers_use() -> None:
    """Whichever process serves the sandbox: the API alone adds its origin too."""
    from pydantic import SecretStr

    from providers.settings import ProviderSettings
    from tests.app import app as test_app

    sandboxed = test_app.configure(Settings(console_media_sources=["https://cdn.example"]))
    sandboxed = sandboxed.replaced(ProviderSettings(sandbox_port=8123))
    assert test_app.console_media(sandboxed) == ["https://cdn.example", "http://127.0.0.1:8123"]
    keyed = sandboxed.replaced(ProviderSettings(sandbox_port=8123, kie_api_key=SecretStr("k" * 32)))
    assert test_app.console_media(keyed) == ["https://cdn.example"]
