"""The publisher persona: posts the rendered video through upload-post, never twice.

Our idempotency key is upload-post's `request_id`. A publish whose outcome is
unknown (the worker died during the call) asks upload-post for that request
before posting again; if upload-post cannot say, the run pauses at the
`reconcile` gate and a person decides.

An approved `publish_at` still ahead is met one of two ways, decided once by the
`publisher_hold` node before the post: upload-post schedules the post
(`scheduled_date`) when it can schedule every platform of the run and there is a
minute's notice, and the step ends as soon as upload-post holds it; otherwise the
run sleeps in that node until `publish_at` and then posts at once. A `publish_at`
already past posts at once.
"""

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from engine import RunContext, ask, sleep
from personas.provider_step import Job
from personas.state import ProductionState, platforms_of
from providers.errors import ProviderError
from providers.upload_post import UploadPostClient, schedule_text

RECONCILE_GATE = "reconcile"
# With less notice the time might pass before upload-post reads it: the run waits instead.
SCHEDULE_NOTICE = timedelta(minutes=1)


@dataclass(frozen=True)
class UploadPostStep:
    upload_post: UploadPostClient
    user: str
    schedulable: frozenset[str] = frozenset()  # platforms upload-post posts at a time given
    persona: str = "publisher"
    provider: str = "upload-post"
    artifact_type: str = "publication"

    def hold(self, state: ProductionState) -> dict[str, Any]:
        """The `publisher_hold` node: leave `publish_at` to upload-post, or sleep until it.

        The sleep is the node's only pause and nothing before it has an effect: on
        waking the node runs again from its first line, finds the time come, and
        goes on to post at once.
        """
        publish_at, now = _time(state.get("publish_at")), datetime.now(UTC)
        if publish_at is not None and publish_at > now:
            notice = publish_at - now
            if set(platforms_of(state)) <= self.schedulable and notice >= SCHEDULE_NOTICE:
                return {"scheduled_for": publish_at.isoformat()}
            sleep(until=publish_at)
        return {"scheduled_for": None}

    async def submit(self, state: ProductionState, ctx: RunContext, key: str) -> str:
        upload = await self.upload_post.upload(
            user=self.user,
            platforms=platforms_of(state),
            video_url=state.get("render", {}).get("url") or "",
            title=(state.get("brief") or ctx.project)[:100],
            description=state.get("script"),
            request_id=key,
            scheduled_date=_scheduled_for(state),
            run_id=ctx.run_id,
        )
        return upload.request_id

    def settled(self, state: ProductionState, job_id: str) -> Job | None:
        """A scheduled post is done for the run once upload-post holds it: it goes out later.

        Asked again on a re-executed submit, after the time this says None, and the
        step waits for the post like any other (upload-post has posted it by then).
        """
        scheduled_for = _scheduled_for(state)
        if scheduled_for is None:
            return None
        metadata = {
            "request_id": job_id,
            "status": "scheduled",
            "scheduled_for": schedule_text(scheduled_for),
            "platforms": platforms_of(state),
        }
        return Job(done=True, succeeded=True, metadata=metadata)

    @property
    def calls_back(self) -> bool:
        return False  # `find` asks upload-post by our key: its answer is final

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


def _time(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def _scheduled_for(state: ProductionState) -> datetime | None:
    """The time upload-post is to post at, while it is ahead: a retry after it posts now."""
    scheduled_for = _time(state.get("scheduled_for"))
    return (
        scheduled_for if scheduled_for is not None and scheduled_for > datetime.now(UTC) else None
    )
