"""OpenTelemetry: one trace per run across pauses and restarts, a span per node and per
provider request, the metrics, and /metrics. In-process, on real PostgreSQL."""

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any, TypedDict

import httpx
import pytest
from langgraph.graph import START, StateGraph
from langgraph.runtime import Runtime
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from psycopg import AsyncConnection
from psycopg.rows import DictRow

from engine import App
from engine.db.connections import Pool, open_pool
from engine.observability.telemetry import DISABLED, Telemetry, setup
from engine.runtime import store
from engine.runtime.claims import Claim
from engine.runtime.daemon import Daemon
from engine.runtime.executor import Executor
from engine.runtime.workflow import RunContext, Workflow
from engine.service.api import create_app
from engine.service.health import health_app
from engine.settings import Settings
from providers.http import RetryPolicy
from providers.kie import KieClient
from tests.graphs import ledger_workflow
from tests.helpers import sandbox_serving, wait_for

Conn = AsyncConnection[DictRow]
STATUS = "SELECT status FROM runs WHERE run_id = %s"


@dataclass
class Recorded:
    telemetry: Telemetry
    spans: InMemorySpanExporter
    metrics: InMemoryMetricReader

    def finished(self, name: str | None = None) -> list[ReadableSpan]:
        spans = self.spans.get_finished_spans()
        return [span for span in spans if name is None or span.name == name]

    def points(self, metric: str) -> list[Any]:
        data = self.metrics.get_metrics_data()
        assert data is not None
        return [
            point
            for resource in data.resource_metrics
            for scope in resource.scope_metrics
            for found in scope.metrics
            if found.name == metric
            for point in found.data.data_points
        ]


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> Iterator[Recorded]:
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    spans, metrics = InMemorySpanExporter(), InMemoryMetricReader()
    telemetry = setup(
        Settings(otlp_endpoint=None, metrics_interval=0.001),
        span_processors=[SimpleSpanProcessor(spans)],
        metric_readers=[metrics],
    )
    yield Recorded(telemetry, spans, metrics)
    telemetry.close()


def _settings() -> Settings:
    return Settings(poll_interval=0.05, lease_ttl=5, retry_backoff=0.01, metrics_interval=0.001)


@contextlib.asynccontextmanager
async def daemon_running(
    db_url: str, pool: Pool, telemetry: Telemetry, workflows: dict[str, Workflow]
) -> AsyncIterator[None]:
    """A daemon in this event loop until the block ends (a new one each time: a restart)."""
    stop = asyncio.Event()
    serving = asyncio.create_task(
        Daemon(db_url, pool, _settings(), workflows, telemetry).serve(stop)
    )
    try:
        yield
    finally:
        stop.set()
        await serving


async def _status(conn: Conn, run_id: str, status: str, within: float = 30.0) -> None:
    await wait_for(conn, STATUS, (run_id,), until=lambda r: r[0]["status"] == status, within=within)


