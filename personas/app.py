"""The production App: what `ORCHESTRATOR_APP` names by default (`personas.app:app`)."""

from datetime import timedelta

from engine import App, Config, Limits, ProviderLimit
from gates.settings import GateSettings
from personas.graph import PRODUCTION
from personas.settings import PersonaSettings
from providers.config import has_key
from providers.sandbox.service import SANDBOX, media_sources
from providers.settings import ProviderSettings
from providers.webhooks import Verifier, verifiers


def _verifiers(config: Config) -> dict[str, Verifier]:
    return verifiers(config[ProviderSettings])


def _limits(config: Config) -> Limits:
    """What the real providers allow all our daemons together; the sandbox allows
    anything. kie.ai: 20 new requests per 10 s per key (its "Getting Started" page);
    counted here over every request, polls included, which keeps well inside it.
    `ORCHESTRATOR_PROVIDER_LIMITS` sets others (a plan's job concurrency, say)."""
    if not has_key(config[ProviderSettings].kie_api_key):
        return Limits()
    return Limits({"kie": ProviderLimit(requests=20, per=timedelta(seconds=10))})


app = App(
    workflows=[PRODUCTION],
    settings=[ProviderSettings, PersonaSettings, GateSettings],
    webhooks=_verifiers,
    services=[SANDBOX],
    limits=_limits,
    media_sources=media_sources,
)
