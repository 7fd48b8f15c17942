"""The engine's configuration, from `ORCHESTRATOR_*` environment variables or a `.env` file.

An App adds its own settings classes (same prefix, same `.env`); `Config` holds them all.
"""

import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Literal, TypeVar

from psycopg import ProgrammingError
from psycopg.conninfo import conninfo_to_dict
from pydantic import (
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PositiveFloat,
    PositiveInt,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict, SettingsError

_DURATION = re.compile(r"^(\d+)([smhd])$")
_ORIGIN = re.compile(
    r"https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?|https?://\[[0-9a-fA-F:]+\](:[0-9]{1,5})?"
)
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_duration(text: str, what: str) -> timedelta:
    """'45s', '30m', '2h', '7d'; ValueError naming `what` for anything else."""
    match = _DURATION.match(text.strip())
    if not match:
        raise ValueError(f"{what}: {text!r} is not a duration like 45s, 30m, 2h or 7d")
    return timedelta(**{_UNITS[match[2]]: int(match[1])})


def _duration(value: object) -> object:
    return parse_duration(value, "duration") if isinstance(value, str) else value


def _durations(value: object) -> object:
    if isinstance(value, str):
        return tuple(parse_duration(part, "duration") for part in value.split(",") if part.strip())
    return value


# Settings' types for durations as people write them: '45s', '30m', '2h', '7d'
# (an App's settings use them too), and a comma-separated list of them ('24h,1h').
Duration = Annotated[timedelta, BeforeValidator(_duration)]
Durations = Annotated[tuple[timedelta, ...], NoDecode, BeforeValidator(_durations)]


class ProviderLimit(BaseModel):
    """What one provider allows all daemons together (docs/flow-control.md#limits): at
    most `concurrent` jobs in flight, and at most `requests` requests in any `per`
    (`{"concurrent": 5, "requests": 20, "per": "10s"}`). Unset: no such limit."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    concurrent: PositiveInt | None = None
    requests: PositiveInt | None = None
    per: Duration | None = None

    @model_validator(mode="after")
    def _window(self) -> "ProviderLimit":
        if (self.requests is None) != (self.per is None):
            raise ValueError('requests and per go together, as in {"requests": 20, "per": "10s"}')
        if self.per is not None and self.per <= timedelta(0):
            raise ValueError(f"per must be longer than 0s, not {self.per}")
        return self


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
    listen_url: SecretStr | None = Field(
        default=None,
        description="PostgreSQL URL the daemon LISTENs on: the server itself when the database "
        "URL is a transaction pooler's (PgBouncer); unset: the database URL",
    )
    shutdown_grace: PositiveFloat = Field(default=20.0, description="seconds to drain on SIGTERM")
    max_attempts: PositiveInt = Field(default=3, description="attempts of a failing step")
    db_outage_tolerance: PositiveFloat = Field(
        default=120.0, description="seconds a step waits out a lost database before giving up"
    )
    retry_backoff: PositiveFloat = Field(default=0.5, description="first retry delay, seconds")
    retry_backoff_max: PositiveFloat = 10.0
    pool_size: PositiveInt = 10
    prepare_threshold: int | None = Field(
        default=5,
        description="executions before psycopg prepares a statement on its connection; "
        "None: never (needed behind PgBouncer in transaction mode)",
    )
    app: str | None = Field(
        default=None,
        description="'module:attribute' of the engine.App this process serves; "
        "unset: the one installed in the 'orchestrator.apps' entry point group",
    )
    workflows: dict[str, str] | None = Field(
        default=None,
        description="deprecated: workflow name -> 'module:factory' returning an engine.Workflow; "
        "set, these replace the App's workflows",
    )
    provider_limits: dict[str, ProviderLimit] = Field(
        default={},
        description="JSON provider name -> its limits across all daemons, replacing the App's "
        'for that provider: {"name": {"concurrent": 5, "requests": 20, "per": "10s"}}',
    )
    project_concurrency: PositiveInt | None = Field(
        default=None,
        description="runs of one project executing at once across all daemons; "
        "unset: the App's (none: no limit)",
    )
    # HTTP: the API (runs, approvals, webhook ingress, console).
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
        description="where people and providers reach this service (console links in "
        "notifications, provider webhooks); default http://api_host:api_port",
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
    health_host: str = Field(
        default="127.0.0.1", description="the daemon's health port's address (0.0.0.0 in pods)"
    )
    health_port: int = Field(
        default=8081, ge=0, le=65535, description="the daemon's /healthz and /readyz; 0 is off"
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
    # Notifications (docs/time.md#notifications): checked when a daemon starts.
    notify_urls: SecretStr | None = Field(
        default=None,
        description="Apprise URLs (slack://, mailto://, json://...), comma- or space-separated; "
        "each is a channel every notification goes to",
    )
    notify_webhook_url: SecretStr | None = Field(
        default=None,
        description="a URL every notification is POSTed to, signed (Standard Webhooks)",
    )
    notify_webhook_secret: SecretStr | None = Field(
        default=None, description="the webhook's signing secret: whsec_ and base64 of 24-64 bytes"
    )
    notify_timeout: PositiveFloat = Field(
        default=10.0, description="seconds one delivery attempt may take"
    )
    notify_max_attempts: PositiveInt = Field(
        default=12, description="attempts of a delivery before it is given up"
    )
    notify_backoff: PositiveFloat = Field(
        default=10.0, description="seconds before a failed delivery's second attempt; doubles"
    )
    notify_backoff_max: PositiveFloat = Field(
        default=3600.0, description="seconds at most between two attempts of a delivery"
    )
    notify_max_age: PositiveFloat = Field(
        default=86400.0, description="seconds after its event a delivery is given up, sent or not"
    )
    # Completion webhooks (docs/flow-control.md#completion-webhooks).
    run_webhook_secret: SecretStr | None = Field(
        default=None,
        description="signs the POSTs to each run's own webhook (Standard Webhooks): whsec_ "
        "and base64 of 24-64 bytes; unset: runs cannot carry a webhook",
    )
    run_webhook_default: str | None = Field(
        default=None,
        max_length=2048,
        description="the webhook of a run created without one (overrides the App's default)",
    )
    run_webhook_allow_private: bool = Field(
        default=False,
        description="allow run webhooks to loopback, link-local and private addresses",
    )
    console_media_sources: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="origins (http://host:port) the console may show images and video from "
        "beside itself and https:, comma-separated; the App may add its own (App.media_sources)",
    )
    log_level: str = Field(default="INFO", pattern="^(DEBUG|INFO|WARNING|ERROR)$")
    log_format: Literal["auto", "json", "text"] = Field(
        default="auto", description="auto: JSON lines, or text when stderr is a terminal"
    )

    @field_validator("console_media_sources", mode="before")
    @classmethod
    def _origins(cls, value: object) -> object:
        """Comma-separated origins, each scheme://host[:port] and nothing else (it goes
        into a Content-Security-Policy header as it is)."""
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if isinstance(value, list):
            for origin in value:
                if not isinstance(origin, str) or not _ORIGIN.fullmatch(origin):
                    raise ValueError(f"{str(origin)[:80]!r} is not an origin like http://host:8100")
        return value

    @field_validator("database_url")
    @classmethod
    def _connection_string(cls, value: SecretStr | None) -> SecretStr | None:
        """A URL or `key=value` string libpq can parse; the error never echoes it."""
        if value is not None:
            try:
                conninfo_to_dict(value.get_secret_value())
            except ProgrammingError:
                raise ValueError(
                    "not a PostgreSQL URL (postgresql://user@host:5432/db) or key=value string"
                ) from None
        return value

    @field_validator("prepare_threshold", mode="before")
    @classmethod
    def _empty_means_none(cls, value: object) -> object:
        """`ORCHESTRATOR_PREPARE_THRESHOLD=` (empty) turns prepared statements off."""
        return None if isinstance(value, str) and value.strip().lower() in ("", "none") else value

    @field_validator(
        "notify_urls",
        "notify_webhook_url",
        "notify_webhook_secret",
        "run_webhook_secret",
        "run_webhook_default",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        """A channel setting left empty (`ORCHESTRATOR_NOTIFY_WEBHOOK_URL=`) is no channel."""
        return None if isinstance(value, str) and not value.strip() else value

    @property
    def public_base_url(self) -> str:
        """Where this service is reached: providers deliver webhooks under it
        (`/webhooks/{provider}`), notifications link to the console under it."""
        return (self.public_url or f"http://{self.api_host}:{self.api_port}").rstrip("/")


Part = TypeVar("Part", bound=BaseSettings)

_UNPARSED = re.compile(r'error parsing value for field "(\w+)" from source "(\w+)"')


class BadSetting(ValueError):
    """A setting no process can run with: the message names the variable (the CLI
    prints it as its one line and exits 2)."""


def read(kind: type[Part]) -> Part:
    """Settings class `kind` read from the environment and its `.env`: the one way every
    process reads settings, the engine's and an App's, so that a value it refuses, JSON
    that does not parse or a `.env` line that is not `NAME=value` is a BadSetting naming
    the variable (or the line), whichever command reads it."""
    _check_env_file(kind)
    try:
        return kind()
    except ValidationError as error:
        raise _refused(kind, error) from None
    except SettingsError as error:
        raise _unparsed(kind, error) from None


def _refused(kind: type[BaseSettings], error: ValidationError) -> BadSetting:
    first = error.errors(include_input=False)[0]
    where = str(first["loc"][0]) if first["loc"] else ""
    message = first["msg"].removeprefix("Value error, ")
    # Inside a JSON setting, where: `(name.concurrent)`.
    inside = ".".join(str(part) for part in first["loc"][1:])
    named = _variable(kind, where) or kind.__name__
    return BadSetting(f"setting {named}{f' ({inside})' if inside else ''}: {message}")


def _variable(kind: type[BaseSettings], where: str) -> str:
    """The variable a field (named by its name or an alias) is read from: the prefix and
    its name, or of its aliases the one that is set (DATABASE_URL)."""
    for name, declared in kind.model_fields.items():
        aliases = declared.validation_alias
        names = [str(n) for n in aliases.choices] if isinstance(aliases, AliasChoices) else []
        if where == name or where in names:
            variables = [n.upper() for n in names if n != name]
            prefix = str(kind.model_config.get("env_prefix") or "")
            return next((v for v in variables if v in os.environ), (prefix + name).upper())
    return where.upper()


def _unparsed(kind: type[BaseSettings], error: SettingsError) -> BadSetting:
    """pydantic-settings decodes list and dict settings as JSON before validating them."""
    found = _UNPARSED.search(str(error))
    if found is None:
        return BadSetting(f"settings of {kind.__name__}: {error}")
    field, source = found.groups()
    where = " (in the .env file)" if source.startswith("DotEnv") else ""
    why = f" ({error.__cause__})" if error.__cause__ is not None else ""
    return BadSetting(
        f"setting {_variable(kind, field)}{where}: not JSON{why}; "
        'this setting takes JSON, e.g. ["a", "b"]'
    )


def _check_env_file(kind: type[BaseSettings]) -> None:
    """python-dotenv skips a line it cannot parse with a warning: the setting on it would
    silently not apply. Refused instead, naming the line (never its text: a secret)."""
    from dotenv.parser import parse_stream

    env_file = kind.model_config.get("env_file")
    if not isinstance(env_file, str | Path) or not Path(env_file).is_file():
        return
    encoding = kind.model_config.get("env_file_encoding") or "utf-8"
    with open(env_file, encoding=encoding) as stream:
        for binding in parse_stream(stream):
            if binding.error:
                raise BadSetting(
                    f"setting file {env_file}, line {binding.original.line}: not NAME=value "
                    "(a quote left open, or a line that is not a setting or a # comment)"
                )


@dataclass(frozen=True)
class Config:
    """The settings a process runs with: the engine's, and one instance of each
    settings class its App declares (read from the same environment and `.env`)."""

    engine: Settings
    parts: Mapping[type[BaseSettings], BaseSettings] = field(default_factory=dict)

    def __getitem__(self, kind: type[Part]) -> Part:
        part = self.parts.get(kind)
        if not isinstance(part, kind):
            raise KeyError(f"{kind.__name__} is not among the settings the App declares")
        return part

    def replaced(self, part: BaseSettings) -> "Config":
        """This configuration with `part` instead of the App's part of its class."""
        return replace(self, parts={**self.parts, type(part): part})
