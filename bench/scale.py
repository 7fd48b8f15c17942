"""Scale: the claim query with 10k and 1M rows in `runs`, and bytes per finished run.

Bytes: a daemon (subprocess, concurrency 16) takes `runs` reference runs to
`published`; the size of every table in the schema (`pg_total_relation_size`:
heap, indexes, TOAST), compacted with `VACUUM FULL` so that dead rows don't
count, is compared with the empty schema's, before and after pruning the runs'
LangGraph checkpoints with `AsyncPostgresSaver.aprune(..., "keep_latest")`.

Claim: the same database is filled with terminal (`published`) runs, each
with its consumed approval, up to 10k and then 1M rows, plus 100 live ones
that stay constant (50 `queued`, 50 `pending_review` with no approval), and
`claim_runs` from engine/db/queries.sql runs with the daemon's parameters and
connection settings (LIMIT 8, the default concurrency), each time in a
transaction that is rolled back so every sample sees the same rows; and its
`EXPLAIN (ANALYZE, BUFFERS)` plan. At 10k rows it runs again with 10,000 runs
asleep (`waiting_timer`, due in a day) and 100 running schedules, 10 of them due
(fire times missed a minute ago, within their catch-up window), all removed
afterwards: the claim finds due timers from their index and reads no schedule,
so they should cost it nothing (`claim_ms_10k_timers`, against `claim_ms_10k`
with none). Then with 10,000
runs parked at a provider's limit (`waiting_limit`, no slot handed to them yet):
the claim reads only the parked runs that are due, so the same holds
(`claim_ms_10k_limited`). And with a project limit (8 runs at once, so that the
live project can still fill a claim) and a project at it, with 10,000 runs
parked for room in it, as the claim leaves them: they cost it nothing either
(`claim_ms_10k_project_full`).

Poll: what a daemon's poll sends besides, timed with the claim as one sample on
one connection, rolled back likewise: the firing-pass check
(`schedules.next_due`), the pass itself when a schedule is due
(`schedules.fire_due`), the claim, and the next timer (`next_timer`). With
none (`poll_ms_10k`), with the 10,000 asleep and the 100 schedules none due
(`poll_ms_10k_timers`: every poll between fire times), and with 10 due
(`poll_ms_10k_due`: the poll at a fire time, which starts their runs).

    python -m bench.scale [--runs 1000] [--samples 500]
"""

import argparse
import asyncio
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import psycopg
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from psycopg.rows import DictRow, dict_row

from bench.harness import (
    AUTO_APPROVE,
    connect,
    daemon,
    run_batch,
    scratch_database,
    server_url,
    wait_for_daemons,
)
from bench.harness import summary as percentiles
from bench.reference import NAME, reference_workflow
from engine.db.connections import connect as connect_async
from engine.db.connections import connection_kwargs
from engine.db.queries import QUERIES
from engine.runtime import schedules
from engine.runtime.claims import claim_params
from engine.settings import Settings

Connection = psycopg.Connection[DictRow]
LIVE = 100
SLEEPING = 10_000
SCHEDULES = 100
DUE = 10  # of SCHEDULES, in the poll at a fire time
PARKED = 10_000
PROJECT_LIMIT = 8  # the claim's LIMIT: the live project still fills a claim
SIZES = """
SELECT c.relname AS name, pg_total_relation_size(c.oid) AS bytes
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'public' AND c.relkind = 'r'
"""


def _sizes(conn: Connection) -> dict[str, int]:
    conn.execute("VACUUM FULL")
    return {row["name"]: int(row["bytes"]) for row in conn.execute(SIZES).fetchall()}


def _per_run(before: dict[str, int], after: dict[str, int], runs: int) -> dict[str, float]:
    per_table = {name: (after[name] - before.get(name, 0)) / runs for name in after}
    return {
        "total": round(sum(per_table.values())),
        **{name: round(b) for name, b in sorted(per_table.items()) if b},
    }


async def _prune(url: str, thread_ids: list[str]) -> None:
    async with await psycopg.AsyncConnection.connect(
        url, autocommit=True, row_factory=dict_row
    ) as conn:
        await AsyncPostgresSaver(conn).aprune(thread_ids, strategy="keep_latest")


