"""The bad-input battery: hostile API bodies, CLI arguments, approval rows and webhook
deliveries each get a clear, specific refusal and change nothing.

"Nothing" is checked, not assumed: the row count and checksum of every table
before and after each case. Run with `-s` for the tally of cases tried.
"""

import base64
import hashlib
import hmac
import json
import math
import string
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import sql
from psycopg.rows import dict_row

from engine.runtime.store import PROJECT_SLUG
from tests.conftest import migrated_database, orchestrator
from tests.helpers import TABLES, start_api
from tests.stack import KIE_SECRET, UPLOAD_POST_SECRET

TOKEN = "battery-token-for-the-tests-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
LIMIT = 65_536
TALLY: Counter[str] = Counter()
HYPOTHESIS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
METACHARACTERS = [
    "'; DROP TABLE runs; --",
    "$(rm -rf /)",
    "`id`",
    "a|b",
    "../../etc/passwd",
    "\x00",
    "p\nq",
    "Ω",
    "p" * 64,
    "",
    " p",
    "P",
]


@pytest.fixture(scope="module")
def db(admin_url: str) -> Iterator[str]:
    with migrated_database(admin_url, prefix="orch_battery") as url:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO runs (run_id, project, status, payload) VALUES "
                "('run_waitingworkflow', 'p', 'pending_workflow', '{}'), "
                "('run_alreadypublished', 'p', 'published', '{}'), "
                "('run_stillqueued', 'p', 'queued', '{}'), "
                "('run_approvedalready', 'p', 'pending_publish', '{}')"
            )
            conn.execute(
                "INSERT INTO hitl_approvals (run_id, gate) "
                "VALUES ('run_approvedalready', 'publish')"
            )
        yield url


@pytest.fixture(scope="module")
def api(db: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    process, base = start_api(
        db,
        tmp_path_factory.mktemp("battery"),
        api_token=TOKEN,
        # The wrong-token cases are hundreds of guesses from one client: here they must
        # all reach the check (tests/integration/test_access.py covers the limit itself).
        auth_failures=1_000_000,
        max_body_bytes=LIMIT,
        kie_webhook_secret=KIE_SECRET,
        upload_post_webhook_secret=UPLOAD_POST_SECRET,
    )
    yield base
    process.close()
    print(f"\nbad-input battery: {dict(TALLY)}; cases {sum(TALLY.values())}, rows changed 0")


def checksums(url: str) -> dict[str, Any]:
    with psycopg.connect(url, row_factory=dict_row) as conn:
        return {
            table: conn.execute(
                sql.SQL(
                    "SELECT count(*) AS n, md5(coalesce(string_agg(t::text, '|' "
                    "ORDER BY t::text), '')) AS sum FROM {} t"
                ).format(sql.Identifier(table))
            ).fetchone()
            for table in TABLES
        }


def _refused(response: httpx.Response) -> dict[str, Any]:
    assert 400 <= response.status_code < 500, (response.status_code, response.text)
    body: dict[str, Any] = response.json()
    assert isinstance(body.get("error"), str) and body["error"], body
    return body


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)
BAD_PROJECT = st.one_of(
    st.sampled_from(METACHARACTERS),
    st.text().filter(lambda t: not PROJECT_SLUG.match(t)),
    JSON.filter(lambda v: not isinstance(v, str)),
)
BAD_RUN_BODY = st.one_of(
    st.builds(
        lambda p, extra: {"project": p, **extra},
        BAD_PROJECT,
        st.dictionaries(st.sampled_from(["brief", "payload", "priority"]), JSON),
    ),
    st.dictionaries(st.text().filter(lambda k: k != "project"), JSON, max_size=4),
    st.builds(
        lambda v: {"project": "p", "payload": v}, JSON.filter(lambda v: not isinstance(v, dict))
    ),
    st.builds(
        lambda v: {"project": "p", "priority": v},
        JSON.filter(
            lambda v: not isinstance(v, int) or isinstance(v, bool) or not -1000 <= v <= 1000
        ),
    ),
    st.builds(
        lambda k: {"project": "p", k: 1},
        st.text(min_size=1).filter(
            lambda k: k not in {"project", "brief", "payload", "workflow", "priority"}
        ),
    ),
)


