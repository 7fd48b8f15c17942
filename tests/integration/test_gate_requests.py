"""`GET /inbox`: each run at a gate as Agent Inbox's structured request, from its gate spec."""

import httpx

from tests.integration.test_console import PROPOSAL, Conn, client, text, waiting

__all__ = ["client"]  # the fixture, shared with the console tests


async def test_a_declared_gate_gives_its_description_answers_and_edit_schema(
    client: httpx.AsyncClient, conn: Conn
) -> None:
    run_id = await waiting(conn, "workflow", proposal=PROPOSAL)
    response = await client.get("/inbox")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["total"] == 1
    (request,) = body["requests"]
    assert request["run_id"] == run_id and request["gate"] == "workflow"
    assert request["action_request"] == {"action": "workflow", "args": {"proposal": PROPOSAL}}
    assert request["title"] == "Approve the workflow" and "Brendan" in request["description"]
    assert request["config"]["allow_edit"] is True
    assert request["edit_schema"]["properties"]["workflow"]["type"] == "array"


async def test_a_gate_no_workflow_declares_takes_no_edit(
    client: httpx.AsyncClient, conn: Conn
) -> None:
    await waiting(conn, "unheard_of", question="anything?")
    (request,) = (await client.get("/inbox")).json()["requests"]
    assert request["gate"] == "unheard_of" and request["title"] is None
    assert request["config"] == {
        "allow_accept": True,
        "allow_edit": False,
        "allow_respond": True,
        "allow_ignore": True,
    }
    assert request["edit_schema"] is None
    assert request["action_request"]["args"] == {"question": "anything?"}


async def test_the_inbox_pages_longest_waiting_first_and_refuses_a_bad_limit(
    client: httpx.AsyncClient, conn: Conn
) -> None:
    first = await waiting(conn, "workflow", proposal=PROPOSAL)
    await waiting(conn, "publish", render={})
    body = (await client.get("/inbox", params={"limit": 1})).json()
    assert body["total"] == 2 and [r["run_id"] for r in body["requests"]] == [first]
    refused = await client.get("/inbox", params={"limit": 0})
    assert refused.status_code == 422 and "limit" in refused.text


async def test_the_card_says_which_answers_the_gate_takes_and_shows_the_images(
    client: httpx.AsyncClient, conn: Conn
) -> None:
    images = ["http://127.0.0.1:9/_sandbox/files/a.png", "http://127.0.0.1:9/_sandbox/files/b.png"]
    await waiting(conn, "publish", render={}, script="Cats love boxes.", images=images)
    page = (await client.get("/")).text
    assert "Answers: approve, edit, respond (reject with a comment" in text(page)
    assert page.count('<img class="preview"') == 2
    assert "Cats love boxes." in text(page) and "The images in it" in text(page)


async def test_the_reconcile_gate_is_declared_so_its_status_is_one_to_filter_by(
    client: httpx.AsyncClient, conn: Conn
) -> None:
    run_id = await waiting(conn, "reconcile", request_id="req-1", reason="upload-post said 503")
    listed = await client.get("/runs", params={"status": "pending_reconcile"})
    assert listed.status_code == 200, listed.text
    assert [run["run_id"] for run in listed.json()] == [run_id]
    (request,) = (await client.get("/inbox")).json()["requests"]
    assert request["title"] == "Did the post go out?"
