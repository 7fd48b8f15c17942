"""All configuration, from `ORCHESTRATOR_*` environment variables or a `.env` file."""

import os
import socket
from pathlib import Path
from typing import Literal

from pydantic import (
    AliasChoices,
    Field,
    PositiveFloat,
    PositiveInt,
    SecretStr,
    field_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="ORCHESTRATOR_", env_file=".env", extra="ignore", populate_by_name=True
    )

    database_url: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("ORCHESTRATOR_DATABASE_URL", "DATABASE_URL", "database_url"),
        description="PostgreSQL URL; unset means the embedded server under data_dir.",
    )
    data_dir: Path = Path(".orchestrator")
    worker_id: str = Field(default_factory=_default_worker_id)
    concurrency: PositiveInt = 8
    lease_ttl: PositiveFloat = Field(default=30.0, description="seconds a claim lasts unrenewed")
    poll_interval: PositiveFloat = Field(default=1.0, description="seconds between polls")
    listen: bool = Field(default=True, description="wake on NOTIFY; off means poll only")
    shutdown_grace: PositiveFloat = Field(default=20.0, description="seconds to drain on SIGTERM")
    max_attempts: PositiveInt = Field(default=3, description="attempts of a failing step")
    db_outage_tolerance: PositiveFloat = Field(
        default=120.0, description="seconds a step waits out a lost database before giving up"
    )
    retry_backoff: PositiveFloat = Field(default=0.5, description="first retry delay, seconds")
    retry_backoff_max: PositiveFloat = 10.0
    pool_size: PositiveInt = 10
    prepare_threshold: int | None = Field(
        default=5, description="None disables prepared statements (needed behind pgbouncer)"
    )
    workflows: dict[str, str] = Field(
        default={"production": "personas.graph:production_workflow"},
        description="workflow name -> 'module:factory' returning an engine.Workflow",
    )
    # HTTP: the API (webhook ingress, runs) and the sandbox provider server.
    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8000, ge=1, le=65535)
    api_token: SecretStr | None = Field(
        default=None,
        description="the bootstrap admin's bearer token; set, every endpoint needs an identity",
    )
    session_secret: SecretStr | None = Field(
        default=None,
        description="signs console session cookies; default: derived from api_token",
    )
    session_ttl: PositiveFloat = Field(
        default=12 * 3600.0, description="seconds a console sign-in lasts"
    )
    auth_failures: PositiveInt = Field(
        default=10, description="failed sign-ins per client or identity before 429"
    )
    auth_failure_window: PositiveFloat = Field(
        default=60.0, description="seconds over which auth_failures are counted"
    )
    trusted_proxies: list[str] = Field(
        default=[],
        description="proxy addresses (or CIDRs) whose X-Forwarded-For/-Proto are believed",
    )
    allowed_hosts: list[str] = Field(
        default=[], description="Host names served besides loopback when no token is set"
    )
    metrics_public: bool = Field(
        default=False, description="serve /metrics without an identity when tokens are set"
    )
    public_url: str | None = Field(
        default=None,
        description="where providers reach our webhooks; default http://api_host:api_port",
    )
    max_body_bytes: PositiveInt = Field(default=1_048_576, description="largest request body")
    webhook_rate: PositiveFloat = Field(
        default=20.0, description="webhook deliveries per second per provider, per API process"
    )
    webhook_burst: PositiveInt = Field(
        default=200, description="webhook deliveries a provider may send at once before the rate"
    )
    webhook_max_bytes: PositiveInt = Field(
        default=65_536, description="largest webhook body; larger ones get 413 and are not stored"
    )
    webhook_verifiers: str = Field(
        default="providers.webhooks:verifiers",
        description="'module:factory' taking Settings, returning {provider: verifier}",
    )
    sandbox_service: str = Field(
        default="providers.sandbox.service:run",
        description="'module:coroutine(settings)' serving the sandbox providers until cancelled",
    )
    sandbox_port: int = Field(default=8100, ge=1, le=65535)
    health_host: str = Field(
        default="127.0.0.1", description="the daemon's health port's address (0.0.0.0 in pods)"
    )
    health_port: int = Field(
        default=8081, ge=0, le=65535, description="the daemon's /healthz and /readyz; 0 is off"
    )
    # Providers: a provider with no API key talks to the sandbox.
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
    provider_timeout: PositiveFloat = Field(default=30.0, description="seconds per HTTP request")
    provider_max_attempts: PositiveInt = 5
    provider_poll_interval: PositiveFloat = Field(
        default=30.0, description="seconds a provider wait sleeps before asking for the job"
    )
    provider_job_timeout: PositiveFloat = Field(
        default=3600.0, description="seconds before a provider job that never ends fails the run"
    )
    prune_interval: PositiveFloat | None = Field(
        default=None, description="seconds between the daemon's retention runs; unset: never"
    )
    prune_older_than_days: PositiveFloat = Field(
        default=30, description="the daemon prunes runs that finished longer ago than this"
    )
    prune_delete_runs: bool = Field(
        default=False, description="the daemon's retention removes whole runs, not just history"
    )
    telemetry: bool = Field(
        default=True,
        description="metrics at /metrics, traces and metrics to OTLP when an endpoint is set; "
        "false: no OpenTelemetry at all",
    )
    otlp_endpoint: str | None = Field(
        default=None,
        description="OTLP/HTTP base URL (http://collector:4318) for traces and metrics; "
        "unset: OTEL_EXPORTER_OTLP_ENDPOINT, else no traces",
    )
    metrics_interval: PositiveFloat = Field(
        default=15.0, description="seconds between the queries behind the run-count gauges"
    )
    log_level: str = Field(default="INFO", pattern="^(DEBUG|INFO|WARNING|ERROR)$")
    log_format: Literal["auto", "json", "text"] = Field(
        default="auto", description="auto: JSON lines, or text when stderr is a terminal"
    )
    chat_model: str = Field(
        default="offline", description="'offline' or 'module:Class' of a BaseChatModel"
    )

    @field_validator("prepare_threshold", mode="before")
    @classmethod
    def _empty_means_none(cls, value: object) -> object:
        """`ORCHESTRATOR_PREPARE_THRESHOLD=` (empty) turns prepared statements off."""
        return None if isinstance(value, str) and value.strip().lower() in ("", "none") else value

    @property
    def uses_sandbox(self) -> bool:
        """No provider key is configured: the providers are the local sandbox."""
        keys = (self.kie_api_key, self.shotstack_api_key, self.upload_post_api_key)
        return all(key is None for key in keys)

    @property
    def callback_base_url(self) -> str:
        """Where providers deliver webhooks (`/webhooks/{provider}` under it)."""
        return (self.public_url or f"http://{self.api_host}:{self.api_port}").rstrip("/")