@HYPOTHESIS
@given(body=BAD_RUN_BODY)
def test_api_run_bodies(api: str, db: str, body: Any) -> None:
    before = checksums(db)
    body_json = _refused(httpx.post(f"{api}/runs", json=body, headers=AUTH))
    assert body_json.get("field"), body_json
    assert checksums(db) == before
    TALLY["api body"] += 1


@HYPOTHESIS
@given(raw=st.binary(max_size=200))
def test_api_raw_bytes(api: str, db: str, raw: bytes) -> None:
    before = checksums(db)
    headers = {**AUTH, "Content-Type": "application/json"}
    _refused(httpx.post(f"{api}/runs", content=raw, headers=headers))
    assert checksums(db) == before
    TALLY["api raw bytes"] += 1


@pytest.mark.parametrize(
    ("content", "status"),
    [
        (b'{"project": "p", "brief": "' + b"x" * (LIMIT + 1) + b'"}', 413),
        (b'{"project": "\xff\xfe"}', 400),
        (b'{"project": "p"', 422),
        (b"[]", 422),
    ],
    ids=["huge", "invalid-utf8", "truncated", "array"],
)
def test_api_hostile_bytes(api: str, db: str, content: bytes, status: int) -> None:
    before = checksums(db)
    response = httpx.post(
        f"{api}/runs", content=content, headers={**AUTH, "Content-Type": "application/json"}
    )
    assert response.status_code == status
    _refused(response)
    assert checksums(db) == before
    TALLY["api hostile bytes"] += 1


def test_metacharacters_in_a_brief_are_stored_verbatim(api: str, db: str) -> None:
    brief = "'; DROP TABLE runs; -- $(rm -rf /) `id` \\ %s %(x)s"
    created = httpx.post(f"{api}/runs", json={"project": "p", "brief": brief}, headers=AUTH)
    assert created.status_code == 201
    run = httpx.get(f"{api}/runs/{created.json()['run_id']}", headers=AUTH).json()["run"]
    assert run["payload"] == {"brief": brief}
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("DELETE FROM runs WHERE run_id = %s", (run["run_id"],))


@HYPOTHESIS
@given(token=st.one_of(st.text(), st.just(TOKEN + " "), st.just(TOKEN.upper())))
def test_api_wrong_tokens(api: str, db: str, token: str) -> None:
    before = checksums(db)
    try:
        response = httpx.post(
            f"{api}/runs", json={"project": "p"}, headers={"Authorization": f"Bearer {token}"}
        )
    except (httpx.LocalProtocolError, UnicodeEncodeError):
        TALLY["api token (unsendable)"] += 1  # the client itself refuses such a header
        return
    assert response.status_code == 401 and _refused(response)["field"] == "authorization"
    assert checksums(db) == before
    TALLY["api token"] += 1


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    project=st.sampled_from(METACHARACTERS[:-1])
    | st.text(alphabet=string.printable, max_size=20).filter(lambda t: not PROJECT_SLUG.match(t))
)
def test_cli_projects(db: str, project: str) -> None:
    if "\x00" in project:
        return  # no process can receive a NUL in its arguments
    before = checksums(db)
    result = orchestrator(db, "runs", "create", "--project", project)
    assert result.returncode == 2, result
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert checksums(db) == before
    TALLY["cli project"] += 1


@pytest.mark.parametrize(
    ("run_id", "gate", "message"),
    [
        ("run_missing", "workflow", "run run_missing does not exist (gate workflow)"),
        (
            "run_waitingworkflow",
            "publish",
            "run run_waitingworkflow is not waiting at gate publish (status is pending_workflow)",
        ),
        (
            "run_alreadypublished",
            "publish",
            "run run_alreadypublished is not waiting at gate publish (status is published)",
        ),
        (
            "run_stillqueued",
            "workflow",
            "run run_stillqueued is not waiting at gate workflow (status is queued)",
        ),
        (
            "run_approvedalready",
            "publish",
            "run run_approvedalready already has approval 1 (approved by an unnamed approver) "
            "waiting at gate publish",
        ),
    ],
    ids=["unknown-run", "wrong-gate", "terminal-run", "not-waiting", "duplicate"],
)
def test_approval_rows(db: str, run_id: str, gate: str, message: str) -> None:
    before = checksums(db)
    with (
        psycopg.connect(db, autocommit=True) as conn,
        pytest.raises(psycopg.errors.CheckViolation) as refused,
    ):
        conn.execute("INSERT INTO hitl_approvals (run_id, gate) VALUES (%s, %s)", (run_id, gate))
    assert refused.value.diag.message_primary == f"approval refused: {message}"
    assert checksums(db) == before
    TALLY["approval row"] += 1


