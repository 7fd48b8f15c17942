"""The providers' settings: keys, URLs and timeouts, from `ORCHESTRATOR_*` like the engine's.

A provider with no API key talks to the sandbox provider server on loopback.
"""

from pydantic import Field, PositiveFloat, PositiveInt, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class ProviderSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="ORCHESTRATOR_", env_file=".env", extra="ignore", populate_by_name=True
    )

    kie_base_url: str | None = None
    kie_api_key: SecretStr | None = None
    kie_webhook_secret: SecretStr | None = None
    shotstack_base_url: str | None = None
    shotstack_api_key: SecretStr | None = None
    shotstack_env: str = Field(default="stage", pattern="^(stage|v1)$")
    upload_post_base_url: str | None = None
    upload_post_api_key: SecretStr | None = None
    upload_post_webhook_secret: SecretStr | None = None
    upload_post_user: str = "orchestrator"
    upload_post_schedulable_platforms: list[str] = Field(
        # The platforms of upload-post's video upload, whose `scheduled_date` it documents.
        default=[
            "tiktok",
            "instagram",
            "youtube",
            "linkedin",
            "facebook",
            "x",
            "threads",
            "pinterest",
            "bluesky",
        ],
        description="platforms upload-post posts at a scheduled_date; for others the run waits",
    )
    provider_timeout: PositiveFloat = Field(default=30.0, description="seconds per HTTP request")
    provider_max_attempts: PositiveInt = 5
    provider_poll_interval: PositiveFloat = Field(
        default=30.0, description="seconds a provider wait sleeps before asking for the job"
    )
    provider_job_timeout: PositiveFloat = Field(
        default=3600.0, description="seconds before a provider job that never ends fails the run"
    )
    provider_adopt_window: PositiveFloat = Field(
        default=900.0,
        description="seconds a step whose submit was cut off waits for the provider's callback "
        "about it (kie.ai, Shotstack) before submitting again",
    )
    sandbox_port: int = Field(
        default=8100, ge=1, le=65535, description="the sandbox provider server's loopback port"
    )

    @property
    def uses_sandbox(self) -> bool:
        """No provider key is configured: the providers are the local sandbox."""
        keys = (self.kie_api_key, self.shotstack_api_key, self.upload_post_api_key)
        return all(key is None for key in keys)
