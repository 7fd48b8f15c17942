"""The sandbox as a service of `orchestrator sandbox` and `orchestrator up`."""

from pydantic import SecretStr

from engine.settings import Settings
from providers.sandbox.server import SandboxConfig, serve


def config_from(settings: Settings) -> SandboxConfig:
    """Sign webhooks with the secrets our ingress verifies, and send them to our API."""
    return SandboxConfig(
        kie_webhook_secret=_reveal(settings.kie_webhook_secret),
        upload_post_webhook_secret=_reveal(settings.upload_post_webhook_secret),
        upload_post_webhook_url=settings.callback_base_url + "/webhooks/upload-post",
    )


async def run(settings: Settings) -> None:
    """Serve until cancelled, on loopback at `ORCHESTRATOR_SANDBOX_PORT`."""
    await serve(config_from(settings), "127.0.0.1", settings.sandbox_port)


def _reveal(secret: SecretStr | None) -> str | None:
    return secret.get_secret_value() if secret is not None else None
