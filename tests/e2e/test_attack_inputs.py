"""What a stranger can send: values the JSON parser takes but PostgreSQL cannot hold,
floods, oversized and replayed webhooks, forged callbacks, undeclared run input.

Every case runs against a real API process over loopback on its own database;
each refusal is a 4xx that names the field, never a 500.
"""

import hashlib
import hmac
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from psycopg.rows import dict_row

from tests.conftest import ROOT, migrated_database, orchestrator
from tests.helpers import DaemonProcess, start_api
from tests.scripted_http import Reply, ScriptedServer
from tests.stack import KIE_SECRET, UPLOAD_POST_SECRET

TOKEN = "attack-token-0123456789abcdef0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
JSON_TYPE = {"Content-Type": "application/json"}
WAITING = "run_waitingatgate"
RENDER_KNOWN = "4fa3b2c1-0000-4000-8000-00000000aaaa"

# JSON text the parser accepts but nothing downstream can hold, as (id, text).
UNHOLDABLE = [
    ("nan", "NaN"),
    ("infinity", "Infinity"),
    ("minus-infinity", "-Infinity"),
    ("overflowing-float", "1e999"),
    ("int-beyond-64-bits", "18446744073709551616"),
    ("negative-int-beyond-64-bits", "-9223372036854775809"),
    ("lone-high-surrogate", '"\\ud800"'),
    ("lone-low-surrogate", '"x\\udfff"'),
    ("nul", '"a\\u0000b"'),
    ("too-deep", "[" * 65 + "]" * 65),
]
STRING_ONLY = {"lone-high-surrogate", "lone-low-surrogate", "nul"}


@pytest.fixture(scope="module")
def db(admin_url: str) -> Iterator[str]:
    with migrated_database(admin_url, prefix="orch_attack") as url:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO runs (run_id, project, status, payload, waiting_for) VALUES "
                "(%s, 'p', 'pending_workflow', '{}', '{\"gate\": \"workflow\"}'), "
                "('run_waitingrender', 'p', 'waiting_provider', '{}', NULL)",
                (WAITING,),
            )
            conn.execute(
                "INSERT INTO artifacts (run_id, type, provider, provider_job_id) "
                "VALUES ('run_waitingrender', 'render', 'shotstack', %s)",
                (RENDER_KNOWN,),
            )
        yield url


@pytest.fixture(scope="module")
def api(
    db: str, tmp_path_factory: pytest.TempPathFactory, scripted_server: ScriptedServer
) -> Iterator[tuple[DaemonProcess, str]]:
    process, base = start_api(
        db,
        tmp_path_factory.mktemp("attack"),
        api_token=TOKEN,
        kie_webhook_secret=KIE_SECRET,
        upload_post_webhook_secret=UPLOAD_POST_SECRET,
        shotstack_api_key="shotstack-attack-key",
        shotstack_base_url=scripted_server.url,
        webhook_max_bytes=8192,
    )
    yield process, base
    process.close()


@pytest.fixture
def base(api: tuple[DaemonProcess, str]) -> str:
    return api[1]


def _counts(db: str) -> dict[str, int]:
    with psycopg.connect(db, row_factory=dict_row) as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM runs) AS runs,"
            " (SELECT count(*) FROM hitl_approvals) AS approvals,"
            " (SELECT count(*) FROM webhook_events) AS events"
        ).fetchone()
    assert row is not None
    return dict(row)


def _refused(response: httpx.Response, field: str) -> None:
    assert 400 <= response.status_code < 500, (response.status_code, response.text)
    body = response.json()
    assert body["field"] == field, body
    assert field in body["error"], body


def _run_bodies(value: str, case: str) -> list[tuple[str, str]]:
    """(body, the field it must name) for each place of POST /runs a value can go."""
    bodies = [
        (f'{{"project": "p", "workflow": "ledger", "payload": {{"x": {value}}}}}', "payload.x"),
        (
            f'{{"project": "p", "workflow": "ledger", "payload": {{"a": [1, {value}]}}}}',
            "payload.a.1",
        ),
        (f'{{"project": "p", "priority": {value}}}', "priority"),
    ]
    if case in STRING_ONLY:
        bodies += [(f'{{"project": "p", "brief": {value}}}', "brief")]
        bodies += [(f'{{"project": {value}}}', "project")]
    return bodies


