"""Production runs published per minute through the sandbox providers, 1 and 4 daemons.

The whole system runs as processes: the sandbox (jobs take 0.2 s, webhooks
signed), the API receiving them, and K daemons at concurrency 8. The benchmark
approves every gate with plain SQL as soon as a run waits there, and times
from creating N runs to the last one published.

    python -m bench.sandbox_throughput [--runs 60]
"""

import argparse
import json
import time
from contextlib import ExitStack

from bench.harness import connect, daemon, sandbox_providers, scratch_database

APPROVE_WAITING = """
INSERT INTO hitl_approvals (run_id, gate, approver)
SELECT run_id, substr(status, 9), 'bench' FROM runs r
WHERE status LIKE 'pending\\_%' AND NOT EXISTS (
    SELECT 1 FROM hitl_approvals a WHERE a.run_id = r.run_id AND a.consumed_at IS NULL)
"""


def measure(url: str, runs: int, daemons: int, settings: dict[str, object]) -> dict[str, float]:
    with connect(url) as conn, ExitStack() as stack:
        conn.execute("TRUNCATE runs, webhook_events CASCADE")
        for i in range(daemons):
            stack.enter_context(daemon(url, f"bench-{i}", concurrency=8, **settings))
        time.sleep(2)  # let the daemons import and connect before the clock starts
        started = time.monotonic()
        conn.execute(
            "INSERT INTO runs (run_id, project, status, payload) "
            "SELECT %s || i, 'bench', 'queued', '{\"brief\": \"benchmark\"}' "
            "FROM generate_series(1, %s) i",
            (f"run_tp{daemons}_", runs),  # fresh ids: LangGraph keeps threads by run_id
        )
        deadline = started + 600
        while time.monotonic() < deadline:
            conn.execute(APPROVE_WAITING)
            row = conn.execute(
                "SELECT count(*) FILTER (WHERE status = 'published') AS done, "
                "count(*) FILTER (WHERE status = 'failed') AS failed FROM runs"
            ).fetchone()
            assert row is not None
            if row["failed"]:
                raise SystemExit(f"{row['failed']} runs failed")
            if row["done"] == runs:
                break
            time.sleep(0.01)
        elapsed = time.monotonic() - started
    return {
        "daemons": daemons,
        "runs": runs,
        "seconds": round(elapsed, 2),
        "runs_per_minute": round(runs / elapsed * 60, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=60)
    args = parser.parse_args()
    with scratch_database() as url, sandbox_providers(url) as settings:
        results = [measure(url, args.runs, k, settings) for k in (1, 4)]
    print(json.dumps({"sandbox_throughput": results}, indent=2))


if __name__ == "__main__":
    main()