def bytes_per_run(conn: Connection, url: str, runs: int) -> dict[str, Any]:
    empty = _sizes(conn)
    conn.execute(AUTO_APPROVE)
    with daemon(url, "scale", concurrency=16):
        wait_for_daemons(conn, 1)
        run_batch(conn, "run_size_", runs)
    finished = _sizes(conn)
    ids = [row["run_id"] for row in conn.execute("SELECT run_id FROM runs").fetchall()]
    asyncio.run(_prune(url, ids))
    pruned = _sizes(conn)
    return {
        "bytes_per_run": {
            "before_prune": _per_run(empty, finished, runs)["total"],
            "after_prune": _per_run(empty, pruned, runs)["total"],
        },
        "bytes_per_run_by_table": {
            "before_prune": _per_run(empty, finished, runs),
            "after_prune": _per_run(empty, pruned, runs),
            "runs": runs,
        },
    }


def _fill(conn: Connection, total: int) -> None:
    """Top `runs` up to `total` rows with published runs, each with its consumed approval."""
    have = conn.execute("SELECT count(*) AS n FROM runs").fetchone()
    assert have is not None
    span = (int(have["n"]), total - 1)
    with conn.transaction():
        # Triggers off: the approval guard refuses approvals of finished runs,
        # and a NOTIFY per row would only wake nobody a million times.
        conn.execute("SET LOCAL session_replication_role = replica")
        conn.execute(
            "INSERT INTO runs (run_id, project, status, payload, workflow, result) "
            "SELECT 'run_fill' || i, 'bench', 'published', '{}', 'reference', '{}' "
            "FROM generate_series(%s::int, %s::int) i",
            span,
        )
        conn.execute(
            "INSERT INTO hitl_approvals (run_id, gate, approver, consumed_at) "
            "SELECT 'run_fill' || i, 'review', 'bench', NOW() "
            "FROM generate_series(%s::int, %s::int) i",
            span,
        )
    conn.execute("VACUUM ANALYZE runs, hitl_approvals")


@contextmanager
def _sleeping(conn: Connection, runs: int, scheduled: int) -> Iterator[None]:
    """`runs` runs asleep, due in a day, and `scheduled` schedules running (each a
    minute, next due in a day: `_due` brings some forward), while the block runs."""
    conn.execute(
        "INSERT INTO runs (run_id, project, status, payload, workflow, wake_at, waiting_for) "
        "SELECT 'run_nap' || i, 'bench', 'waiting_timer', '{}', 'reference', "
        "NOW() + INTERVAL '1 day', jsonb_build_object('timer', NOW() + INTERVAL '1 day') "
        "FROM generate_series(1, %s) i",
        (runs,),
    )
    conn.execute(
        "INSERT INTO schedules (schedule_id, cron, timezone, project, workflow, payload, "
        "overlap, catchup, next_fire_at) SELECT 'sch_bench' || i, '* * * * *', "
        "'Europe/Berlin', 'bench', 'reference', '{}', 'skip', INTERVAL '5 minutes', "
        "date_trunc('minute', NOW()) + INTERVAL '1 day' "
        "FROM generate_series(1, %s) i",
        (scheduled,),
    )
    conn.execute("VACUUM ANALYZE runs, schedules")
    try:
        yield
    finally:
        conn.execute("DELETE FROM schedules WHERE schedule_id LIKE 'sch_bench%%'")
        conn.execute("DELETE FROM runs WHERE run_id LIKE 'run_nap%%'")
        conn.execute("VACUUM ANALYZE runs, schedules")


def _due(conn: Connection, count: int, due: bool) -> None:
    """`count` of the schedules due (a fire time missed a minute ago, within the
    catch-up window), or none of them (as a firing pass leaves them)."""
    conn.execute(
        "UPDATE schedules SET next_fire_at = date_trunc('minute', NOW()) + "
        "CASE WHEN %s THEN INTERVAL '-1 minute' ELSE INTERVAL '1 day' END "
        "WHERE schedule_id IN (SELECT schedule_id FROM schedules ORDER BY 1 LIMIT %s)",
        (due, count),
    )