@pytest.mark.parametrize(("case", "value"), UNHOLDABLE, ids=[c for c, _ in UNHOLDABLE])
def test_post_runs_refuses_unholdable_values_naming_the_field(
    base: str, db: str, case: str, value: str
) -> None:
    before = _counts(db)
    for body, field in _run_bodies(value, case):
        response = httpx.post(f"{base}/runs", content=body, headers={**AUTH, **JSON_TYPE})
        _refused(response, field if case != "too-deep" else field.split(".")[0])
    assert _counts(db) == before


@pytest.mark.parametrize(("case", "value"), UNHOLDABLE, ids=[c for c, _ in UNHOLDABLE])
def test_approvals_refuse_unholdable_values_naming_the_field(
    base: str, db: str, case: str, value: str
) -> None:
    before = _counts(db)
    places = [(f'{{"gate": "workflow", "payload": {{"workflow": {value}}}}}', "payload")]
    if case in STRING_ONLY:
        places += [(f'{{"gate": "workflow", "comment": {value}}}', "comment")]
        places += [(f'{{"gate": "workflow", "approver": {value}}}', "approver")]
    for body, field in places:
        response = httpx.post(
            f"{base}/runs/{WAITING}/approvals", content=body, headers={**AUTH, **JSON_TYPE}
        )
        assert 400 <= response.status_code < 500, (response.status_code, response.text)
        assert response.json()["field"].startswith(field), response.text
    assert _counts(db) == before


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/runs?status=%00", "status"),
        ("/runs?project=a%00b", "project"),
        ("/runs?status=%ED%A0%80", None),  # not UTF-8: decoded with replacement, not a crash
        ("/runs?status=%CE%A9%E6%BC%A2", None),  # not Latin-1: a status no run has
        ("/runs?limit=99999999999999999999999", "limit"),
        ("/runs/run_%00x", "path"),
        ("/runs/run_%CE%A9", "run_id"),
        ("/runs/run_%00x/webhook-events/1/raw", "path"),
        ("/console/runs?status=%00", "status"),
        ("/console/runs?project=%00", "project"),
        ("/console/runs?before=%00", "before"),
        ("/console/runs?stuck=1&older_than=%00", "older_than"),
        ("/console/runs?brief=%00", "brief"),
        ("/console/runs?workflow=%CE%A9", "workflow"),
        ("/console/runs/run_%00x/actions/live", "path"),
        ("/console/runs/run_%00x", "path"),
        ("/console/runs/run_%00x/live", "path"),
        ("/console/runs/run_%CE%A9", None),
        ("/?sent=%00", "sent"),
        ("/console/login?next=%00", "next"),
        ("/webhooks/%00", "path"),
        ("/webhooks/%CE%A9", "provider"),
    ],
)
def test_query_strings_and_paths_never_get_a_500(base: str, path: str, field: str | None) -> None:
    if "webhooks" in path:
        response = httpx.post(f"{base}{path}", content=b"{}")
    else:
        response = httpx.get(f"{base}{path}", headers=AUTH)
    assert response.status_code < 500, (response.status_code, response.text)
    if field is not None:
        assert 400 <= response.status_code < 500, (response.status_code, response.text)
        if response.headers["content-type"].startswith("application/json"):
            assert response.json()["field"] == field, response.text
        else:
            assert field in response.text, response.text


@pytest.mark.parametrize(
    ("form", "field"),
    [
        ({"gate": "workflow", "decision": "approved", "approver": "a\x00b"}, "approver"),
        (
            {"gate": "workflow", "decision": "approved", "approver": "a", "comment": "\x00"},
            "comment",
        ),
        ({"gate": "work\x00flow", "decision": "approved", "approver": "a"}, "gate"),
        ({"gate": "workflow", "decision": "approved", "approver": "a", "next": "/\x00"}, "next"),
    ],
)
def test_console_forms_refuse_nul_naming_the_field(
    base: str, db: str, form: dict[str, str], field: str
) -> None:
    before = _counts(db)
    response = httpx.post(
        f"{base}/console/runs/{WAITING}/approvals",
        data=form,
        headers=AUTH,
    )
    assert 400 <= response.status_code < 500, (response.status_code, response.text)
    assert field in response.text
    login = httpx.post(f"{base}/console/login", data={"token": "\x00", "next": "/"})
    assert 400 <= login.status_code < 500, login.text
    assert _counts(db) == before


