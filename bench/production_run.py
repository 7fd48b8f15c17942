"""Wall time of one production-graph run with offline personas, gates approved at once.

The providers are the sandbox with jobs that finish at once (`job_latency` 0),
their webhooks signed and received by the API, so the figure is the engine's
and the HTTP round trips' cost, not a provider's. Each run is created, its
`workflow` and `publish` gates approved with plain SQL the moment it waits
there, and timed from the run's INSERT to `published` (the run's
`updated_at`). Runs go one at a time so that they don't overlap.

    python -m bench.production_run [--runs 50]
"""

import argparse
import json

from bench.harness import connect, daemon, sandbox_providers, scratch_database, summary, wait_until

WAITING = "SELECT status FROM runs WHERE run_id = %s AND status = %s"


def measure(url: str, runs: int) -> dict[str, float]:
    samples = []
    with (
        connect(url) as conn,
        sandbox_providers(url, job_latency=0) as settings,
        daemon(url, concurrency=4, **settings),
    ):
        for i in range(runs):
            run_id = f"run_prod{i:08d}"
            conn.execute(
                "INSERT INTO runs (run_id, project, status, payload) "
                "VALUES (%s, 'bench', 'queued', %s)",
                (run_id, json.dumps({"brief": f"benchmark video {i}"})),
            )
            for gate in ("workflow", "publish"):
                wait_until(conn, WAITING, (run_id, f"pending_{gate}"), within=30)
                conn.execute(
                    "INSERT INTO hitl_approvals (run_id, gate) VALUES (%s, %s)", (run_id, gate)
                )
            row = wait_until(
                conn,
                "SELECT extract(epoch FROM updated_at - created_at) * 1000 AS ms "
                "FROM runs WHERE run_id = %s AND status = 'published'",
                (run_id,),
                within=30,
            )
            samples.append(float(row["ms"]))
    return summary(samples[1:])  # the first run pays for the daemon's warm-up


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args()
    with scratch_database() as url:
        print(json.dumps({"production_run_ms": measure(url, args.runs + 1)}, indent=2))


if __name__ == "__main__":
    main()
