"""How a sandbox is started: webhook secrets, where upload-post webhooks go, job latency,
where it keeps what it accepted."""

from dataclasses import dataclass
from pathlib import Path


@dataclass
class SandboxConfig:
    kie_webhook_secret: str | None = None  # sign kie callbacks when set
    upload_post_webhook_secret: str | None = None  # sign upload-post webhooks when set
    upload_post_webhook_url: str | None = None  # where upload_completed webhooks go
    job_latency: float = 0.2  # seconds from submit until a job is done
    # A webhook the receiver does not take is POSTed again, `webhook_retry_delay` times
    # the attempt number later, up to `webhook_attempts` times: Shotstack documents ten,
    # and the default schedule (22.5 s in all) outlasts a database restart behind the
    # receiver, as the providers' retries do.
    webhook_attempts: int = 10
    webhook_retry_delay: float = 0.5
    # The SQLite file its jobs, files, due webhooks and call log survive a restart in;
    # None keeps them in memory (a sandbox no test restarts).
    state_file: Path | None = None