async def test_a_run_is_one_trace_across_its_gate_and_a_restart(
    db_url: str, conn: Conn, recorded: Recorded
) -> None:
    run_id = (await store.create_run(conn, project="cats", payload={}, workflow="ledger"))["run_id"]
    workflows = {"ledger": ledger_workflow()}
    async with open_pool(db_url, _settings()) as pool:
        async with daemon_running(db_url, pool, recorded.telemetry, workflows):
            await _status(conn, run_id, "pending_review")
        await conn.execute(
            "INSERT INTO hitl_approvals (run_id, gate) VALUES (%s, 'review')", (run_id,)
        )
        async with daemon_running(db_url, pool, recorded.telemetry, workflows):
            await _status(conn, run_id, "published")

    first, second = sorted(recorded.finished("run"), key=lambda span: span.start_time or 0)
    assert first.context is not None and second.context is not None
    trace_id = first.context.trace_id
    # The second execution continues the trace the first one stored with the run.
    assert second.context.trace_id == trace_id
    assert second.parent is not None and second.parent.span_id == first.context.span_id
    row = await (
        await conn.execute("SELECT trace_context FROM runs WHERE run_id = %s", (run_id,))
    ).fetchone()
    assert row is not None and f"-{trace_id:032x}-" in row["trace_context"]["traceparent"]
    for execution in (first, second):
        assert execution.attributes is not None
        assert execution.attributes["run_id"] == run_id
        assert execution.attributes["project"] == "cats"
        assert execution.attributes["gate"] == "review"  # paused there; resumed from there

    nodes = [span for span in recorded.finished() if span.name != "run"]
    assert [span.name for span in nodes] == ["n1", "n2", "review", "review", "n4", "n5"]
    for node in nodes:
        assert node.context is not None and node.context.trace_id == trace_id
        assert node.attributes is not None
        assert node.attributes["run_id"] == run_id and node.attributes["project"] == "cats"
        execution = (
            first if node.start_time and node.start_time < (second.start_time or 0) else second
        )
        assert node.parent is not None and execution.context is not None
        assert node.parent.span_id == execution.context.span_id
    assert nodes[2].attributes is not None and nodes[2].attributes["gate"] == "review"

    steps = {
        (point.attributes["node"], point.attributes["outcome"]): point.count
        for point in recorded.points("orchestrator.step.duration")
    }
    assert steps == {
        ("n1", "ok"): 1,
        ("n2", "ok"): 1,
        ("review", "interrupted"): 1,
        ("review", "ok"): 1,
        ("n4", "ok"): 1,
        ("n5", "ok"): 1,
    }
    claims = recorded.points("orchestrator.claim.duration")
    assert len(claims) == 1 and isinstance(claims[0], HistogramDataPoint)
    assert claims[0].count >= 2  # each daemon claimed at least once
    (approval,) = recorded.points("orchestrator.approval.wait")
    assert approval.attributes == {"gate": "review"} and approval.count == 1


class ProbeState(TypedDict, total=False):
    project: str
    task_id: str


def probe_workflow(kie: KieClient) -> Workflow:
    """One node, `media`, that asks kie.ai (the sandbox) for an image."""

    async def media(state: ProbeState, runtime: Runtime[RunContext]) -> dict[str, Any]:
        ctx = runtime.context
        key = ctx.idempotency_key("image")
        return {"task_id": await kie.gpt4o_image_generate("a cat", idempotency_key=key)}

    builder = StateGraph(ProbeState, context_schema=RunContext)
    builder.add_node("media", media)
    builder.add_edge(START, "media")
    return Workflow("probe", "probe-1", builder.compile())


async def test_a_provider_request_is_a_client_span_under_its_node(
    db_url: str, conn: Conn, recorded: Recorded
) -> None:
    run = await store.create_run(conn, project="cats", payload={}, workflow="probe")
    run_id = run["run_id"]
    epoch = await (
        await conn.execute(
            "UPDATE runs SET status = 'running', lease_epoch = lease_epoch + 1, "
            "lease_expires_at = NOW() + INTERVAL '1 minute' WHERE run_id = %s "
            "RETURNING lease_epoch",
            (run_id,),
        )
    ).fetchone()
    assert epoch is not None
    async with sandbox_serving() as sandbox, httpx.AsyncClient() as http:
        base = f"http://127.0.0.1:{sandbox.sandbox_port}"
        fault = {"provider": "kie", "operation": "gpt4o_image_generate", "status_code": 503}
        (await http.post(f"{base}/_sandbox/faults", json=fault)).raise_for_status()
        kie = KieClient(http, sandbox, retry=RetryPolicy(backoff=0.01, backoff_max=0.02))
        async with open_pool(db_url, _settings()) as pool:
            executor = Executor(
                pool, _settings(), {"probe": probe_workflow(kie)}, recorded.telemetry
            )
            claim = Claim(run_id, "cats", "probe", {}, epoch["lease_epoch"], None, None)
            await executor.execute(claim)
    await _status(conn, run_id, "published")

    (node,) = recorded.finished("media")
    failed, answered = recorded.finished("POST gpt4oImageGenerate")
    assert node.context is not None
    for request in (failed, answered):
        assert request.kind == SpanKind.CLIENT
        assert request.parent is not None and request.parent.span_id == node.context.span_id
        assert request.context is not None
        assert request.context.trace_id == node.context.trace_id
        assert request.attributes is not None
        assert request.attributes["http.request.method"] == "POST"
        assert request.attributes["url.full"] == f"{base}/kie/api/v1/gpt4o-image/generate"
        assert request.attributes["server.address"] == "127.0.0.1"
        assert request.attributes["server.port"] == sandbox.sandbox_port
    assert failed.attributes is not None and answered.attributes is not None
    assert failed.attributes["http.response.status_code"] == 503
    assert failed.attributes["error.type"] == "503"
    assert failed.status.status_code == StatusCode.ERROR
    assert answered.attributes["http.response.status_code"] == 200
    assert answered.attributes["http.request.resend_count"] == 1
    (errors,) = recorded.points("orchestrator.provider.errors")
    assert errors.attributes == {"provider": "kie", "status_code": "503"} and errors.value == 1


