"""Secrets never reach the logs or the database, even at DEBUG with every key set."""

from collections.abc import Callable
from pathlib import Path
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import DictRow

from tests.helpers import TABLES, wait_for
from tests.stack import KIE_SECRET, UPLOAD_POST_SECRET, stack

Conn = AsyncConnection[DictRow]
KEYS = {
    "kie_api_key": "kie-KEY-0f3a9c",
    "shotstack_api_key": "shotstack-KEY-77b1e2",
    "upload_post_api_key": "uploadpost-KEY-c4d5e6",
    "api_token": "api-TOKEN-9a8b7c-for-the-secrets-test-0123456789",
}
STATUS = "SELECT status FROM runs WHERE run_id = %s"


def _status_is(status: str) -> Callable[[list[dict[str, Any]]], bool]:
    return lambda rows: bool(rows) and rows[0]["status"] == status


async def test_a_full_run_with_every_secret_set_leaks_none(
    db_url: str, conn: Conn, tmp_path: Path
) -> None:
    from tests.helpers import free_port

    sandbox = f"http://127.0.0.1:{free_port()}"
    settings: dict[str, object] = {
        **KEYS,
        "sandbox_port": sandbox.rsplit(":", 1)[1],
        # Keys set: the clients would talk to the real providers; point them at the sandbox.
        "kie_base_url": f"{sandbox}/kie",
        "shotstack_base_url": f"{sandbox}/shotstack/edit/stage",
        "upload_post_base_url": f"{sandbox}/upload-post",
        "log_level": "DEBUG",
    }
    auth = {"Authorization": f"Bearer {KEYS['api_token']}"}
    async with stack(db_url, tmp_path, **settings) as s:
        s.daemon("w1")
        created = await s.http.post(
            f"{s.api}/runs", json={"project": "p", "brief": "b"}, headers=auth
        )
        run_id = created.json()["run_id"]
        for gate in ("workflow", "publish"):
            await wait_for(
                conn,
                STATUS,
                (run_id,),
                until=_status_is(f"pending_{gate}"),
                within=60,
            )
            response = await s.http.post(
                f"{s.api}/runs/{run_id}/approvals", json={"gate": gate}, headers=auth
            )
            assert response.status_code == 201
        await wait_for(conn, STATUS, (run_id,), until=_status_is("published"), within=60)
        # A wrong token is refused without echoing either token.
        refused = await s.http.post(
            f"{s.api}/runs", json={"project": "p"}, headers={"Authorization": "Bearer nope"}
        )
        assert refused.status_code == 401
        logs = {name: process.log() for name, process in s.processes.items()}
    assert all(logs.values()), "a process logged nothing: the check would prove nothing"
    assert any("DEBUG" in text for text in logs.values())
    secrets = [*KEYS.values(), KIE_SECRET, UPLOAD_POST_SECRET]
    for name, text in logs.items():
        for secret in secrets:
            assert secret not in text, f"{name} logged a secret"
    for table in TABLES:
        dump = await (await conn.execute(f"SELECT t::text AS row FROM {table} t")).fetchall()  # noqa: S608
        text = "\n".join(row["row"] for row in dump)
        for secret in secrets:
            assert secret not in text, f"{table} holds a secret"
