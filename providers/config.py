"""Where each provider lives and which key to send: the real API, or the sandbox.

A provider with no API key configured talks to the sandbox provider server on
loopback, so `orchestrator up` and the tests run offline without touching a
real account; configuring a key is what switches that provider to production.
"""

from dataclasses import dataclass

from pydantic import SecretStr

from providers.settings import ProviderSettings

# The sandbox accepts any non-empty key; a fixed one keeps its request log readable.
SANDBOX_API_KEY = SecretStr("sandbox")

KIE_DEFAULT_URL = "https://api.kie.ai"
SHOTSTACK_DEFAULT_URL = "https://api.shotstack.io/edit/{env}"
UPLOAD_POST_DEFAULT_URL = "https://api.upload-post.com"


@dataclass(frozen=True)
class ProviderURLs:
    """Base URLs without a trailing slash; client paths start with `/`."""

    kie: str
    shotstack: str
    upload_post: str


def sandbox_url(settings: ProviderSettings) -> str:
    return f"http://127.0.0.1:{settings.sandbox_port}"


def base_urls(settings: ProviderSettings) -> ProviderURLs:
    sandbox = sandbox_url(settings)
    env = settings.shotstack_env

    def choose(key: SecretStr | None, configured: str | None, real: str, prefix: str) -> str:
        url = (configured or real) if has_key(key) else sandbox + prefix
        return url.rstrip("/")

    return ProviderURLs(
        kie=choose(settings.kie_api_key, settings.kie_base_url, KIE_DEFAULT_URL, "/kie"),
        shotstack=choose(
            settings.shotstack_api_key,
            settings.shotstack_base_url,
            SHOTSTACK_DEFAULT_URL.format(env=env),
            f"/shotstack/edit/{env}",
        ),
        upload_post=choose(
            settings.upload_post_api_key,
            settings.upload_post_base_url,
            UPLOAD_POST_DEFAULT_URL,
            "/upload-post",
        ),
    )


def has_key(configured: SecretStr | None) -> bool:
    """An empty key (`ORCHESTRATOR_KIE_API_KEY=`) counts as unset."""
    return configured is not None and bool(configured.get_secret_value())


def api_key(configured: SecretStr | None) -> SecretStr:
    """The key to send: the configured one, or the sandbox's placeholder."""
    return configured if configured is not None and has_key(configured) else SANDBOX_API_KEY
