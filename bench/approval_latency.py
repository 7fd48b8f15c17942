"""From an approval INSERT's commit to the first node after the gate starting.

Runs of the ledger graph wait at the `review` gate; each approval is a plain
SQL insert, and the resumed node `n4` stamps `clock_timestamp()` as its first
act. The approval's `created_at` is its transaction's start, so each sample
slightly overstates the latency. Compares LISTEN/NOTIFY with polling only: two
daemons (subprocesses, concurrency 8), each on its own scratch database, and
the approvals alternate between them in blocks so drift hits both alike.

    python -m bench.approval_latency [--runs 500] [--poll-runs 30]
"""

import argparse
import json
import random
import time
from contextlib import ExitStack
from typing import Any

import psycopg
from psycopg.rows import DictRow

from bench.harness import connect, daemon, scratch_database, server_url, summary, wait_until

Connection = psycopg.Connection[DictRow]
BLOCKS = 10


def _runs_at_gate(conn: Connection, runs: int) -> list[str]:
    conn.execute(
        "INSERT INTO runs (run_id, project, status, payload, workflow) "
        "SELECT 'run_lat' || i, 'bench', 'queued', '{}', 'ledger' "
        "FROM generate_series(1, %s) i",
        (runs,),
    )
    wait_until(
        conn,
        "SELECT 1 WHERE NOT EXISTS (SELECT 1 FROM runs WHERE status <> 'pending_review')",
        None,
        within=300,
    )
    return [f"run_lat{i}" for i in range(1, runs + 1)]


def _approve(conn: Connection, run_id: str, arrival_spread: float) -> float:
    """Approve `run_id` at a random moment of the daemon's cycle; milliseconds until n4."""
    time.sleep(random.uniform(0, arrival_spread))
    conn.execute("INSERT INTO hitl_approvals (run_id, gate) VALUES (%s, 'review')", (run_id,))
    row = wait_until(
        conn,
        "SELECT extract(epoch FROM l.executed_at - a.created_at) * 1000 AS ms "
        "FROM node_ledger l JOIN hitl_approvals a USING (run_id) "
        "WHERE l.run_id = %s AND l.node = 'n4'",
        (run_id,),
        within=30,
    )
    wait_until(conn, "SELECT 1 FROM runs WHERE run_id = %s AND status = 'published'", (run_id,), 30)
    return float(row["ms"])


def measure(admin_url: str, runs: int, poll_runs: int) -> dict[str, Any]:
    """`runs` approvals with notifications, `poll_runs` with polling only (1 s)."""
    samples: dict[str, list[float]] = {"notify": [], "poll": []}
    with ExitStack() as stack:
        notify_url = stack.enter_context(scratch_database(admin_url))
        poll_url = stack.enter_context(scratch_database(admin_url))
        notify, poll = (
            stack.enter_context(connect(notify_url)),
            stack.enter_context(connect(poll_url)),
        )
        stack.enter_context(daemon(notify_url, "latency-notify", concurrency=8, listen=True))
        stack.enter_context(
            daemon(poll_url, "latency-poll", concurrency=8, listen=False, poll_interval=1.0)
        )
        pending = {"notify": _runs_at_gate(notify, runs), "poll": _runs_at_gate(poll, poll_runs)}
        for block in range(BLOCKS):
            for run_id in pending["notify"][block::BLOCKS]:
                samples["notify"].append(_approve(notify, run_id, 0.01))
            for run_id in pending["poll"][block::BLOCKS]:
                samples["poll"].append(_approve(poll, run_id, 1.0))
    return {
        "listen_notify_ms": summary(samples["notify"]),
        "poll_only_ms": summary(samples["poll"]),
    }


def run(admin_url: str, *, quick: bool) -> dict[str, Any]:
    result = measure(admin_url, 150 if quick else 600, 10 if quick else 30)
    notify = result["listen_notify_ms"]
    return {
        "approval_latency_ms": {
            "p50": notify["p50"],
            "p95": notify["p95"],
            "p99": notify["p99"],
            "poll_only_p50": result["poll_only_ms"]["p50"],
        },
        "approval_latency_detail": {**result, "poll_interval_s": 1.0, "daemon": "subprocess"},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=500)
    parser.add_argument("--poll-runs", type=int, default=30)
    args = parser.parse_args()
    with server_url() as admin_url:
        print(json.dumps(measure(admin_url, args.runs, args.poll_runs), indent=2))


if __name__ == "__main__":
    main()
