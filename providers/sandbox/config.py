"""How a sandbox is started: webhook secrets, where upload-post webhooks go, job latency."""

from dataclasses import dataclass


@dataclass
class SandboxConfig:
    kie_webhook_secret: str | None = None  # sign kie callbacks when set
    upload_post_webhook_secret: str | None = None  # sign upload-post webhooks when set
    upload_post_webhook_url: str | None = None  # where upload_completed webhooks go
    job_latency: float = 0.2  # seconds from submit until a job is done