async def test_metrics_endpoints_serve_prometheus_text(
    db_url: str, conn: Conn, recorded: Recorded
) -> None:
    run_id = (await store.create_run(conn, project="cats", payload={}, workflow="ledger"))["run_id"]
    async with open_pool(db_url, _settings()) as pool:
        async with daemon_running(db_url, pool, recorded.telemetry, {"ledger": ledger_workflow()}):
            await _status(conn, run_id, "pending_review")
        served = App(workflows=[ledger_workflow()])
        app = create_app(
            served,
            served.configure(_settings()),
            url=db_url,
            pool=pool,
            telemetry=recorded.telemetry,
        )
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as api:
            response = await api.get("/metrics")
            assert response.status_code == 200, response.text
            assert response.headers["content-type"].startswith("text/plain")
            text = response.text
            for name in (
                'orchestrator_step_duration_seconds_bucket{le="0.005",node="n1",outcome="ok"',
                "orchestrator_claim_duration_seconds_count",
                'orchestrator_runs{status="pending_review"} 1.0',
                "orchestrator_queue_depth 0.0",
            ):
                assert name in text, text
            # An approval makes the paused run claimable: the queue is one deeper.
            await conn.execute(
                "INSERT INTO hitl_approvals (run_id, gate) VALUES (%s, 'review')", (run_id,)
            )
            assert "orchestrator_queue_depth 1.0" in (await api.get("/metrics")).text

        vitals = health_app(_Vitals(), pool, 10.0, recorded.telemetry)
        transport = httpx.ASGITransport(app=vitals)
        async with httpx.AsyncClient(transport=transport, base_url="http://daemon") as health:
            assert "orchestrator_claim_duration_seconds" in (await health.get("/metrics")).text
        off = health_app(_Vitals(), pool, 10.0, DISABLED)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=off), base_url="http://daemon"
        ) as health:
            assert (await health.get("/metrics")).status_code == 404


class _Vitals:
    last_tick = 0.0
    listening = True


async def test_with_telemetry_off_nothing_is_traced_or_stored(db_url: str, conn: Conn) -> None:
    assert setup(Settings(telemetry=False)) is DISABLED
    run_id = (await store.create_run(conn, project="cats", payload={}, workflow="ledger"))["run_id"]
    async with open_pool(db_url, _settings()) as pool:
        async with daemon_running(db_url, pool, DISABLED, {"ledger": ledger_workflow()}):
            await _status(conn, run_id, "pending_review")
    row = await (
        await conn.execute("SELECT trace_context FROM runs WHERE run_id = %s", (run_id,))
    ).fetchone()
    assert row == {"trace_context": None}
