"""Reference-graph runs per second, and daemon CPU seconds per run.

Daemons run as subprocesses at concurrency 1, 4, 16 and 64, then two at 16.
Each run pauses at its gate and is approved at once by a bench-only trigger
(`harness.AUTO_APPROVE`), so nothing waits for a client. A configuration is
timed from inserting its runs in one statement to the last one `published`,
after the daemons are listening and a warm-up batch has gone through. Each
configuration gets a fresh database; the configurations take turns over
`rounds` so that drift hits them alike.

    python -m bench.throughput [--runs 300] [--rounds 2]
"""

import argparse
import json
import time
from contextlib import ExitStack
from typing import Any

from bench.harness import (
    AUTO_APPROVE,
    connect,
    cpu_seconds,
    daemon,
    run_batch,
    scratch_database,
    server_url,
    wait_for_daemons,
)

# (daemons, concurrency each)
CONFIGS = ((1, 1), (1, 4), (1, 16), (1, 64), (2, 16))


def label(daemons: int, concurrency: int) -> str:
    return str(concurrency) if daemons == 1 else f"{daemons}x{concurrency}"


def measure_once(admin_url: str, daemons: int, concurrency: int, runs: int) -> tuple[float, float]:
    """Seconds for `runs` runs, and the daemons' CPU seconds meanwhile."""
    with ExitStack() as stack:
        url = stack.enter_context(scratch_database(admin_url))
        conn = stack.enter_context(connect(url))
        conn.execute(AUTO_APPROVE)
        processes = [
            stack.enter_context(daemon(url, f"tp-{i}", concurrency=concurrency))
            for i in range(daemons)
        ]
        wait_for_daemons(conn, daemons)
        run_batch(conn, "run_warm_", 2 * daemons * concurrency)
        cpu_before, started = cpu_seconds(processes), time.monotonic()
        run_batch(conn, "run_tp_", runs)
        return time.monotonic() - started, cpu_seconds(processes) - cpu_before


def measure(admin_url: str, runs: int, rounds: int) -> dict[str, Any]:
    totals = {config: [0.0, 0.0, 0] for config in CONFIGS}
    for round_ in range(rounds):
        shift = round_ % len(CONFIGS)
        for config in CONFIGS[shift:] + CONFIGS[:shift]:
            seconds, cpu = measure_once(admin_url, *config, runs)
            totals[config][0] += seconds
            totals[config][1] += cpu
            totals[config][2] += runs
    per_s = {label(*c): round(n / s, 1) for c, (s, _, n) in totals.items()}
    cpu_ms = {label(*c): round(cpu / n * 1000, 2) for c, (_, cpu, n) in totals.items()}
    return {
        "throughput_runs_per_s": per_s,
        "daemon_cpu_ms_per_run": cpu_ms,
        "throughput_scaling_16_vs_1": round(per_s["16"] / per_s["1"], 2),
        "throughput_runs_per_config": runs * rounds,
    }


def run(admin_url: str, *, quick: bool) -> dict[str, Any]:
    return measure(admin_url, runs=100 if quick else 300, rounds=1 if quick else 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    with server_url() as admin_url:
        print(json.dumps(measure(admin_url, args.runs, args.rounds), indent=2))


if __name__ == "__main__":
    main()
