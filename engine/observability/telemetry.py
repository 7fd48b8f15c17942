"""OpenTelemetry: the process's tracer and metric instruments, built once from Settings.

`setup(settings)` gives a `Telemetry`; the daemon, the executor and the HTTP apps
take it as an argument. `ORCHESTRATOR_TELEMETRY=false` gives `DISABLED`: the
API's no-op tracer and meter, and a flag that the hot path checks before doing
anything at all. Spans are made only when they go somewhere (an OTLP endpoint,
or a span processor a test passes in); metrics are always kept, for `/metrics`.

How a run's trace is put together is in `engine.runtime.tracing`.
"""

import logging
import math
import os
import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import psycopg
from opentelemetry import trace
from opentelemetry.metrics import CallbackOptions, MeterProvider, NoOpMeterProvider, Observation

from engine.db.connections import Pool
from engine.db.queries import QUERIES
from engine.db.status import STATUS_PARAMS
from engine.settings import Settings

if TYPE_CHECKING:
    from opentelemetry.sdk.metrics.export import MetricReader
    from opentelemetry.sdk.trace import SpanProcessor
    from prometheus_client import CollectorRegistry

log = logging.getLogger(__name__)

SCOPE = "orchestrator"
# Seconds. A step is a node (an LLM call, a provider submit); a claim is one statement;
# an approval is a person reading a proposal.
STEP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
CLAIM_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)
APPROVAL_BUCKETS = (10, 60, 300, 900, 1800, 3600, 4 * 3600, 12 * 3600, 86400, 3 * 86400, 7 * 86400)


class RunStats:
    """Runs by status and the queue depth, from one grouped query at most every `interval`.

    Observable gauges are read synchronously when metrics are collected, and the
    query is async: the daemon refreshes on a schedule and `/metrics` on each
    scrape (both rate-limited here), and collection reads the latest numbers.
    """

    def __init__(self, interval: float) -> None:
        self._interval = interval
        self._taken = -math.inf
        self._by_status: dict[str, int] = {}
        self._due: int | None = None

    async def refresh(self, pool: Pool) -> None:
        now = time.monotonic()
        if now - self._taken < self._interval:
            return
        self._taken = now
        try:
            async with pool.connection() as conn:
                cursor = await conn.execute(QUERIES["run_counts"], STATUS_PARAMS)
                rows = await cursor.fetchall()
        except psycopg.Error as error:  # the gauges keep their last numbers
            log.warning("run counts failed: %s", error, extra={"action": "run_counts_failed"})
            return
        # A status seen once is reported from then on, as 0 when no run has it.
        self._by_status = dict.fromkeys(self._by_status, 0) | {
            row["status"]: row["runs"] for row in rows
        }
        self._due = sum(row["due"] for row in rows)

    def by_status(self, _: CallbackOptions) -> Iterable[Observation]:
        return [Observation(n, {"status": status}) for status, n in self._by_status.items()]

    def queue_depth(self, _: CallbackOptions) -> Iterable[Observation]:
        return [] if self._due is None else [Observation(self._due)]


class Telemetry:
    """The tracer and instruments; `enabled` is False only for `DISABLED`."""

    def __init__(
        self,
        tracer_provider: trace.TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
        registry: "CollectorRegistry | None" = None,
        stats_interval: float = 15.0,
    ) -> None:
        self.enabled = meter_provider is not None
        self.tracing = tracer_provider is not None
        self._providers = (tracer_provider, meter_provider)
        self._registry = registry
        self.tracer = (tracer_provider or trace.NoOpTracerProvider()).get_tracer(SCOPE)
        meter = (meter_provider or NoOpMeterProvider()).get_meter(SCOPE)
        self.stats = RunStats(stats_interval)
        self.step_duration = meter.create_histogram(
            "orchestrator.step.duration",
            unit="s",
            description="One execution of a LangGraph node, by workflow, node and outcome",
            explicit_bucket_boundaries_advisory=STEP_BUCKETS,
        )
        self.claim_duration = meter.create_histogram(
            "orchestrator.claim.duration",
            unit="s",
            description="The claim_runs statement, as the daemon waits for it",
            explicit_bucket_boundaries_advisory=CLAIM_BUCKETS,
        )
        self.approval_wait = meter.create_histogram(
            "orchestrator.approval.wait",
            unit="s",
            description="From an approval's insert to the claim that resumes its run, by gate",
            explicit_bucket_boundaries_advisory=APPROVAL_BUCKETS,
        )
        self.provider_errors = meter.create_counter(
            "orchestrator.provider.errors",
            description="Failed provider request attempts, by provider and HTTP status",
        )
        self.notifications = meter.create_counter(
            "orchestrator.notifications",
            description="Notification deliveries by channel and outcome: delivered, retried "
            "(an attempt failed), gave_up, skipped (a reminder whose pause was over)",
        )
        meter.create_observable_gauge(
            "orchestrator.runs",
            callbacks=[self.stats.by_status],
            description="Runs by status",
        )
        meter.create_observable_gauge(
            "orchestrator.queue.depth",
            callbacks=[self.stats.queue_depth],
            description="Runs a worker could claim now: queued, approved, woken, or abandoned",
        )

    def prometheus_text(self) -> bytes | None:
        """Every metric in Prometheus's text format; None when telemetry is off."""
        if self._registry is None:
            return None
        from prometheus_client import generate_latest

        return generate_latest(self._registry)

    def close(self) -> None:
        """Flush what is buffered for OTLP and stop the exporters' threads."""
        for provider in self._providers:
            if provider is not None and hasattr(provider, "shutdown"):
                provider.shutdown()


DISABLED = Telemetry()


def setup(
    settings: Settings,
    *,
    span_processors: Sequence["SpanProcessor"] = (),
    metric_readers: Sequence["MetricReader"] = (),
) -> Telemetry:
    """The SDK's providers for this process, or `DISABLED` when telemetry is off.

    Tests and benchmarks pass in-memory processors and readers.
    """
    if not settings.telemetry:
        return DISABLED
    # Imported here: the SDK and the exporters cost start-up time that only services pay.
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter
    from opentelemetry.sdk.metrics import MeterProvider as SdkMeterProvider
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from prometheus_client import CollectorRegistry

    attributes = {"service.instance.id": settings.worker_id}
    if not os.environ.get("OTEL_SERVICE_NAME"):
        attributes["service.name"] = "orchestrator"
    resource = Resource.create(attributes)
    registry = CollectorRegistry(auto_describe=True)
    processors = list(span_processors)
    readers = [*metric_readers, PrometheusMetricReader(registry=registry, scope_info_enabled=False)]
    endpoint = settings.otlp_endpoint or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    if endpoint:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        base = endpoint.rstrip("/")
        processors.append(BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{base}/v1/traces")))
        readers.append(
            PeriodicExportingMetricReader(OTLPMetricExporter(endpoint=f"{base}/v1/metrics"))
        )
    tracer_provider = None
    if processors:
        tracer_provider = TracerProvider(resource=resource)
        for processor in processors:
            tracer_provider.add_span_processor(processor)
    # Exemplars cost a reservoir update per measurement; OTEL_METRICS_EXEMPLAR_FILTER
    # turns them back on.
    exemplars = (
        None if os.environ.get("OTEL_METRICS_EXEMPLAR_FILTER") else AlwaysOffExemplarFilter()
    )
    meter_provider = SdkMeterProvider(
        metric_readers=readers, resource=resource, exemplar_filter=exemplars
    )
    return Telemetry(tracer_provider, meter_provider, registry, settings.metrics_interval)
