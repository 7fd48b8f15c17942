"""The production App: what `ORCHESTRATOR_APP` names by default (`personas.app:app`)."""

from engine import App, Config
from gates.settings import GateSettings
from personas.graph import PRODUCTION
from personas.settings import PersonaSettings
from providers.sandbox.service import SANDBOX
from providers.settings import ProviderSettings
from providers.webhooks import Verifier, verifiers


def _verifiers(config: Config) -> dict[str, Verifier]:
    return verifiers(config[ProviderSettings])


app = App(
    workflows=[PRODUCTION],
    settings=[ProviderSettings, PersonaSettings, GateSettings],
    webhooks=_verifiers,
    services=[SANDBOX],
)
