"""Chat models for persona text: any LangChain `BaseChatModel`, offline by default."""

import hashlib
import importlib
import re
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, SystemMessage
from langchain_core.outputs import ChatGeneration, ChatResult

from personas.state import CREW

PROPOSE_WORKFLOW = "Propose the personas to run"
_DROP = re.compile(r"\b(?:skip|without|drop|no)\s+(?:the\s+)?(\w+)", re.I)


class OfflineChatModel(BaseChatModel):
    """A deterministic model: the same messages always get the same reply.

    Asked for a workflow, it proposes the whole crew minus any persona the
    brief or feedback says to skip ("skip media", "without editor"); asked for
    anything else, it writes a short text derived from the request.
    """

    @property
    def _llm_type(self) -> str:
        return "orchestrator-offline"

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        system = " ".join(m.text for m in messages if isinstance(m, SystemMessage))
        request = messages[-1].text
        if PROPOSE_WORKFLOW in system:
            dropped = {word.lower() for word in _DROP.findall(request)}
            reply = " -> ".join(p for p in CREW if not dropped & {p, p.split("_")[0]})
        else:
            digest = hashlib.sha256(f"{system}\n{request}".encode()).hexdigest()[:8]
            reply = f"[{digest}] {request.strip()[:400]}"
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=reply))])


def load_chat_model(reference: str) -> BaseChatModel:
    """'offline', or 'module:Class' of an installed chat model package (configured by env)."""
    if reference == "offline":
        return OfflineChatModel()
    module_name, _, class_name = reference.partition(":")
    if not class_name:
        raise ValueError(f"chat_model {reference!r} is neither 'offline' nor 'module:Class'")
    model_class = getattr(importlib.import_module(module_name), class_name)
    model: BaseChatModel = model_class()
    return model
