"""The publisher persona: posts the rendered video through upload-post, never twice.

Our idempotency key is upload-post's `request_id`. A publish whose outcome is
unknown (the worker died during the call) asks upload-post for that request
before posting again; if upload-post cannot say, the run pauses at the
`reconcile` gate and a person decides.
"""

from dataclasses import dataclass
from typing import Any

from engine import RunContext, ask
from personas.provider_step import Job
from personas.state import ProductionState
from providers.errors import ProviderError
from providers.upload_post import UploadPostClient

RECONCILE_GATE = "reconcile"
DEFAULT_PLATFORMS = ("tiktok",)


@dataclass(frozen=True)
class UploadPostStep:
    upload_post: UploadPostClient
    user: str
    persona: str = "publisher"
    provider: str = "upload-post"
    artifact_type: str = "publication"

    async def submit(self, state: ProductionState, ctx: RunContext, key: str) -> str:
        upload = await self.upload_post.upload(
            user=self.user,
            platforms=list(state.get("platforms") or DEFAULT_PLATFORMS),
            video_url=state.get("render", {}).get("url") or "",
            title=(state.get("brief") or ctx.project)[:100],
            description=state.get("script"),
            request_id=key,
            run_id=ctx.run_id,
        )
        return upload.request_id

    async def find(self, state: ProductionState, ctx: RunContext, key: str) -> str | None:
        try:
            status = await self.upload_post.status(key, run_id=ctx.run_id)
        except ProviderError as error:
            decision = ask(RECONCILE_GATE, request_id=key, reason=str(error))
            # Approved: a person checked the channels and found no post — post it.
            # Rejected: it is out there — treat the request as the post.
            return None if decision.approved else key
        return key if status.exists else None

    async def check(self, job_id: str, ctx: RunContext) -> Job:
        status = await self.upload_post.status(job_id, run_id=ctx.run_id)
        urls = [result.url for result in status.results if result.url]
        return Job(
            done=status.done,
            succeeded=status.succeeded,
            url=urls[0] if urls else None,
            error="; ".join(r.error for r in status.results if r.error) or status.status,
            metadata={
                "request_id": job_id,
                "status": status.status,
                "results": [
                    {
                        "platform": r.platform,
                        "success": r.success,
                        "url": r.url,
                        "post_id": r.post_id,
                        "error": r.error,
                    }
                    for r in status.results
                ],
            },
        )

    def finished(self, state: ProductionState, artifact: dict[str, Any]) -> dict[str, Any]:
        return {"publication": {"url": artifact["url"], **artifact["metadata"]}}
