"""The generic durable runtime: runs the LangGraph graphs an App registers to completion.

    from engine import App, Workflow, ask

Exported lazily: `orchestrator --help` and the CLI's quick commands do not pay for
importing LangGraph.
"""

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engine.app import App, Service
    from engine.settings import Config, Settings
    from engine.waits import Decision, ask
    from engine.workflow import Gate, RunContext, Workflow

_EXPORTS = {
    "App": "engine.app",
    "Service": "engine.app",
    "Config": "engine.settings",
    "Settings": "engine.settings",
    "Decision": "engine.waits",
    "ask": "engine.waits",
    "Gate": "engine.workflow",
    "RunContext": "engine.workflow",
    "Workflow": "engine.workflow",
}
__all__ = [
    "App",
    "Config",
    "Decision",
    "Gate",
    "RunContext",
    "Service",
    "Settings",
    "Workflow",
    "ask",
]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'engine' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