def test_non_latin1_names_are_stored_or_refused_never_a_500(base: str, db: str) -> None:
    approver = "Ωmega 漢字 \U0001f600"
    created = httpx.post(
        f"{base}/runs",
        json={"project": "p", "workflow": "ledger", "payload": {"名前": approver}},
        headers=AUTH,
    )
    assert created.status_code == 201, created.text
    assert created.json()["payload"] == {"名前": approver}
    _refused(httpx.post(f"{base}/runs", json={"project": "Ω"}, headers=AUTH), "project")
    _refused(
        httpx.post(f"{base}/runs", json={"project": "p", "workflow": "Ω"}, headers=AUTH),
        "workflow",
    )
    page = httpx.post(
        f"{base}/console/runs/{created.json()['run_id']}/approvals",
        data={"gate": "workflow", "decision": "approved", "approver": approver},
        headers=AUTH,
    )
    assert page.status_code == 409, page.text  # not waiting: refused, and no crash on the cookie
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("DELETE FROM runs WHERE run_id = %s", (created.json()["run_id"],))


@pytest.mark.parametrize(("case", "value"), UNHOLDABLE, ids=[c for c, _ in UNHOLDABLE])
def test_webhooks_with_unholdable_values_are_stored_raw_and_refused(
    base: str, db: str, case: str, value: str
) -> None:
    body = f'{{"data": {{"taskId": "task-x", "v": {value}}}}}'.encode()
    response = httpx.post(f"{base}/webhooks/kie", content=body, headers=JSON_TYPE)
    assert response.status_code == 400, response.text
    assert response.json()["field"].startswith("body"), response.text
    with psycopg.connect(db, row_factory=dict_row) as conn:
        row = conn.execute(
            "SELECT signature_status, raw_body, payload FROM webhook_events"
            " ORDER BY id DESC LIMIT 1"
        ).fetchone()
    assert row == {"signature_status": "invalid", "raw_body": body, "payload": None}


# --- webhook ingress limits ----------------------------------------------------------


def _upload_post(body: bytes, delivery: str, at: int | None = None) -> dict[str, str]:
    timestamp = str(at if at is not None else int(time.time()))
    signed = timestamp.encode() + b"." + body
    digest = hmac.new(UPLOAD_POST_SECRET.encode(), signed, hashlib.sha256).hexdigest()
    return {
        **JSON_TYPE,
        "X-Upload-Post-Timestamp": timestamp,
        "X-Upload-Post-Signature": f"sha256={digest}",
        "X-Upload-Post-Delivery": delivery,
    }


def test_a_replayed_signed_body_with_a_new_delivery_id_is_a_duplicate(base: str, db: str) -> None:
    body = json.dumps({"event": "upload_completed", "job_id": "job-replay"}).encode()
    headers = _upload_post(body, "delivery-a")
    first = httpx.post(f"{base}/webhooks/upload-post", content=body, headers=headers)
    assert first.status_code == 202 and first.json()["signature_status"] == "valid", first.text
    replay = httpx.post(
        f"{base}/webhooks/upload-post",
        content=body,
        headers={**headers, "X-Upload-Post-Delivery": "delivery-b"},
    )
    assert replay.status_code == 200 and replay.json() == {"status": "duplicate"}, replay.text
    with psycopg.connect(db, row_factory=dict_row) as conn:
        rows = conn.execute(
            "SELECT delivery_id FROM webhook_events WHERE payload ->> 'job_id' = 'job-replay'"
        ).fetchall()
    assert rows == [{"delivery_id": "delivery-a"}]


def test_a_body_over_the_stored_limit_is_413_and_stores_nothing(base: str, db: str) -> None:
    before = _counts(db)
    body = json.dumps({"data": {"taskId": "t", "pad": "x" * 9000}}).encode()
    response = httpx.post(f"{base}/webhooks/kie", content=body, headers=JSON_TYPE)
    assert response.status_code == 413, response.text
    assert response.json()["field"] == "body"
    assert _counts(db) == before


def test_a_forged_shotstack_callback_makes_no_request_to_shotstack(
    base: str, db: str, scripted_server: ScriptedServer
) -> None:
    scripted_server.reset()
    forged = json.dumps({"type": "edit", "id": "4fa3b2c1-0000-4000-8000-0000000fffff"})
    response = httpx.post(f"{base}/webhooks/shotstack", content=forged, headers=JSON_TYPE)
    assert response.status_code == 202 and response.json()["signature_status"] == "invalid"
    assert scripted_server.calls == []
    # A render a waiting run knows is still verified by fetching it.
    scripted_server.script(
        Reply(200, {"success": True, "response": {"id": RENDER_KNOWN, "status": "done"}})
    )
    known = json.dumps({"type": "edit", "id": RENDER_KNOWN, "status": "done"})
    verified = httpx.post(f"{base}/webhooks/shotstack", content=known, headers=JSON_TYPE)
    assert verified.json()["signature_status"] == "verified_by_fetch", verified.text
    assert [call.path for call in scripted_server.calls] == [f"/render/{RENDER_KNOWN}"]


