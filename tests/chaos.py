"""Chaos: N runs through the sandbox providers on K daemons while daemons are
SIGKILLed and restarted every few seconds, PostgreSQL restarts once, and
approvals arrive as plain SQL at random moments. Prints one table.

    python -m tests.chaos [--runs 300] [--daemons 3] [--seed N]   (make chaos)

`tests/e2e/test_chaos.py` runs a short version in `make test`.
"""

import argparse
import asyncio
import json
import random
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from psycopg import AsyncConnection, OperationalError
from psycopg.rows import DictRow, dict_row
from tenacity import AsyncRetrying, retry_if_exception_type, wait_fixed

from tests.conftest import Postgres, migrated_database, postgres_server
from tests.helpers import DaemonProcess
from tests.stack import Stack, stack

Conn = AsyncConnection[DictRow]


@dataclass
class ChaosReport:
    runs: int
    daemons: int
    published: int = 0
    failed: int = 0
    stuck: int = 0
    kills: int = 0
    in_flight_at_faults: int = 0  # holds of a run a fault ended: a kill, the restart, a lost lease
    leases_lost: int = 0  # of those, holds a live daemon lost (it stalled past its lease)
    node_reexecutions: int = 0  # counted node starts beyond one per run
    unexplained: list[str] = field(default_factory=list)  # second runs no fault accounts for
    duplicate_publishes: int = 0  # upload calls beyond one per run
    resubmitted_jobs: int = 0  # generations and renders submitted again
    longest_takeover_s: float = 0.0
    postgres_restarts: int = 0
    seconds: float = 0.0
    takeovers: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)  # why the failed runs failed

    @property
    def lost(self) -> int:
        return self.runs - self.published - self.failed - self.stuck

    def table(self) -> str:
        rows = [
            ("runs created", self.runs),
            ("published", self.published),
            ("failed", self.failed),
            ("stuck", self.stuck),
            ("lost", self.lost),
            (
                "daemons / SIGKILLs / PostgreSQL restarts",
                f"{self.daemons} / {self.kills} / {self.postgres_restarts}",
            ),
            ("runs in flight at a kill, restart or lost lease", self.in_flight_at_faults),
            ("  of which leases lost by live daemons", self.leases_lost),
            ("node executions beyond one per run", self.node_reexecutions),
            ("duplicate publishes seen by the sandbox", self.duplicate_publishes),
            ("generations/renders submitted again", self.resubmitted_jobs),
            ("longest takeover (s)", f"{self.longest_takeover_s:.2f}"),
            ("wall time (s)", f"{self.seconds:.1f}"),
        ]
        width = max(len(label) for label, _ in rows)
        table = "\n".join(f"{label:<{width}}  {value}" for label, value in rows)
        return "\n".join(
            [
                table,
                *(f"  failed: {why}" for why in self.failures),
                *(f"  ran again with no fault: {what}" for what in self.unexplained),
            ]
        )


async def _connect(url: str) -> Conn:
    return await AsyncConnection.connect(url, autocommit=True, row_factory=dict_row)


async def _approver(url: str, stop: asyncio.Event, rng: random.Random) -> None:
    """Approve a random share of the waiting runs, with plain SQL, at random moments."""
    while not stop.is_set():
        await asyncio.sleep(rng.uniform(0, 0.3))
        try:
            async with await _connect(url) as conn:
                await conn.execute(
                    "INSERT INTO hitl_approvals (run_id, gate, approver) "
                    "SELECT run_id, substr(status, 9), 'chaos' FROM runs r "
                    "WHERE status LIKE 'pending\\_%%' AND random() < 0.7 AND NOT EXISTS ("
                    "  SELECT 1 FROM hitl_approvals a "
                    "  WHERE a.run_id = r.run_id AND a.consumed_at IS NULL)"
                )
        except OperationalError:
            continue  # PostgreSQL is restarting


async def _held_by(url: str, worker: str) -> dict[str, int]:
    async with await _connect(url) as conn:
        rows = await (
            await conn.execute(
                "SELECT run_id, lease_epoch FROM runs WHERE status = 'running' "
                "AND lease_owner = %s",
                (worker,),
            )
        ).fetchall()
    return {row["run_id"]: row["lease_epoch"] for row in rows}


