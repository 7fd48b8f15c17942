"""What a product gives the engine: an App, named by `ORCHESTRATOR_APP=module:attribute`.

The smallest App is its workflows:

    from engine import App, Workflow
    app = App(workflows=[Workflow(name="x", version="1", graph=compiled_graph)])

A product adds what its processes need besides: its settings classes (read from
the same `ORCHESTRATOR_*` environment and `.env` as the engine's), the verifiers
of the webhooks its providers send, and services that `orchestrator up` starts
beside the daemon and the API (and `orchestrator service NAME` starts alone), and
the limits its providers and projects keep to across all daemons (`Limits`).
"""

import logging
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field, replace
from importlib.metadata import entry_points
from typing import Any

from pydantic_settings import BaseSettings

from engine.references import load_reference
from engine.runtime.limits import Limits
from engine.runtime.workflow import Gate, Workflow
from engine.settings import Config, Settings, read
from engine.verifiers import Verifier

log = logging.getLogger(__name__)

APP_ENTRY_POINTS = "orchestrator.apps"


def _always(_: Config) -> bool:
    return True


@dataclass(frozen=True)
class Service:
    """A server the App adds to its processes: `run` serves until cancelled."""

    name: str
    run: Callable[[Config], Coroutine[Any, Any, None]]
    description: str = ""
    # Whether `orchestrator up` starts it with this configuration.
    wanted: Callable[[Config], bool] = _always
    # Called by `orchestrator up` before anything starts, when the service is wanted:
    # the configuration every part of that process then shares (say, a secret made up
    # for the service to sign with and the API to verify).
    prepare: Callable[[Config], Config] | None = None


@dataclass(frozen=True)
class App:
    workflows: Sequence[Workflow]
    settings: Sequence[type[BaseSettings]] = ()
    # The ingress's verifiers by provider name (`/webhooks/{provider}`); none: no ingress.
    webhooks: Callable[[Config], Mapping[str, Verifier]] | None = None
    services: Sequence[Service] = ()
    # Where each run's gates and end are POSTed when its creator names no webhook
    # (ORCHESTRATOR_RUN_WEBHOOK_DEFAULT overrides it): docs/flow-control.md.
    default_webhook: str | None = None
    # Across all daemons (docs/flow-control.md#limits), or a function of the settings
    # that gives them; the settings replace them provider by provider.
    limits: Limits | Callable[[Config], Limits] = field(default_factory=Limits)
    # Origins the console may show images and video from with these settings, besides
    # https: and ORCHESTRATOR_CONSOLE_MEDIA_SOURCES (say, a loopback server of the App's).
    media_sources: Callable[[Config], Sequence[str]] | None = None
    by_name: Mapping[str, Workflow] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.workflows:
            raise ValueError("an App needs at least one workflow")
        names = [workflow.name for workflow in self.workflows]
        if duplicate := next((name for name in names if names.count(name) > 1), None):
            raise ValueError(f"the App has two workflows named {duplicate!r}")
        object.__setattr__(self, "by_name", {w.name: w for w in self.workflows})

    def console_media(self, config: Config) -> list[str]:
        """Every origin the console's pages may load media from, besides https:."""
        own = list(self.media_sources(config)) if self.media_sources is not None else []
        return list(dict.fromkeys([*config.engine.console_media_sources, *own]))

    @property
    def default_workflow(self) -> str:
        """What a run is created with when it names no workflow: the first one."""
        return self.workflows[0].name

    def gate(self, workflow: str, name: str) -> Gate | None:
        """The spec of gate `name` of `workflow`, if the App declares one."""
        declared = self.by_name.get(workflow)
        return declared.gate(name) if declared is not None else None

    def gate_names(self) -> list[str]:
        """Every gate the App's workflows declare, each once, in declaration order."""
        return list(dict.fromkeys(g.name for w in self.workflows for g in w.gates))

    def service(self, name: str) -> Service:
        found = next((service for service in self.services if service.name == name), None)
        if found is None:
            known = ", ".join(service.name for service in self.services) or "none"
            raise ValueError(f"the App has no service {name!r} (it has: {known})")
        return found

    def limits_for(self, config: Config) -> Limits:
        """The limits this App keeps to with `config`: its own, the settings' instead
        where they name a provider (or a project limit)."""
        declared = self.limits(config) if callable(self.limits) else self.limits
        return declared.overridden(config.engine)

    def configure(self, engine: Settings) -> Config:
        """The engine's settings with one instance of each of the App's settings classes
        (a value one refuses: `BadSetting`, naming the variable)."""
        return Config(engine, {kind: read(kind) for kind in self.settings})

    @asynccontextmanager
    async def opened(self, config: Config) -> AsyncIterator[dict[str, Workflow]]:
        """The workflows by name, each graph built, until the block ends (then each
        workflow's resources are closed, the last opened first)."""
        async with AsyncExitStack() as stack:
            yield {
                w.name: await stack.enter_async_context(w.opened(config)) for w in self.workflows
            }


def load_app(settings: Settings) -> App:
    """The App `settings.app` names (unset: the one installed App); with the deprecated
    `workflows` setting, its workflows replaced by the ones those references build."""
    reference = settings.app or _installed_app()
    app = load_reference(reference, "ORCHESTRATOR_APP")
    if not isinstance(app, App):
        raise ValueError(f"ORCHESTRATOR_APP: {reference!r} is not an engine.App")
    if settings.workflows is None:
        return app
    log.warning(
        "ORCHESTRATOR_WORKFLOWS is deprecated: name an App with ORCHESTRATOR_APP",
        extra={"action": "deprecated_setting"},
    )
    return replace(app, workflows=[_built(n, r) for n, r in settings.workflows.items()])


def _installed_app() -> str:
    """The reference a distribution registers in the `orchestrator.apps` entry point
    group: how the engine finds the product's App without naming it."""
    found = entry_points(group=APP_ENTRY_POINTS)
    if len(found) != 1:
        names = ", ".join(sorted(point.value for point in found)) or "none is installed"
        raise ValueError(
            f"ORCHESTRATOR_APP: unset, and not one App in the {APP_ENTRY_POINTS!r} entry "
            f"points ({names}): set it to 'module:attribute'"
        )
    return next(iter(found)).value


def _built(name: str, reference: str) -> Workflow:
    """A workflow from a reference to one, or to a zero-argument factory of one."""
    found: Any = load_reference(reference, f"workflow {name!r}")
    workflow = found if isinstance(found, Workflow) else found()
    if not isinstance(workflow, Workflow):
        raise ValueError(f"workflow {name!r}: {reference} is not an engine.Workflow")
    if workflow.name != name:
        raise ValueError(
            f"workflow {name!r}: {reference} builds a workflow named {workflow.name!r}"
        )
    return workflow
