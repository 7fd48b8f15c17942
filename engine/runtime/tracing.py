"""A run's trace: a span per execution, per LangGraph node, and per provider request.

How the context flows:
- Across pauses and restarts, through `runs.trace_context`: a run's first
  execution stores its span as a W3C traceparent (with the status it ends in),
  and every later execution (after a gate, a provider wait, a restart, on
  another worker) starts its span as a child of it: the whole run is one trace.
- Into nodes, through a context variable: `execution()` sets `_current` for
  the run's task and makes the execution's span current; LangGraph copies the
  context into every node's task, where `TracedNode` (each node of the
  executor's graphs is wrapped in one) opens the node's span as a child of the
  execution's and makes it current while the node runs.
- Into provider requests, through OpenTelemetry's own context: the node's span
  is current where a node makes a request, so `provider_call`'s span is its child.

Why wrap the nodes rather than pass a LangChain callback handler in the run's
config: with any handler in the config, LangChain dispatches the start and end
of every runnable in the graph, each end in a task of its own. On the
benchmark's reference graph (`bench.telemetry_overhead`, spans off) the handler
added about 1.3 ms of CPU per run, the wrapper 0.3 ms. And a node's span is
then simply current where the node runs, rather than found again through
LangChain's config.
"""

import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from langchain_core.runnables import Runnable, RunnableConfig
from langgraph.errors import GraphBubbleUp, GraphInterrupt
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from engine.observability.telemetry import Telemetry
from engine.runtime.waits import GateWait, UnclaimableWait, parse_wait
from engine.runtime.workflow import Workflow

PROPAGATOR = TraceContextTextMapPropagator()


class RunTrace:
    """One execution of a run: its span, and what its nodes' spans carry."""

    def __init__(self, telemetry: Telemetry, span: Span, attributes: dict[str, str]) -> None:
        self.telemetry = telemetry
        self.span = span
        self.context = trace.set_span_in_context(span, Context())
        self.attributes = attributes
        # The traceparent to store with the run, when this execution began its trace.
        self.started: dict[str, str] | None = None

    def failed(self, error: BaseException) -> None:
        self.span.record_exception(error)
        self.span.set_status(StatusCode.ERROR, f"{type(error).__name__}: {error}")


class _Untraced(RunTrace):
    """What `execution()` gives when telemetry is off: nothing to call, nothing to store."""

    def __init__(self) -> None:
        self.started = None

    def failed(self, error: BaseException) -> None:
        pass


UNTRACED = _Untraced()
_current: ContextVar[RunTrace | None] = ContextVar("run_trace", default=None)


@contextmanager
def execution(
    telemetry: Telemetry,
    *,
    run_id: str,
    project: str,
    workflow: str,
    stored: Mapping[str, str] | None,
    approval: Mapping[str, Any] | None,
) -> Iterator[RunTrace]:
    """The span of one execution, current while the block runs, in the run's stored trace."""
    if not telemetry.enabled:
        yield UNTRACED
        return
    attributes = {"run_id": run_id, "project": project, "workflow": workflow}
    if approval is not None:
        attributes["gate"] = approval["gate"]
        # The approval is consumed by this execution's first write, moments from now.
        waited = datetime.now(UTC) - datetime.fromisoformat(approval["created_at"])
        telemetry.approval_wait.record(waited.total_seconds(), {"gate": approval["gate"]})
    # A run without a stored context begins a trace: an empty parent, not whatever is current.
    parent = PROPAGATOR.extract(stored) if stored else Context()
    span = telemetry.tracer.start_span("run", parent, attributes=attributes)
    run = RunTrace(telemetry, span, attributes)
    if not stored and span.get_span_context().is_valid:
        run.started = {}
        PROPAGATOR.inject(run.started, run.context)
    token = _current.set(run)
    try:
        with trace.use_span(span, end_on_exit=True):
            yield run
    finally:
        _current.reset(token)


