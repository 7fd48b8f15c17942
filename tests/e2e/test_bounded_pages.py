"""Every page and response has a bounded size whatever is stored, and stored deliveries
do not outlive their retention.

A stranger's webhook is stored as sent (up to the ingress's limit, and rows
written before that limit existed may be larger): the run's page shows a
preview cut by bytes and depth, with a link to the raw bytes.
"""

import json
import time
from collections.abc import Iterator
from datetime import timedelta

import httpx
import psycopg
import pytest
from psycopg import AsyncConnection
from psycopg.rows import DictRow, dict_row
from psycopg.types.json import Jsonb

from engine.runtime.retention import prune
from engine.settings import Settings
from tests.conftest import migrated_database, orchestrator
from tests.helpers import start_api

Conn = AsyncConnection[DictRow]
RUN = "run_boundedpages"
PAGE_LIMIT = 256 * 1024
# Deep, then wide: pretty-printed, every leaf is indented by the depth. 200 KB of
# this made a run page of 228 MB.
DEPTH = 900
DEEP_WIDE = "[" * DEPTH + ",".join(["1"] * 150_000) + "]" * DEPTH


@pytest.fixture(scope="module")
def db(admin_url: str) -> Iterator[str]:
    with migrated_database(admin_url, prefix="orch_bounded") as url:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO runs (run_id, project, status, payload, waiting_for) "
                "VALUES (%s, 'p', 'waiting_provider', '{}', %s)",
                (RUN, Jsonb({"provider": "kie", "job_id": "task-big"})),
            )
            conn.execute(
                "INSERT INTO artifacts (run_id, type, provider, provider_job_id, status) "
                "VALUES (%s, 'image', 'kie', 'task-big', 'submitted')",
                (RUN,),
            )
        yield url


@pytest.fixture(scope="module")
def base(db: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    process, url = start_api(db, tmp_path_factory.mktemp("bounded"))
    yield url
    process.close()


def _store_event(db: str, status: str, payload_text: str, job_id: str = "task-big") -> int:
    with psycopg.connect(db, autocommit=True, row_factory=dict_row) as conn:
        row = conn.execute(
            "INSERT INTO webhook_events (provider, signature_status, payload, job_id, run_id) "
            "VALUES ('kie', %s, %s::jsonb, %s, %s) RETURNING id",
            (status, payload_text, job_id, RUN),
        ).fetchone()
    assert row is not None
    return int(row["id"])


def test_a_huge_deep_webhook_keeps_the_run_page_small_and_links_the_raw_bytes(
    base: str, db: str
) -> None:
    stored = json.dumps({"data": {"taskId": "task-big", "x": json.loads(DEEP_WIDE)}})
    event_id = _store_event(db, "valid", stored)
    # Small enough to be previewed: the preview itself is cut by depth and bytes.
    small = "[" * 200 + ",".join(["1"] * 20_000) + "]" * 200
    _store_event(db, "valid", json.dumps({"data": {"taskId": "task-big", "x": json.loads(small)}}))
    for path in (f"/console/runs/{RUN}", f"/console/runs/{RUN}/live"):
        started = time.monotonic()
        page = httpx.get(f"{base}{path}", timeout=60)
        assert page.status_code == 200
        assert len(page.content) < PAGE_LIMIT, (path, len(page.content))
        assert time.monotonic() - started < 2, path
        assert f"/runs/{RUN}/webhook-events/{event_id}/raw" in page.text
    raw = httpx.get(f"{base}/runs/{RUN}/webhook-events/{event_id}/raw", timeout=60)
    assert raw.status_code == 200
    assert raw.headers["content-type"] == "application/octet-stream"
    assert raw.headers["x-content-type-options"] == "nosniff"
    with psycopg.connect(db, row_factory=dict_row) as conn:
        row = conn.execute(
            "SELECT payload::text AS text FROM webhook_events WHERE id = %s", (event_id,)
        ).fetchone()
    assert row is not None and raw.content == row["text"].encode()
    other = httpx.get(f"{base}/runs/run_someoneelse/webhook-events/{event_id}/raw")
    assert other.status_code == 404 and other.json()["field"] == "event_id"


def test_an_unverified_delivery_is_marked_and_not_shown_as_the_providers(
    base: str, db: str
) -> None:
    forged = json.dumps({"data": {"taskId": "task-big", "note": "FORGED-RESULT-URL"}})
    event_id = _store_event(db, "unsigned", forged)
    page = httpx.get(f"{base}/console/runs/{RUN}").text
    entry = page[page.index(f'id="event-{event_id}"') :]
    entry = entry[: entry.index("</li>")]
    assert "unverified" in entry.lower()
    assert "FORGED-RESULT-URL" not in page
    assert f"/runs/{RUN}/webhook-events/{event_id}/raw" in entry


def test_a_flood_of_events_on_one_run_keeps_its_page_bounded(base: str, db: str) -> None:
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO webhook_events (provider, signature_status, payload, job_id, run_id) "
            "SELECT 'kie', 'unsigned', jsonb_build_object('n', g, 'pad', repeat('x', 2000)),"
            " 'task-big', %s FROM generate_series(1, 3000) g",
            (RUN,),
        )
    page = httpx.get(f"{base}/console/runs/{RUN}", timeout=60)
    assert page.status_code == 200 and len(page.content) < PAGE_LIMIT, len(page.content)
    assert "more webhook events" in page.text
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("DELETE FROM webhook_events WHERE payload ? 'pad'")