async def _takeover(url: str, held: dict[str, int], killed_at: float) -> float:
    """Seconds until every run the dead daemon held was claimed again (or finished)."""
    pending = dict(held)
    while pending:
        try:
            async with await _connect(url) as conn:
                rows = await (
                    await conn.execute(
                        "SELECT run_id, lease_epoch, status FROM runs WHERE run_id = ANY(%s)",
                        (list(pending),),
                    )
                ).fetchall()
        except OperationalError:
            rows = []
        for row in rows:
            if row["lease_epoch"] > pending[row["run_id"]] or row["status"] != "running":
                del pending[row["run_id"]]
        await asyncio.sleep(0.05)
    return time.monotonic() - killed_at


async def run_chaos(
    db_url: str,
    postgres: Postgres,
    log_dir: Path,
    *,
    runs: int,
    daemons: int,
    kill_every: tuple[float, float] = (2.0, 5.0),
    deadline_s: float = 600.0,
    seed: int | None = None,
) -> ChaosReport:
    rng = random.Random(seed)
    report = ChaosReport(runs=runs, daemons=daemons)
    started = time.monotonic()
    settings = {
        "lease_ttl": 3,
        "poll_interval": 0.5,
        "concurrency": 8,
        "provider_poll_interval": 2,
        # The sandbox finishes a job in seconds: a callback not here by then never comes.
        "provider_adopt_window": 20,
    }
    async with stack(db_url, log_dir, **settings) as s:
        workers: list[DaemonProcess] = [s.daemon(f"d{i}-0") for i in range(daemons)]
        async with await _connect(db_url) as conn:
            await conn.execute(
                "INSERT INTO runs (run_id, project, status, payload, workflow) "
                "SELECT 'run_chaos' || i, 'chaos', 'queued', "
                "       jsonb_build_object('brief', 'chaos run ' || i), 'chaos' "
                "FROM generate_series(1, %s) i",
                (runs,),
            )
        stop = asyncio.Event()
        async with asyncio.TaskGroup() as tasks:
            approver = tasks.create_task(_approver(db_url, stop, rng))
            takeovers: list[asyncio.Task[float]] = []
            # Each (daemon, run) a fault cut off: it may run its node in flight once more.
            cut_off: set[tuple[str, str]] = set()
            restart: tuple[datetime, datetime] | None = None  # the server's clock
            next_kill = time.monotonic() + rng.uniform(*kill_every)
            while time.monotonic() - started < deadline_s:
                done = await _finished(db_url)
                if done is not None and done >= runs:
                    break
                if restart is None and done is not None and done >= runs // 2:
                    holds, stopped_at = await _holds(db_url)
                    postgres.stop()
                    postgres.start()
                    # Runs claimed while the server was stopping were cut off too, and
                    # so was each node started in between (found in the ledger later).
                    more, started_at = await _holds(db_url)
                    cut_off |= holds | more
                    restart, report.postgres_restarts = (stopped_at, started_at), 1
                if time.monotonic() >= next_kill:
                    index = rng.randrange(len(workers))
                    victim = workers[index]
                    victim.kill()
                    killed_at = time.monotonic()
                    # Read after the kill: a dead daemon's leases stand until they expire.
                    held = await _held_by(db_url, victim.name)
                    report.kills += 1
                    cut_off |= {(victim.name, run_id) for run_id in held}
                    takeovers.append(tasks.create_task(_takeover(db_url, held, killed_at)))
                    name = victim.name.rsplit("-", 1)[0]
                    workers[index] = s.daemon(f"{name}-{report.kills}")
                    next_kill = time.monotonic() + rng.uniform(*kill_every)
                await asyncio.sleep(0.2)
            stop.set()
            await approver
            report.takeovers = [await t for t in takeovers]
        if restart is not None:
            cut_off |= await _started_between(db_url, restart)
        lost = _leases_lost(s) - cut_off
        report.leases_lost = len(lost)
        report.in_flight_at_faults = len(cut_off | lost)
        report.longest_takeover_s = max(report.takeovers, default=0.0)
        await _tally(db_url, s, report, cut_off | lost)
    report.seconds = time.monotonic() - started
    return report


async def _finished(url: str) -> int | None:
    try:
        async with await _connect(url) as conn:
            row = await (
                await conn.execute(
                    "SELECT count(*) AS n FROM runs WHERE status IN ('published', 'failed')"
                )
            ).fetchone()
    except OperationalError:
        return None
    return int(row["n"]) if row else 0


