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
    # The SQLite file its jobs, files, due webhooks and call log survive a restart in;
    # None keeps them in memory (a sandbox no test restarts).
    state_file: Path | None = None
