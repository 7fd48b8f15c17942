"""The generic durable runtime: runs the LangGraph graphs an App registers to completion.

    from engine import App, Workflow, ask, sleep

Exported lazily: `orchestrator --help` and the CLI's quick commands do not pay for
importing LangGraph.
"""

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engine.app import App, Service
    from engine.runtime.deadlines import Deadline, GateTimedOut
    from engine.runtime.limits import Limits, pause_requests, wait_for_request
    from engine.runtime.waits import Decision, LimitWait, ProviderWait, ask, pause, sleep
    from engine.runtime.workflow import Gate, Graph, RunContext, Workflow
    from engine.settings import Config, Duration, Durations, ProviderLimit, Settings

_EXPORTS = {
    "App": "engine.app",
    "Service": "engine.app",
    "Config": "engine.settings",
    "Settings": "engine.settings",
    "Duration": "engine.settings",
    "Durations": "engine.settings",
    "ProviderLimit": "engine.settings",
    "Deadline": "engine.runtime.deadlines",
    "GateTimedOut": "engine.runtime.deadlines",
    "Limits": "engine.runtime.limits",
    "pause_requests": "engine.runtime.limits",
    "wait_for_request": "engine.runtime.limits",
    "LimitWait": "engine.runtime.waits",
    "Decision": "engine.runtime.waits",
    "ProviderWait": "engine.runtime.waits",
    "ask": "engine.runtime.waits",
    "pause": "engine.runtime.waits",
    "sleep": "engine.runtime.waits",
    "Gate": "engine.runtime.workflow",
    "Graph": "engine.runtime.workflow",
    "RunContext": "engine.runtime.workflow",
    "Workflow": "engine.runtime.workflow",
}
__all__ = [
    "App",
    "Config",
    "Deadline",
    "Decision",
    "Duration",
    "Durations",
    "Gate",
    "GateTimedOut",
    "Graph",
    "LimitWait",
    "Limits",
    "ProviderLimit",
    "ProviderWait",
    "RunContext",
    "Service",
    "Settings",
    "Workflow",
    "ask",
    "pause",
    "pause_requests",
    "sleep",
    "wait_for_request",
]


if not TYPE_CHECKING:  # mypy reads the imports above, so a name not exported is an error

    def __getattr__(name: str) -> Any:
        if name not in _EXPORTS:
            raise AttributeError(f"module 'engine' has no attribute {name!r}")
        return getattr(importlib.import_module(_EXPORTS[name]), name)
