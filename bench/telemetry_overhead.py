"""What telemetry costs per run: the reference graph through an in-process daemon,
telemetry on vs off, interleaved.

Two `engine.runtime.daemon.Daemon`s share one event loop, pool settings and database:
one with `engine.observability.telemetry.setup()` as production has it with an OTLP endpoint
(traces through a `BatchSpanProcessor` and the OTLP/HTTP exporter, metrics for
Prometheus and OTLP), posting to a local sink that answers 200; one with
`DISABLED`. Each runs the same graph under its own workflow name, so each
claims only its own runs. A run is timed from its `INSERT` through the claim,
`n1 → n2 → review`, `pending_review` committed, the approval `INSERT`, the
second claim and the resume, to `published` committed (learnt from the
executor's log records, so nothing polls). Rounds alternate which mode goes
first; the difference is judged against the spread of the per-round paired
differences, in wall time and in this process's CPU time. With telemetry off
only its hooks remain on the path (a flag checked per claim, a no-op context
per execution): they are timed on their own and set against that spread.

    python -m bench.telemetry_overhead [--rounds 20] [--per-round 10]
"""

import argparse
import asyncio
import json
import logging
import statistics
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from psycopg import AsyncConnection
from pydantic import SecretStr

from bench import reference
from bench.harness import scratch_database, summary
from bench.overhead import Commits
from engine.cli import run_async
from engine.db.connections import open_pool
from engine.observability.telemetry import DISABLED, Telemetry, setup
from engine.runtime.daemon import Daemon
from engine.runtime.store import new_run_id
from engine.runtime.tracing import execution
from engine.runtime.workflow import Workflow
from engine.settings import Settings

RunOnce = Callable[[], Awaitable[tuple[float, float]]]  # wall ms, CPU ms