class TracedNode(Runnable[Any, Any]):
    """A LangGraph node's runnable, wrapped: a span and a duration per execution.

    It runs inside the task LangGraph gives the node, so the span is current
    for the node's body: a provider request made there is its child.
    """

    def __init__(self, node: str, bound: Runnable[Any, Any]) -> None:
        self.name = self.node = node
        self.bound = bound

    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        return self.bound.invoke(input, config, **kwargs)

    async def ainvoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        run = _current.get()
        if run is None:  # not in an execution (a graph run by hand)
            return await self.bound.ainvoke(input, config, **kwargs)
        span = run.telemetry.tracer.start_span(
            self.node, run.context, attributes={**run.attributes, "langgraph.node": self.node}
        )
        started, outcome = time.perf_counter(), "ok"
        try:
            with trace.use_span(span, record_exception=False, set_status_on_exception=False):
                return await self.bound.ainvoke(input, config, **kwargs)
        except GraphInterrupt as interrupt:
            outcome = "interrupted"
            if gate := _gate(interrupt):
                span.set_attribute("gate", gate)
                run.span.set_attribute("gate", gate)
            raise
        except GraphBubbleUp:  # a Command for a parent graph: not a failure
            raise
        except BaseException as error:
            outcome = "error"
            span.record_exception(error)
            span.set_status(StatusCode.ERROR, f"{type(error).__name__}: {error}")
            raise
        finally:
            span.end()
            run.telemetry.step_duration.record(
                time.perf_counter() - started,
                {"workflow": run.attributes["workflow"], "node": self.node, "outcome": outcome},
            )


def _gate(interrupt: GraphInterrupt) -> str | None:
    for waiting in interrupt.args[0] if interrupt.args else ():
        try:
            wait = parse_wait(getattr(waiting, "value", None))
        except UnclaimableWait:
            continue
        if isinstance(wait, GateWait):
            return wait.gate
    return None


def traced(workflows: Mapping[str, Workflow]) -> dict[str, Workflow]:
    """The workflows with every node wrapped in a `TracedNode` (LangGraph's own
    `__start__` and the like excepted)."""
    return {
        name: replace(
            workflow,
            graph=workflow.compiled.copy(
                update={
                    "nodes": {
                        node: spec
                        if node.startswith("__")
                        else spec.copy({"bound": TracedNode(node, spec.bound)})
                        for node, spec in workflow.compiled.nodes.items()
                    }
                }
            ),
        )
        for name, workflow in workflows.items()
    }


class ProviderCall:
    """One request attempt's span: say what the provider answered."""

    def __init__(self, span: Span | None) -> None:
        self._span = span

    def responded(self, status_code: int) -> None:
        if self._span is not None:
            self._span.set_attribute("http.response.status_code", status_code)


@contextmanager
def provider_call(
    provider: str,
    operation: str,
    method: str,
    *,
    url: str,
    server_address: str,
    server_port: int | None,
    resend_count: int = 0,
) -> Iterator[ProviderCall]:
    """A CLIENT span for one HTTP attempt, under the node that makes it; a failure
    (an exception, with the provider's `status_code` if it has one) is counted."""
    run = _current.get()
    if run is None:  # telemetry off, or no run executing here
        yield ProviderCall(None)
        return
    telemetry = run.telemetry
    span = None
    if telemetry.tracing:
        attributes: dict[str, str | int] = {
            "http.request.method": method,
            "url.full": url,
            "server.address": server_address,
            "provider": provider,
            "provider.operation": operation,
            "run_id": run.attributes["run_id"],
        }
        if server_port is not None:
            attributes["server.port"] = server_port
        if resend_count:
            attributes["http.request.resend_count"] = resend_count
        # The current span: the node's that makes the request (`TracedNode`).
        span = telemetry.tracer.start_span(
            f"{method} {operation}", None, SpanKind.CLIENT, attributes
        )
    try:
        yield ProviderCall(span)
    except Exception as error:
        status = getattr(error, "status_code", None)
        telemetry.provider_errors.add(
            1, {"provider": provider, "status_code": str(status) if status else "none"}
        )
        if span is not None:
            span.set_attribute("error.type", str(status) if status else type(error).__name__)
            span.set_status(StatusCode.ERROR, str(error))
        raise
    finally:
        if span is not None:
            span.end()