def test_a_flood_of_deliveries_gets_429_with_retry_after(db: str, tmp_path: Path) -> None:
    process, base = start_api(db, tmp_path, webhook_rate=1, webhook_burst=5)
    try:
        before = _counts(db)["events"]
        answers = [
            httpx.post(f"{base}/webhooks/kie", json={"data": {"taskId": f"flood-{n}"}})
            for n in range(12)
        ]
        codes = [a.status_code for a in answers]
        assert codes[:5] == [202] * 5 and 429 in codes, codes
        limited = next(a for a in answers if a.status_code == 429)
        assert int(limited.headers["Retry-After"]) >= 1
        assert limited.json()["field"] == "provider"
        assert _counts(db)["events"] - before == codes.count(202)
        # Another provider has its own allowance.
        other = httpx.post(f"{base}/webhooks/upload-post", content=b'{"job_id": "j"}')
        assert other.status_code == 202, other.text
    finally:
        process.close()


# --- a workflow's declared input ------------------------------------------------------


@pytest.mark.parametrize("key", ["media", "script", "project", "jobs"])
def test_post_runs_refuses_keys_the_workflow_does_not_declare(base: str, db: str, key: str) -> None:
    before = _counts(db)
    response = httpx.post(
        f"{base}/runs", json={"project": "p", "payload": {"brief": "b", key: "x"}}, headers=AUTH
    )
    assert response.status_code == 422, response.text
    assert response.json()["field"] == f"payload.{key}"
    assert _counts(db) == before


def test_post_runs_takes_the_declared_input_and_any_input_without_a_schema(
    base: str, db: str
) -> None:
    declared = httpx.post(
        f"{base}/runs",
        json={"project": "p", "brief": "b", "payload": {"platforms": ["tiktok"]}},
        headers=AUTH,
    )
    assert declared.status_code == 201, declared.text
    assert declared.json()["payload"] == {"brief": "b", "platforms": ["tiktok"]}
    wrong_type = httpx.post(
        f"{base}/runs", json={"project": "p", "payload": {"platforms": "tiktok"}}, headers=AUTH
    )
    assert wrong_type.status_code == 422 and wrong_type.json()["field"] == "payload.platforms"
    free = httpx.post(
        f"{base}/runs",
        json={"project": "p", "workflow": "ledger", "payload": {"anything": 1}},
        headers=AUTH,
    )
    assert free.status_code == 201, free.text
    with psycopg.connect(db, autocommit=True) as conn:
        ids = (declared.json()["run_id"], free.json()["run_id"])
        conn.execute("DELETE FROM runs WHERE run_id = ANY(%s)", (list(ids),))


def test_cli_runs_create_refuses_undeclared_keys(db: str) -> None:
    before = _counts(db)
    result = orchestrator(db, "runs", "create", "--project", "p", "--payload", '{"script": "x"}')
    assert result.returncode == 2, result
    assert "script" in result.stderr and result.stderr.startswith("error: "), result.stderr
    bad = orchestrator(
        db, "runs", "create", "--project", "p", "--workflow", "ledger", "--payload", '{"n": NaN}'
    )
    assert bad.returncode == 2 and "n" in bad.stderr, bad
    assert _counts(db) == before


# --- logs ------------------------------------------------------------------------------


def test_provider_request_urls_never_reach_the_logs(scripted_server: ScriptedServer) -> None:
    scripted_server.reset()
    scripted_server.script(Reply(200, {"ok": True}))
    secret = "querykey-5e3f1d"
    program = (
        "import httpx\n"
        "from engine.observability.logs import configure\n"
        "configure('DEBUG', 'json', worker_id='w')\n"
        f"httpx.get({scripted_server.url + '/api/v1/jobs/recordInfo?taskId=t1&key=' + secret!r})\n"
        "import logging; logging.getLogger('probe').info('done', extra={'action': 'probe'})\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", program],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    assert '"action": "probe"' in result.stderr  # logging works: the silence is httpx's
    assert len(scripted_server.calls) == 1
    assert secret not in result.stderr and "recordInfo" not in result.stderr, result.stderr
