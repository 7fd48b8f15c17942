"""The sandbox as a service of the production App: `orchestrator up` starts it when no
provider key is set, and `orchestrator service sandbox` starts it alone."""

import secrets

from pydantic import SecretStr

from engine import Config, Service
from providers.sandbox.server import SandboxConfig, serve
from providers.settings import ProviderSettings

# The secrets both the sandbox (signing) and the webhook ingress (verifying) read.
WEBHOOK_SECRETS = ("kie_webhook_secret", "upload_post_webhook_secret")


def config_from(config: Config) -> SandboxConfig:
    """Sign webhooks with the secrets our ingress verifies, send them to our API, and
    keep what was accepted under the data dir, one file per port (its URLs name it)."""
    settings = config[ProviderSettings]
    return SandboxConfig(
        kie_webhook_secret=_reveal(settings.kie_webhook_secret),
        upload_post_webhook_secret=_reveal(settings.upload_post_webhook_secret),
        upload_post_webhook_url=config.engine.public_base_url + "/webhooks/upload-post",
        state_file=config.engine.data_dir / f"sandbox-{settings.sandbox_port}.sqlite3",
    )


async def run(config: Config) -> None:
    """Serve until cancelled, on loopback at `ORCHESTRATOR_SANDBOX_PORT`."""
    await serve(config_from(config), "127.0.0.1", config[ProviderSettings].sandbox_port)


def wanted(config: Config) -> bool:
    return config[ProviderSettings].uses_sandbox


def with_made_up_secrets(config: Config) -> Config:
    """The sandbox and the API share the process: sign its webhooks with secrets made up
    now, so they wake runs at once instead of leaving it to the poll."""
    settings = config[ProviderSettings]
    made_up = {
        name: SecretStr(secrets.token_urlsafe(32))
        for name in WEBHOOK_SECRETS
        if getattr(settings, name) is None
    }
    return config.replaced(settings.model_copy(update=made_up))


def media_sources(config: Config) -> list[str]:
    """The console previews the media the sandbox serves from its own loopback port,
    whichever process runs it, when the providers use it."""
    settings = config[ProviderSettings]
    return [f"http://127.0.0.1:{settings.sandbox_port}"] if settings.uses_sandbox else []


SANDBOX = Service(
    name="sandbox",
    run=run,
    description="the kie.ai, Shotstack and upload-post sandbox on loopback",
    wanted=wanted,
    prepare=with_made_up_secrets,
)


def _reveal(secret: SecretStr | None) -> str | None:
    return secret.get_secret_value() if secret is not None else None