class _Sink(BaseHTTPRequestHandler):
    """An OTLP/HTTP collector that accepts everything and keeps nothing."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def otlp_sink() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@asynccontextmanager
async def runs_with(
    url: str, telemetry: Telemetry, workflow: str, commits: Commits
) -> AsyncIterator[RunOnce]:
    settings = Settings(database_url=SecretStr(url), concurrency=8, log_level="WARNING")
    graph = reference.reference_workflow().graph
    workflows = {workflow: Workflow(workflow, "bench-1", graph)}
    stop = asyncio.Event()
    client = await AsyncConnection.connect(url, autocommit=True)

    async def run_once() -> float:
        run_id = new_run_id()
        paused = commits.expect(run_id, "run_paused")
        finished = commits.expect(run_id, "run_finished")
        started, cpu = time.perf_counter(), time.process_time()
        await client.execute(
            "INSERT INTO runs (run_id, project, status, payload, workflow) "
            "VALUES (%s, 'bench', 'queued', '{}', %s)",
            (run_id, workflow),
        )
        await asyncio.wait_for(paused, 30)
        await client.execute(
            "INSERT INTO hitl_approvals (run_id, gate, approver) VALUES (%s, 'review', 'bench')",
            (run_id,),
        )
        await asyncio.wait_for(finished, 30)
        return (time.perf_counter() - started) * 1000, (time.process_time() - cpu) * 1000

    async with client, open_pool(url, settings) as pool, asyncio.TaskGroup() as tasks:
        tasks.create_task(Daemon(url, pool, settings, workflows, telemetry).serve(stop))
        try:
            yield run_once
        finally:
            stop.set()


async def measure(url: str, rounds: int, per_round: int) -> dict[str, Any]:
    commits = Commits()
    executor_log = logging.getLogger("engine.runtime.executor")
    executor_log.addHandler(commits)
    executor_log.setLevel(logging.INFO)
    # Each daemon sees the other's runs as foreign and says so: expected here.
    logging.getLogger("engine.runtime.daemon").setLevel(logging.ERROR)
    wall: dict[str, list[float]] = {"on": [], "off": []}
    cpu: dict[str, list[float]] = {"on": [], "off": []}
    wall_medians: dict[str, list[float]] = {"on": [], "off": []}
    cpu_medians: dict[str, list[float]] = {"on": [], "off": []}
    with otlp_sink() as collector:
        telemetry = setup(Settings(otlp_endpoint=collector, worker_id="bench"))
        try:
            async with AsyncExitStack() as stack:
                modes = {
                    "on": await stack.enter_async_context(
                        runs_with(url, telemetry, "bench_on", commits)
                    ),
                    "off": await stack.enter_async_context(
                        runs_with(url, DISABLED, "bench_off", commits)
                    ),
                }
                for run_once in modes.values():  # warm-up: imports, prepared statements
                    for _ in range(5):
                        await run_once()
                for round_ in range(rounds):
                    order = ["on", "off"] if round_ % 2 == 0 else ["off", "on"]
                    for mode in order:
                        taken = [await modes[mode]() for _ in range(per_round)]
                        wall[mode] += [ms for ms, _ in taken]
                        cpu[mode] += [ms for _, ms in taken]
                        wall_medians[mode].append(statistics.median(ms for ms, _ in taken))
                        cpu_medians[mode].append(statistics.median(ms for _, ms in taken))
        finally:
            telemetry.close()
            executor_log.removeHandler(commits)
    on_vs_off = {
        "wall": _verdict(wall, wall_medians),
        # This process's CPU (the daemons, the client, the exporter's thread; not
        # PostgreSQL's): what telemetry adds, less exposed to other load on the machine.
        "cpu": _verdict(cpu, cpu_medians),
    }
    # Telemetry off leaves only its hooks on the path, too cheap to time inside a run:
    # timed on their own, and set against what a run costs and how much that varies.
    hooks_ms = _off_hooks_us_per_run() / 1000
    noise_ms = on_vs_off["cpu"]["paired_round_difference_ms"]["ci95_half_width"]
    return {
        "telemetry_off": {
            "hooks_us_per_run": round(hooks_ms * 1000, 2),
            "pct_of_run_cpu": round(100 * hooks_ms / statistics.median(cpu["off"]), 4),
            "noise_ms": noise_ms,
            "within_noise": hooks_ms < noise_ms,
        },
        "telemetry_on_vs_off": on_vs_off,
        "telemetry_on": "setup() with an OTLP/HTTP endpoint (a local sink): batched span "
        "export, Prometheus and OTLP metric readers",
        "rounds": rounds,
        "runs_per_round": per_round,
    }


def _off_hooks_us_per_run(repeat: int = 100_000) -> float:
    """What telemetry's hooks cost with telemetry off, timed on their own: a reference
    run's two executions, each entering `execution()` and checking what it gives."""
    started = time.perf_counter()
    for _ in range(repeat):
        for _ in range(2):
            claim_started = time.perf_counter()  # the daemon times each claim...
            if DISABLED.enabled:  # ...and records it only with telemetry on
                DISABLED.claim_duration.record(time.perf_counter() - claim_started)
            with execution(
                DISABLED, run_id="r", project="p", workflow="w", stored=None, approval=None
            ) as trace:
                assert trace.started is None
    return (time.perf_counter() - started) / repeat * 1e6


def _verdict(samples: dict[str, list[float]], medians: dict[str, list[float]]) -> dict[str, Any]:
    on, off = summary(samples["on"]), summary(samples["off"])
    paired = [a - b for a, b in zip(medians["on"], medians["off"], strict=True)]
    mean = statistics.mean(paired)
    # A 95% interval for the paired difference of round medians (normal approximation).
    half = 1.96 * statistics.stdev(paired) / len(paired) ** 0.5 if len(paired) > 1 else 0.0
    return {
        "on_ms_per_run": on,
        "off_ms_per_run": off,
        "difference_ms_p50": round(on["p50"] - off["p50"], 3),
        "difference_pct_p50": round(100 * (on["p50"] - off["p50"]) / off["p50"], 1),
        "paired_round_difference_ms": {
            "mean": round(mean, 3),
            "ci95": [round(mean - half, 3), round(mean + half, 3)],
            "ci95_half_width": round(half, 3),
        },
        "within_noise": mean - half <= 0 <= mean + half,
    }


def run(admin_url: str, *, quick: bool) -> dict[str, Any]:
    with scratch_database(admin_url) as url:
        rounds = 6 if quick else 20
        return {"telemetry_overhead": run_async(measure(url, rounds, per_round=10))}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--per-round", type=int, default=10)
    args = parser.parse_args()
    with scratch_database() as url:
        result = run_async(measure(url, args.rounds, args.per_round))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