def _kie_delivery(task: str, stamp: str, key: str) -> dict[str, Any]:
    digest = hmac.new(key.encode(), f"{task}.{stamp}".encode(), hashlib.sha256).digest()
    return {
        "content": json.dumps({"code": 200, "data": {"taskId": task}}).encode(),
        "headers": {
            "X-Webhook-Timestamp": stamp,
            "X-Webhook-Signature": base64.b64encode(digest).decode(),
        },
    }


@HYPOTHESIS
@given(
    key=st.text(min_size=1).filter(lambda k: k != KIE_SECRET),
    skew=st.one_of(st.just(0), st.integers(301, 10**8), st.integers(-(10**8), -301)),
)
def test_forged_or_stale_kie_deliveries(api: str, db: str, key: str, skew: int) -> None:
    # Stamps are whole seconds: round away from now, or a skew of 301 s could arrive as 300.
    stamp = str((math.ceil if skew > 0 else math.floor)(time.time()) + skew)
    signer = KIE_SECRET if skew else key  # a stale delivery is signed with the right key
    response = httpx.post(f"{api}/webhooks/kie", **_kie_delivery("task-x", stamp, signer))
    _assert_stored_as_untrusted(db, response)
    TALLY["webhook forged/stale"] += 1


@HYPOTHESIS
@given(raw=st.binary(max_size=100).filter(lambda b: not _is_json(b)))
def test_malformed_webhook_bodies(api: str, db: str, raw: bytes) -> None:
    before = checksums(db)
    response = httpx.post(f"{api}/webhooks/upload-post", content=raw)
    assert response.status_code == 400 and _refused(response)["field"] == "body"
    _assert_only_webhook_events_grew(db, before)
    TALLY["webhook malformed"] += 1


def test_replayed_delivery_is_deduped(api: str, db: str) -> None:
    body = json.dumps({"event": "upload_completed", "job_id": "j1"}).encode()
    stamp = str(int(time.time()))
    signature = hmac.new(
        UPLOAD_POST_SECRET.encode(), stamp.encode() + b"." + body, hashlib.sha256
    ).hexdigest()
    headers = {
        "X-Upload-Post-Delivery": "delivery-1",
        "X-Upload-Post-Timestamp": stamp,
        "X-Upload-Post-Signature": f"sha256={signature}",
    }
    first = httpx.post(f"{api}/webhooks/upload-post", content=body, headers=headers)
    assert first.status_code == 202 and first.json()["signature_status"] == "valid"
    before = checksums(db)
    for _ in range(3):
        replay = httpx.post(f"{api}/webhooks/upload-post", content=body, headers=headers)
        assert replay.status_code == 200 and replay.json() == {"status": "duplicate"}
        TALLY["webhook replay"] += 1
    assert checksums(db) == before


def _is_json(raw: bytes) -> bool:
    try:
        json.loads(raw)
    except ValueError:
        return False
    return True


def _assert_stored_as_untrusted(db: str, response: httpx.Response) -> None:
    assert response.status_code == 202, response.text
    assert response.json()["signature_status"] == "invalid"


def _assert_only_webhook_events_grew(db: str, before: dict[str, Any]) -> None:
    """A bad delivery is kept for inspection (webhook_events), and changes nothing else."""
    after = checksums(db)
    assert {t: v for t, v in after.items() if t != "webhook_events"} == {
        t: v for t, v in before.items() if t != "webhook_events"
    }
    assert after["webhook_events"]["n"] == before["webhook_events"]["n"] + 1
