"""Recovery: SIGKILL a daemon holding 50 runs mid-graph; another resumes them all.

The victim (a subprocess, concurrency 64) claims 50 reference runs whose nodes
sleep `delay` seconds, and is killed once every run has finished `n1` (so each
is in `n2`, with a checkpoint). A rescuer daemon, started once the victim holds
every run and listening before the kill (`delay` is long enough to cover its
start-up), can claim a run only once its lease has expired, so the figure is
dominated by `lease_ttl` plus the rescuer's poll interval (no NOTIFY marks a
lease's expiry). Reported: seconds from the kill until the rescuer holds all
50 (`recovery_s`), until all are published (approved at the gate by the bench
trigger), and how many runs were lost (not published within a minute).

    python -m bench.recovery [--runs 50] [--lease-ttl 2] [--poll 0.5]
"""

import argparse
import json
import time
from typing import Any

from bench.harness import (
    AUTO_APPROVE,
    connect,
    daemon,
    scratch_database,
    server_url,
    wait_for_daemons,
    wait_until,
)
from bench.reference import NAME


def measure(
    admin_url: str, runs: int = 50, lease_ttl: float = 2.0, poll: float = 0.5, delay: float = 5.0
) -> dict[str, Any]:
    settings = {"concurrency": 64, "lease_ttl": lease_ttl, "poll_interval": poll}
    with scratch_database(admin_url) as url, connect(url) as conn:
        conn.execute(AUTO_APPROVE)
        with daemon(url, "victim", **settings) as victim:
            wait_for_daemons(conn, 1)
            conn.execute(
                "INSERT INTO runs (run_id, project, status, payload, workflow) "
                "SELECT 'run_rec' || i, 'bench', 'queued', jsonb_build_object('delay', %s::float),"
                " %s FROM generate_series(1, %s) i",
                (delay, NAME, runs),
            )
            wait_until(
                conn,
                "SELECT 1 FROM runs WHERE lease_owner = 'victim' HAVING count(*) = %s",
                (runs,),
                within=60,
            )
            with daemon(url, "rescuer", **settings):
                wait_for_daemons(conn, 2)
                # Every run past n1 (its checkpoint says so) and in n2, held by the victim.
                wait_until(
                    conn,
                    "SELECT 1 FROM runs r JOIN orchestration_checkpoints o USING (run_id) "
                    "WHERE r.lease_owner = 'victim' AND o.state -> 'values' -> 'visited' ? 'n1' "
                    "HAVING count(*) = %s",
                    (runs,),
                    within=60,
                )
                victim.kill()
                victim.wait()
                killed = time.monotonic()
                wait_until(
                    conn,
                    "SELECT 1 FROM runs WHERE lease_epoch >= 2 HAVING count(*) = %s",
                    (runs,),
                    within=60,
                )
                resumed = time.monotonic() - killed
                try:
                    wait_until(
                        conn,
                        "SELECT 1 FROM runs WHERE status = 'published' HAVING count(*) = %s",
                        (runs,),
                        within=60,
                    )
                except TimeoutError:
                    pass
                finished = time.monotonic() - killed
                row = conn.execute(
                    "SELECT count(*) FILTER (WHERE status = 'published') AS published FROM runs"
                ).fetchone()
                assert row is not None
    return {
        "recovery_s": round(resumed, 2),
        "recovery_all_published_s": round(finished, 2),
        "runs_lost": runs - int(row["published"]),
        "recovery_settings": {
            "runs": runs,
            "lease_ttl_s": lease_ttl,
            "rescuer_poll_interval_s": poll,
            "node_delay_s": delay,
        },
    }


def run(admin_url: str, *, quick: bool) -> dict[str, Any]:
    return measure(admin_url)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--lease-ttl", type=float, default=2.0)
    parser.add_argument("--poll", type=float, default=0.5)
    args = parser.parse_args()
    with server_url() as admin_url:
        print(json.dumps(measure(admin_url, args.runs, args.lease_ttl, args.poll), indent=2))


if __name__ == "__main__":
    main()
