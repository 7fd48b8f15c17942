import json
from pathlib import Path

from tests.helpers import wait_for
from tests.stack import stack

STATUS = "SELECT status FROM runs WHERE run_id = %s"


async def test_dump(db_url, conn, tmp_path: Path) -> None:
    out = {}
    async with stack(db_url, tmp_path) as s:
        s.daemon("w1")
        r = await s.http.post(
            f"{s.api}/runs", json={"project": "cats", "brief": "Why cats sit in boxes"}
        )
        run_id = r.json()["run_id"]
        await wait_for(
            conn,
            STATUS,
            (run_id,),
            until=lambda rows: rows[0]["status"] == "pending_workflow",
            within=60,
        )
        out["waiting_workflow"] = (
            await (await conn.execute("select waiting_for from runs")).fetchone()
        )["waiting_for"]
        await s.http.post(
            f"{s.api}/runs/{run_id}/approvals",
            json={"gate": "workflow", "decision": "rejected", "comment": "skip media"},
        )
        await wait_for(
            conn,
            STATUS,
            (run_id,),
            until=lambda rows: rows[0]["status"] == "pending_workflow" and True,
            within=60,
        )

        await wait_for(
            conn, "select 1 from hitl_approvals where consumed_at is not null", until=bool
        )
        await wait_for(
            conn,
            STATUS,
            (run_id,),
            until=lambda rows: rows[0]["status"] == "pending_workflow",
            within=60,
        )
        await s.http.post(f"{s.api}/runs/{run_id}/approvals", json={"gate": "workflow"})
        await wait_for(
            conn,
            STATUS,
            (run_id,),
            until=lambda rows: rows[0]["status"] == "pending_publish",
            within=60,
        )
        out["waiting_publish"] = (
            await (await conn.execute("select waiting_for from runs")).fetchone()
        )["waiting_for"]
        await s.http.post(f"{s.api}/runs/{run_id}/approvals", json={"gate": "publish"})
        await wait_for(
            conn, STATUS, (run_id,), until=lambda rows: rows[0]["status"] == "published", within=60
        )
        out["show"] = (await s.http.get(f"{s.api}/runs/{run_id}")).json()
        out["checkpoints"] = [
            dict(r)
            for r in await (
                await conn.execute(
                    "select checkpoint_id, metadata, checkpoint->>'ts' ts, checkpoint->'updated_channels' upd, checkpoint->'versions_seen' seen, (select array_agg(channel) from checkpoint_writes w where w.thread_id=c.thread_id and w.checkpoint_id=c.checkpoint_id) wr from checkpoints c where thread_id=%s order by checkpoint_id",
                    (run_id,),
                )
            ).fetchall()
        ]
        out["writes"] = [
            dict(r)
            for r in await (
                await conn.execute(
                    "select checkpoint_id, task_id, task_path, idx, channel, type from checkpoint_writes where thread_id=%s order by checkpoint_id",
                    (run_id,),
                )
            ).fetchall()
        ]
        out["approvals"] = [
            dict(r) for r in await (await conn.execute("select * from hitl_approvals")).fetchall()
        ]
        out["events"] = [
            dict(r)
            for r in await (
                await conn.execute(
                    "select id, provider, signature_status, received_at, processed_at, job_id, run_id, delivery_id, payload from webhook_events"
                )
            ).fetchall()
        ]
    Path("/tmp/dump.json").write_text(json.dumps(out, default=str, indent=1))
