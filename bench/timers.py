"""Timers: how late a durable sleep wakes. One daemon (concurrency 16) runs 100
runs of the tests' `sleeper` graph, each sleeping 3 s (`engine.sleep(until=...)`);
each run's result holds when its sleep was due and when it woke (the claim's
clock), and the lateness is the difference: the daemon's wake-up for its
earliest timer, the claim, and the queue behind the slots. Poll interval: the
default (1 s), which bounds the lateness of a timer this daemon did not learn of.

    python -m bench.timers [--runs 100] [--nap 3]
"""

import argparse
import json
import time
from datetime import datetime
from typing import Any

from psycopg.types.json import Jsonb

from bench.harness import connect, daemon, scratch_database, server_url, wait_for_daemons
from bench.harness import summary as percentiles


def measure(admin_url: str, runs: int, nap: float) -> dict[str, Any]:
    with scratch_database(admin_url) as url, connect(url) as conn:
        with daemon(url, "timers", concurrency=16):
            wait_for_daemons(conn, 1)
            conn.execute(
                "INSERT INTO runs (run_id, project, status, payload, workflow) "
                "SELECT 'run_nap' || i, 'bench', 'queued', %s, 'sleeper' "
                "FROM generate_series(1, %s) i",
                (Jsonb({"nap": nap}), runs),
            )
            deadline = time.monotonic() + 120 + nap
            while True:
                row = conn.execute(
                    "SELECT count(*) FILTER (WHERE status = 'published') AS done, "
                    "count(*) FILTER (WHERE status = 'failed') AS failed FROM runs"
                ).fetchone()
                assert row is not None and not row["failed"], row
                if row["done"] == runs:
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"not all {runs} sleeping runs finished")
                time.sleep(0.05)
        results = [r["result"] for r in conn.execute("SELECT result FROM runs").fetchall()]
    late = [
        (datetime.fromisoformat(r["woke"]) - datetime.fromisoformat(r["due"])).total_seconds()
        * 1000
        for r in results
    ]
    return {
        "timer_lateness_ms": {
            key: value for key, value in percentiles(late).items() if key in ("p50", "p99")
        },
        "timer_lateness_detail": {**percentiles(late), "runs": runs, "nap_s": nap},
    }


def run(admin_url: str, *, quick: bool) -> dict[str, Any]:
    return measure(admin_url, runs=100, nap=3.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--nap", type=float, default=3.0)
    args = parser.parse_args()
    with server_url() as admin_url:
        print(json.dumps(measure(admin_url, args.runs, args.nap), indent=2))


if __name__ == "__main__":
    main()
