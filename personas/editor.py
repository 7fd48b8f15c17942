"""The editor persona: an edit from the script and the media, rendered by Shotstack."""

from dataclasses import dataclass
from typing import Any

from engine import RunContext
from personas.provider_step import Job
from personas.state import ProductionState
from providers.shotstack import ShotstackClient

CLIP_SECONDS = 5.0


def build_edit(state: ProductionState, callback_url: str) -> dict[str, Any]:
    """A Shotstack Edit: the script as a title over each media item in turn."""
    media = [item for item in state.get("media", []) if item.get("url")]
    title = {
        "asset": {"type": "title", "text": state.get("script", state.get("brief", ""))[:200]},
        "start": 0,
        "length": CLIP_SECONDS * max(1, len(media)),
    }
    images = [
        {
            "asset": {"type": "image", "src": item["url"]},
            "start": CLIP_SECONDS * i,
            "length": CLIP_SECONDS,
        }
        for i, item in enumerate(media)
    ]
    return {
        "timeline": {"background": "#000000", "tracks": [{"clips": [title]}, {"clips": images}]},
        "output": {"format": "mp4", "resolution": "hd"},
        "callback": callback_url,
    }


@dataclass(frozen=True)
class ShotstackRenderStep:
    shotstack: ShotstackClient
    callback_url: str
    persona: str = "editor"
    provider: str = "shotstack"
    artifact_type: str = "render"

    async def submit(self, state: ProductionState, ctx: RunContext, key: str) -> str:
        edit = build_edit(state, ctx.callback_url(self.callback_url, key))
        return await self.shotstack.render(edit, idempotency_key=key, run_id=ctx.run_id)

    async def find(self, state: ProductionState, ctx: RunContext, key: str) -> str | None:
        # Shotstack cannot look a render up by our key; its callback names it.
        return await ctx.callback_job(self.provider, key)

    @property
    def calls_back(self) -> bool:
        return True

    def settled(self, state: ProductionState, job_id: str) -> Job | None:
        return None  # a render is done when the provider says so

    async def check(self, job_id: str, ctx: RunContext) -> Job:
        render = await self.shotstack.get_render(job_id, run_id=ctx.run_id)
        return Job(
            done=render.done,
            succeeded=render.succeeded,
            url=render.url,
            error=render.error,
            metadata={"render_id": job_id, "status": render.status},
        )

    def finished(self, state: ProductionState, artifact: dict[str, Any]) -> dict[str, Any]:
        return {"render": {"url": artifact["url"], "render_id": artifact["provider_job_id"]}}