@contextmanager
def _parked(conn: Connection, runs: int) -> Iterator[None]:
    """`runs` runs parked for a slot of a full provider limit while the block runs."""
    conn.execute("INSERT INTO flow_limits (name, concurrent) VALUES ('provider:bench', 1)")
    conn.execute(
        "INSERT INTO runs (run_id, project, status, payload, workflow, waiting_for) "
        "SELECT 'run_parked' || i, 'bench', 'waiting_limit', '{}', 'reference', "
        "jsonb_build_object('limit', 'provider:bench', 'key', 'job') "
        "FROM generate_series(1, %s) i",
        (runs,),
    )
    conn.execute("VACUUM ANALYZE runs")
    try:
        yield
    finally:
        conn.execute("DELETE FROM runs WHERE run_id LIKE 'run_parked%%'")
        conn.execute("DELETE FROM flow_limits WHERE name = 'provider:bench'")
        conn.execute("VACUUM ANALYZE runs")


@contextmanager
def _project_full(conn: Connection, runs: int) -> Iterator[None]:
    """A project limit, and a project at it with `runs` runs parked for room, while the
    block runs."""
    conn.execute(
        "INSERT INTO flow_limits (name, concurrent) VALUES ('project:*', %s) "
        "ON CONFLICT (name) DO UPDATE SET concurrent = EXCLUDED.concurrent",
        (PROJECT_LIMIT,),
    )
    conn.execute(
        "INSERT INTO runs (run_id, project, status, payload, workflow, lease_owner, "
        "lease_expires_at, waiting_for) SELECT 'run_full' || i, 'full', "
        "CASE WHEN i <= %(running)s THEN 'running' ELSE 'waiting_limit' END, '{}', 'reference', "
        "'elsewhere', NOW() + INTERVAL '1 day', CASE WHEN i > %(running)s THEN "
        '\'{"limit": "project:full"}\'::jsonb END FROM generate_series(1, %(all)s) i',
        {"running": PROJECT_LIMIT, "all": PROJECT_LIMIT + runs},
    )
    conn.execute("VACUUM ANALYZE runs")
    try:
        yield
    finally:
        conn.execute("DELETE FROM runs WHERE run_id LIKE 'run_full%%'")
        conn.execute("UPDATE flow_limits SET concurrent = NULL WHERE name = 'project:*'")
        conn.execute("VACUUM ANALYZE runs")


def _claim_params() -> dict[str, Any]:
    settings = Settings()
    versions = {"workflows": [NAME], "versions": [reference_workflow().version]}
    lease_ttl = timedelta(seconds=settings.lease_ttl)
    return claim_params(settings.concurrency, "bench-claim", lease_ttl, versions)


def claim_latency(url: str, samples: int) -> dict[str, Any]:
    """The claim's milliseconds (client-side, one round trip) and its plan."""
    params = _claim_params()
    times = []
    kwargs: dict[str, Any] = connection_kwargs(Settings())
    with psycopg.connect(url, **kwargs) as conn:
        for _ in range(samples):
            with conn.transaction(force_rollback=True):
                started = time.perf_counter()
                claimed = conn.execute(QUERIES["claim_runs"], params, binary=True).fetchall()
                times.append((time.perf_counter() - started) * 1000)
            assert len(claimed) == params["limit"], claimed
        with conn.transaction(force_rollback=True):
            plan = conn.execute(
                "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + QUERIES["claim_runs"], params
            ).fetchall()
    return {**percentiles(times), "plan": [row["QUERY PLAN"] for row in plan]}


def poll_latency(url: str, samples: int) -> dict[str, Any]:
    """A daemon's poll in milliseconds (client-side): the firing pass if one is due,
    the claim, the next timer."""
    return asyncio.run(_poll_latency(url, samples))


async def _poll_latency(url: str, samples: int) -> dict[str, Any]:
    params = _claim_params()
    times, started = [], 0
    async with await connect_async(url, Settings()) as conn:
        for _ in range(samples):
            async with conn.transaction(force_rollback=True):
                begun = time.perf_counter()
                now, due_at = await schedules.next_due(conn)
                if due_at is not None and due_at <= now:
                    started += (await schedules.fire_due(conn)).started
                cursor = await conn.execute(QUERIES["claim_runs"], params, binary=True)
                claimed = await cursor.fetchall()
                await (await conn.execute(QUERIES["next_timer"])).fetchone()
                times.append((time.perf_counter() - begun) * 1000)
            assert len(claimed) == params["limit"], claimed
    return {**percentiles(times), "runs_started_per_poll": round(started / samples, 2)}