def test_api_run_lists_are_bounded_whatever_the_payloads(base: str, db: str) -> None:
    big = Jsonb({"blob": "y" * 900_000})
    with psycopg.connect(db, autocommit=True) as conn:
        for n in range(20):
            conn.execute(
                "INSERT INTO runs (run_id, project, status, payload, workflow) "
                "VALUES (%s, 'big', 'queued', %s, 'ledger')",
                (f"run_bigpayload{n:02d}", big),
            )
    listed = httpx.get(f"{base}/runs", params={"project": "big", "limit": 1000}, timeout=60)
    assert listed.status_code == 200 and len(listed.json()) == 20
    assert len(listed.content) < 200_000, len(listed.content)
    preview = listed.json()[0]["payload"]
    assert preview["truncated"] is True and preview["bytes"] > 900_000
    # One run shows more of each value (64 KiB), but not without bound either.
    shown = httpx.get(f"{base}/runs/run_bigpayload00", timeout=60)
    assert len(shown.content) < 200_000, len(shown.content)
    assert shown.json()["run"]["payload"]["bytes"] > 900_000
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("DELETE FROM runs WHERE project = 'big'")


async def test_prune_removes_old_webhook_events_of_finished_or_unknown_runs(
    conn: Conn, db_url: str
) -> None:
    await conn.execute(
        "INSERT INTO runs (run_id, project, status, payload, updated_at) VALUES "
        "('run_finished', 'p', 'published', '{}', NOW() - INTERVAL '35 days'),"
        " ('run_live', 'p', 'waiting_provider', '{}', NOW() - INTERVAL '35 days')"
    )
    await conn.execute(
        "INSERT INTO webhook_events (provider, signature_status, run_id, received_at, delivery_id)"
        " VALUES ('kie', 'invalid', NULL, NOW() - INTERVAL '40 days', 'stray-old'),"
        " ('kie', 'valid', 'run_finished', NOW() - INTERVAL '40 days', 'finished-old'),"
        " ('kie', 'valid', 'run_live', NOW() - INTERVAL '40 days', 'live-old'),"
        " ('kie', 'invalid', NULL, NOW() - INTERVAL '1 day', 'stray-recent')"
    )
    done = await prune(db_url, Settings(), timedelta(days=30))
    assert done is not None and done.events == 2
    cursor = await conn.execute("SELECT delivery_id FROM webhook_events ORDER BY id")
    rows = await cursor.fetchall()
    assert [r["delivery_id"] for r in rows] == ["live-old", "stray-recent"]


@pytest.mark.parametrize(
    "payload",
    [
        "[" * 1000 + "]" * 1000,  # deeper than Python's JSON parser goes
        json.dumps({"brief": "x" * (2 << 20)}),  # 2 MiB in one string
    ],
    ids=["1000-deep", "2-MiB"],
)
def test_a_run_written_by_sql_that_the_api_cannot_show_whole_is_shown_bounded(
    db: str, base: str, payload: str
) -> None:
    """A payload no API request could have created, inserted with plain SQL: every
    page and response that shows the run answers, and stays small."""
    run_id = "run_sqlpayload" + str(len(payload) % 997)
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO runs (run_id, project, status, payload, waiting_for) "
            "VALUES (%s, 'p', 'pending_workflow', %s::jsonb, %s::jsonb)",
            (run_id, payload, payload),
        )
    try:
        for path in (
            "/runs",
            f"/runs/{run_id}",
            "/",
            "/console/runs",
            f"/console/runs/{run_id}",
            f"/console/runs/{run_id}/live",
        ):
            response = httpx.get(f"{base}{path}", timeout=60)
            assert response.status_code == 200, (path, response.text[:300])
            assert len(response.content) < PAGE_LIMIT, (path, len(response.content))
    finally:
        with psycopg.connect(db, autocommit=True) as conn:
            conn.execute("DELETE FROM runs WHERE run_id = %s", (run_id,))


def test_the_cli_shows_a_run_nested_too_deep_to_decode(db: str) -> None:
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO runs (run_id, project, payload) VALUES ('run_deepcli', 'p', %s::jsonb)",
            ("[" * 1000 + "]" * 1000,),
        )
    try:
        shown = orchestrator(db, "runs", "show", "run_deepcli", "--json")
        assert shown.returncode == 0, shown.stderr
        assert "nested too deep to decode" in shown.stdout
        listed = orchestrator(db, "runs", "list", "--json")
        assert listed.returncode == 0 and "run_deepcli" in listed.stdout, listed.stderr
    finally:
        with psycopg.connect(db, autocommit=True) as conn:
            conn.execute("DELETE FROM runs WHERE run_id = 'run_deepcli'")