async def _holds(url: str) -> tuple[set[tuple[str, str]], datetime]:
    """(daemon, run) for every running run, and the server's time; retried while the
    server comes back."""
    async for attempt in AsyncRetrying(
        retry=retry_if_exception_type(OperationalError), wait=wait_fixed(0.1), reraise=True
    ):
        with attempt:
            async with await _connect(url) as conn:
                rows = await (
                    await conn.execute(
                        "SELECT lease_owner, run_id, now() AS at FROM runs "
                        "WHERE status = 'running' UNION ALL SELECT NULL, NULL, now()"
                    )
                ).fetchall()
    holds = {(row["lease_owner"], row["run_id"]) for row in rows if row["run_id"] is not None}
    return holds, rows[-1]["at"]


async def _started_between(url: str, window: tuple[datetime, datetime]) -> set[tuple[str, str]]:
    """(daemon, run) for each counted node started within `window`."""
    async with await _connect(url) as conn:
        rows = await (
            await conn.execute(
                "SELECT DISTINCT worker, run_id FROM node_ledger "
                "WHERE executed_at BETWEEN %s AND %s",
                window,
            )
        ).fetchall()
    return {(row["worker"], row["run_id"]) for row in rows}


# Starts of a node that were not its run's last, and did not end by parking the run.
_AGAIN = """
SELECT run_id, node, worker, epoch FROM (
    SELECT l.*, lead(id) OVER (PARTITION BY run_id, node ORDER BY id) AS next
    FROM node_ledger l JOIN runs r USING (run_id) WHERE r.status = 'published'
) starts WHERE next IS NOT NULL AND NOT parked
"""


def _leases_lost(s: Stack) -> set[tuple[str, str]]:
    """(daemon, run) for each run a daemon logged it had lost (a stall, or the restart)."""
    lost: set[tuple[str, str]] = set()
    for name, process in s.processes.items():
        for line in process.log().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and record.get("action") == "lease_lost":
                lost.add((name, str(record.get("run_id"))))
    return lost


async def _tally(url: str, s: Stack, report: ChaosReport, cut_off: set[tuple[str, str]]) -> None:
    async with await _connect(url) as conn:
        counts = await (
            await conn.execute("SELECT status, count(*) AS n FROM runs GROUP BY status")
        ).fetchall()
        by_status = {row["status"]: int(row["n"]) for row in counts}
        report.published = by_status.pop("published", 0)
        report.failed = by_status.pop("failed", 0)
        report.stuck = sum(by_status.values())
        failed = await (
            await conn.execute("SELECT run_id, error FROM runs WHERE status = 'failed'")
        ).fetchall()
        report.failures = [f"{row['run_id']}: {row['error']}" for row in failed]
        again = await (await conn.execute(_AGAIN)).fetchall()
    report.node_reexecutions = len(again)
    # Each must follow a fault that cut off the daemon that ran it before.
    report.unexplained = [
        f"{row['run_id']} {row['node']} (epoch {row['epoch']} on {row['worker']})"
        for row in again
        if (row["worker"], row["run_id"]) not in cut_off
    ]
    uploads: dict[str, int] = {}
    jobs: dict[tuple[str, str], int] = {}
    for call in await s.sandbox_calls():
        if call["operation"] == "upload":
            uploads[call["run_id"]] = uploads.get(call["run_id"], 0) + 1
        if call["operation"] in ("gpt4o_image_generate", "render"):
            key = (call["run_id"], call["operation"])
            jobs[key] = jobs.get(key, 0) + 1
    report.duplicate_publishes = sum(n - 1 for n in uploads.values())
    report.resubmitted_jobs = sum(n - 1 for n in jobs.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--daemons", type=int, default=3)
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args()
    with (
        postgres_server() as server,
        migrated_database(server.url, prefix="orch_chaos") as url,
        tempfile.TemporaryDirectory(prefix="chaos-") as log_dir,
    ):
        report = asyncio.run(
            run_chaos(
                url, server, Path(log_dir), runs=args.runs, daemons=args.daemons, seed=args.seed
            )
        )
    print(report.table())
    clean = (
        report.lost == report.stuck == report.failed == 0
        and report.duplicate_publishes == report.resubmitted_jobs == 0
    )
    raise SystemExit(0 if clean else 1)


if __name__ == "__main__":
    main()
