"""From an approval INSERT's commit to the first node after the gate starting.

Runs of the ledger graph wait at the `review` gate; each approval is a plain
SQL insert, and the resumed node `n4` stamps `clock_timestamp()` as its first
act. The approval's `created_at` is its transaction's start, so each sample
slightly overstates the latency. Compares LISTEN/NOTIFY with polling only.

    python -m bench.approval_latency [--runs 200]
"""

import argparse
import json
import random
import time

from bench.harness import connect, daemon, scratch_database, summary, wait_until


def measure(url: str, runs: int, arrival_spread: float, **settings: object) -> dict[str, float]:
    samples = []
    with connect(url) as conn, daemon(url, concurrency=8, **settings):
        conn.execute("TRUNCATE runs, node_ledger CASCADE")
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
            within=120,
        )
        for i in range(1, runs + 1):
            run_id = f"run_lat{i}"
            # Approvals arrive at random moments of an idle daemon's poll cycle.
            time.sleep(random.uniform(0, arrival_spread))
            conn.execute(
                "INSERT INTO hitl_approvals (run_id, gate) VALUES (%s, 'review')", (run_id,)
            )
            row = wait_until(
                conn,
                "SELECT extract(epoch FROM l.executed_at - a.created_at) * 1000 AS ms "
                "FROM node_ledger l JOIN hitl_approvals a USING (run_id) "
                "WHERE l.run_id = %s AND l.node = 'n4'",
                (run_id,),
                within=30,
            )
            samples.append(float(row["ms"]))
            wait_until(
                conn,
                "SELECT 1 FROM runs WHERE run_id = %s AND status = 'published'",
                (run_id,),
                within=30,
            )
    return summary(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    with scratch_database() as url:
        notify = measure(url, args.runs, 0.01, listen=True)
        poll = measure(url, max(20, args.runs // 10), 1.0, listen=False, poll_interval=1.0)
    print(json.dumps({"listen_notify_ms": notify, "poll_only_ms": poll}, indent=2))


if __name__ == "__main__":
    main()
