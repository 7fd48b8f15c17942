"""The console's pages with 100,000 runs in the database: each page's server time, p50.

A scratch database gets 100,000 runs spread over the statuses as a busy
deployment holds them (most finished, some queued, hundreds waiting at gates),
and one run that went through 200 steps of a real LangGraph graph, checkpointed
in LangGraph's own tables. `orchestrator api` serves them; each page is fetched
over a kept-alive loopback connection, and the time to its last byte is the
server's (the loopback adds well under a millisecond).

    python -m bench.console [--quick]
"""

import argparse
import asyncio
import json
import time
from typing import Any, TypedDict

import httpx
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from langgraph.graph import END, START, StateGraph
from psycopg import AsyncConnection
from psycopg.rows import dict_row

from bench.harness import connect, scratch_database, service, summary, until_up
from tests.stack import free_port

TOKEN = "bench-console-token-0123456789abcdef"
RUNS = 100_000
STEPS = 200
LONG_RUN = "run_two_hundred_steps"
# (status, share of the runs): what a deployment that has run for months holds.
STATUSES = (
    ("published", 0.80),
    ("failed", 0.05),
    ("cancelled", 0.04),
    ("queued", 0.06),
    ("pending_workflow", 0.03),
    ("pending_publish", 0.02),
)
PAGES = (
    ("runs_list", "/console/runs"),
    ("runs_list_failed", "/console/runs?status=failed"),
    ("inbox", "/"),
    ("run_200_steps", f"/console/runs/{LONG_RUN}"),
    # No daemon runs: each of the 11,000 runs not finished is one no live worker can take.
    ("workers", "/console/workers"),
)


def _seed(url: str) -> None:
    with connect(url) as conn:
        first = 1
        for status, share in STATUSES:
            count = int(RUNS * share)
            conn.execute(
                "INSERT INTO runs (run_id, project, status, payload, workflow, created_at, "
                "updated_at) "
                "SELECT 'run_c' || i, 'p' || (i %% 20), %s, "
                "       jsonb_build_object('brief', 'a cat video number ' || i), 'production', "
                "       now() - make_interval(secs => i * 60), "
                "       now() - make_interval(secs => i * 30) "
                "FROM generate_series(%s, %s) i",
                (status, first, first + count - 1),
            )
            first += count
        conn.execute("ANALYZE")
    asyncio.run(_long_run(url))


class _Counter(TypedDict):
    n: int


async def _long_run(url: str) -> None:
    """A run whose 200 steps are checkpoints of a real graph, in LangGraph's tables."""

    def step(state: _Counter) -> _Counter:
        return {"n": state["n"] + 1}

    builder = StateGraph(_Counter)
    builder.add_node("step", step)
    builder.add_edge(START, "step")
    builder.add_conditional_edges("step", lambda s: END if s["n"] >= STEPS else "step")
    async with await AsyncConnection.connect(url, autocommit=True, row_factory=dict_row) as conn:
        await conn.execute(
            "INSERT INTO runs (run_id, project, status, payload, workflow) "
            "VALUES (%s, 'p0', 'published', '{\"brief\": \"two hundred steps\"}', 'production')",
            (LONG_RUN,),
        )
        graph = builder.compile(checkpointer=AsyncPostgresSaver(conn))
        config: RunnableConfig = {
            "configurable": {"thread_id": LONG_RUN},
            "recursion_limit": STEPS + 10,
        }
        await graph.ainvoke(_Counter(n=0), config)


def run(admin_url: str | None = None, *, quick: bool = False) -> dict[str, Any]:
    samples = 5 if quick else 20
    with scratch_database(admin_url) as url:
        _seed(url)
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        pages: dict[str, Any] = {}
        with service(url, "api", api_port=port, api_token=TOKEN):
            until_up(f"{base}/readyz")
            headers = {"Authorization": f"Bearer {TOKEN}"}
            with httpx.Client(base_url=base, headers=headers, timeout=60) as http:
                for name, path in PAGES:
                    assert http.get(path).status_code == 200, path  # warm: templates, plans
                    times = []
                    for _ in range(samples):
                        started = time.perf_counter()
                        response = http.get(path)
                        times.append((time.perf_counter() - started) * 1000)
                        assert response.status_code == 200, (path, response.status_code)
                    pages[name] = {**summary(times), "bytes": len(response.content)}
    return {
        "console_ms": {name: page["p50"] for name, page in pages.items()},
        "console_detail": {"runs": RUNS, "steps_of_the_long_run": STEPS, "pages": pages},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    print(json.dumps(run(quick=parser.parse_args().quick), indent=2))


if __name__ == "__main__":
    main()