def measure(admin_url: str, runs: int, samples: int) -> dict[str, Any]:
    with scratch_database(admin_url) as url, connect(url) as conn:
        result = bytes_per_run(conn, url, runs)
        conn.execute("DROP TRIGGER bench_auto_approve ON runs")
        conn.execute(
            "INSERT INTO runs (run_id, project, status, payload, workflow) "
            "SELECT 'run_live' || i, 'bench', CASE WHEN i %% 2 = 0 THEN 'queued' "
            "ELSE 'pending_review' END, '{}', 'reference' FROM generate_series(1, %s) i",
            (LIVE,),
        )
        claims, polls = {}, {}
        for label, total in (("10k", 10_000), ("1m", 1_000_000)):
            started = time.monotonic()
            _fill(conn, total)
            fill_s = time.monotonic() - started
            claims[label] = {
                **claim_latency(url, samples),
                "rows": total,
                "fill_s": round(fill_s, 1),
            }
            if label == "10k":
                polls["10k"] = {**poll_latency(url, samples), "rows": total}
                with _sleeping(conn, SLEEPING, SCHEDULES):
                    _due(conn, DUE, due=True)
                    asleep = {"rows": total + SLEEPING, "sleeping": SLEEPING}
                    claims["10k_timers"] = {
                        **claim_latency(url, samples),
                        **asleep,
                        "schedules": SCHEDULES,
                        "due": DUE,
                    }
                    polls["10k_due"] = {
                        **poll_latency(url, samples),
                        **asleep,
                        "schedules": SCHEDULES,
                        "due": DUE,
                    }
                    _due(conn, DUE, due=False)
                    polls["10k_timers"] = {
                        **poll_latency(url, samples),
                        **asleep,
                        "schedules": SCHEDULES,
                        "due": 0,
                    }
                with _parked(conn, PARKED):
                    claims["10k_limited"] = {
                        **claim_latency(url, samples),
                        "rows": total + PARKED,
                        "parked": PARKED,
                    }
                with _project_full(conn, PARKED):
                    claims["10k_project_full"] = {
                        **claim_latency(url, samples),
                        "rows": total + PROJECT_LIMIT + PARKED,
                        "parked_for_room": PARKED,
                    }
    return {
        **result,
        "claim_ms_10k_timers": claims["10k_timers"]["p50"],
        "claim_10k_timers_vs_none": round(claims["10k_timers"]["p50"] / claims["10k"]["p50"], 2),
        "claim_ms_10k_limited": claims["10k_limited"]["p50"],
        "claim_10k_limited_vs_none": round(claims["10k_limited"]["p50"] / claims["10k"]["p50"], 2),
        "claim_ms_10k_project_full": claims["10k_project_full"]["p50"],
        "claim_10k_project_full_vs_none": round(
            claims["10k_project_full"]["p50"] / claims["10k"]["p50"], 2
        ),
        "claim_ms_10k": claims["10k"]["p50"],
        "claim_ms_1m": claims["1m"]["p50"],
        "claim_1m_vs_10k": round(claims["1m"]["p50"] / claims["10k"]["p50"], 2),
        "claim_detail": claims,
        "poll_ms_10k": polls["10k"]["p50"],
        "poll_ms_10k_timers": polls["10k_timers"]["p50"],
        "poll_10k_timers_vs_none": round(polls["10k_timers"]["p50"] / polls["10k"]["p50"], 2),
        "poll_ms_10k_due": polls["10k_due"]["p50"],
        "poll_detail": polls,
    }


def run(admin_url: str, *, quick: bool) -> dict[str, Any]:
    return measure(admin_url, runs=300 if quick else 1000, samples=200 if quick else 500)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--samples", type=int, default=500)
    args = parser.parse_args()
    with server_url() as admin_url:
        print(json.dumps(measure(admin_url, args.runs, args.samples), indent=2))


if __name__ == "__main__":
    main()
