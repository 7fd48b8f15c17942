"""Gates as structured requests (Agent Inbox's vocabulary) from the whole system: the
publish gate asks with everything an approver needs, and each answer does what it says."""

from pathlib import Path
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import DictRow

from tests.e2e.test_e2e_providers import STATUS, _approve, _status_is
from tests.helpers import wait_for
from tests.stack import Stack, stack

Conn = AsyncConnection[DictRow]


async def _request(s: Stack, run_id: str) -> dict[str, Any]:
    response = await s.http.get(f"{s.api}/inbox")
    assert response.status_code == 200, response.text
    found = [r for r in response.json()["requests"] if r["run_id"] == run_id]
    assert len(found) == 1, response.json()
    request: dict[str, Any] = found[0]
    return request


async def test_the_publish_gate_asks_with_the_render_script_images_and_platforms(
    db_url: str, conn: Conn, tmp_path: Path
) -> None:
    async with stack(db_url, tmp_path) as s:
        s.daemon("d")
        response = await s.http.post(
            f"{s.api}/runs",
            json={"project": "cats", "brief": "boxes", "payload": {"platforms": ["reddit", "x"]}},
        )
        assert response.status_code == 201, response.text
        run_id = response.json()["run_id"]

        await wait_for(conn, STATUS, (run_id,), until=_status_is("pending_workflow"), within=60)
        proposal = await _request(s, run_id)
        assert proposal["action_request"]["action"] == "workflow"
        assert proposal["action_request"]["args"]["proposal"][-1] == "publisher"
        assert proposal["config"] == {
            "allow_accept": True,
            "allow_edit": True,
            "allow_respond": True,
            "allow_ignore": True,
        }
        assert "workflow" in proposal["edit_schema"]["properties"]

        await _approve(s, conn, run_id, "workflow")
        await wait_for(conn, STATUS, (run_id,), until=_status_is("pending_publish"), within=60)
        publish = await _request(s, run_id)
        args = publish["action_request"]["args"]
        assert publish["title"] == "Approve publishing" and publish["description"]
        assert args["render"]["url"].endswith(".mp4")
        assert args["script"], args
        assert args["images"] and all(url.startswith("http") for url in args["images"])
        assert args["platforms"] == ["reddit", "x"]
        assert "publish_at" in publish["edit_schema"]["properties"]
        assert publish["pause_id"] is not None

        # respond: a rejection with a comment the graph receives; Brendan proposes again.
        answered = await s.http.post(
            f"{s.api}/runs/{run_id}/approvals",
            json={
                "gate": "publish",
                "decision": "rejected",
                "comment": "shorter, please",
                "pause_id": publish["pause_id"],
            },
        )
        assert answered.status_code == 201, answered.text
        await wait_for(conn, STATUS, (run_id,), until=_status_is("pending_workflow"), within=60)
        again = await _request(s, run_id)
        assert again["action_request"]["action"] == "workflow"
