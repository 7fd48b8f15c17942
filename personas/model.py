"""Chat models for persona text: any LangChain `BaseChatModel`, offline by default.

`load_chat_model` builds what `PersonaSettings` names for a persona (docs/models.md):
'offline' imports no provider package; 'provider:model' goes through LangChain's
`init_chat_model` (the optional extras install it); 'module:Class' builds that class.
"""

import hashlib
import importlib
import logging
import re
import warnings
from collections.abc import Callable, Sequence
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessage, BaseMessage, SystemMessage, ToolCall
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import AliasChoices, ValidationError

from personas.settings import ChatModelChoice, PersonaSettings

log = logging.getLogger(__name__)

PROPOSE_WORKFLOW = "Propose the personas to run"
_DROP = re.compile(r"\b(?:skip|without|drop|no)\s+(?:the\s+)?(\w+)", re.I)
# "The publisher needs the editor's video before it.": what the system prompt says a
# choice cannot do without.
_NEEDS = re.compile(r"\bthe (\w+) needs the (\w+)'s\b", re.I)
_CLASS_REFERENCE = re.compile(r"^[\w.]+:[A-Z]\w*$")  # 'module:Class'; model names are lower
# LangChain moves a kwarg its class does not know into model_kwargs with this warning;
# such a kwarg is refused here instead, by name.
_UNKNOWN_KWARG_WARNING = r"WARNING! \S+ is not default parameter"
# provider -> the extra that installs it
_EXTRAS = {"openai": "openai", "azure_openai": "openai", "anthropic": "anthropic"}


class OfflineChatModel(BaseChatModel):
    """A deterministic model: the same messages always get the same reply.

    Asked for a workflow with a tool to fill (what `with_structured_output` binds),
    it calls the tool: the list of choices the tool's schema allows, minus any the brief
    or feedback says to skip ("skip media", "without editor") and any that the system
    prompt says needs one of those ("The publisher needs the editor's video before it."),
    and a reason. Asked for anything else, it writes a short text derived from the request.
    """

    @property
    def _llm_type(self) -> str:
        return "orchestrator-offline"

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        formatted = [convert_to_openai_tool(tool) for tool in tools]
        return self.bind(tools=formatted, tool_choice=tool_choice, **kwargs)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        system = " ".join(m.text for m in messages if isinstance(m, SystemMessage))
        request = messages[-1].text
        digest = hashlib.sha256(f"{system}\n{request}".encode()).hexdigest()[:8]
        tools: list[dict[str, Any]] = kwargs.get("tools") or []
        if PROPOSE_WORKFLOW in system and tools:
            function = _chosen(tools, kwargs.get("tool_choice"))
            dropped = {word.lower() for word in _DROP.findall(request)}
            needs = [(needy.lower(), needed.lower()) for needy, needed in _NEEDS.findall(system)]
            call = ToolCall(
                name=function["name"],
                args=_proposal(function.get("parameters", {}), dropped, needs),
                id=f"offline-{digest}",
            )
            message = AIMessage(content="", tool_calls=[call])
        else:
            message = AIMessage(content=f"[{digest}] {request.strip()[:400]}")
        return ChatResult(generations=[ChatGeneration(message=message)])


def _chosen(tools: list[dict[str, Any]], tool_choice: object) -> dict[str, Any]:
    functions: list[dict[str, Any]] = [tool["function"] for tool in tools]
    named = [function for function in functions if function["name"] == tool_choice]
    return (named or functions)[0]


def _proposal(
    parameters: dict[str, Any], dropped: set[str], needs: list[tuple[str, str]]
) -> dict[str, Any]:
    """The tool's arguments: every allowed choice not dropped and whose needs (needy,
    needed) are kept before it, and why."""
    properties: dict[str, dict[str, Any]] = parameters.get("properties", {})
    choices: list[str] = next(
        (spec["items"]["enum"] for spec in properties.values() if "enum" in spec.get("items", {})),
        [],
    )
    asked = [choice for choice in choices if not dropped & {choice, choice.split("_")[0]}]
    left_out = [choice for choice in choices if choice not in asked]
    reason = f"The crew without {', '.join(left_out)}, as asked." if left_out else "The crew."
    kept: list[str] = []
    for choice in asked:
        missing = [needed for needy, needed in needs if needy == choice and needed not in kept]
        if missing:
            reason += f" Nor the {choice}: it needs the {missing[0]} before it."
        else:
            kept.append(choice)
    if not kept:
        kept, reason = list(choices), "Nothing would be left to run: the crew."
    args: dict[str, Any] = {}
    for name, spec in properties.items():
        if spec.get("type") == "array":
            args[name] = kept
        elif spec.get("type") == "string":
            args[name] = reason
    return args


def load_chat_model(settings: PersonaSettings, persona: str) -> BaseChatModel:
    """The chat model `persona` talks to; a ValueError names the setting that is wrong."""
    choice = settings.chat_model_for(persona)
    if choice.reference == "offline":
        model: BaseChatModel = OfflineChatModel()  # takes no kwargs: any given are for others
    else:
        model = _built(choice)
    log.info(
        "%s talks to %s",
        persona,
        choice.reference,
        extra={"action": "chat_model", "persona": persona, "chat_model": choice.reference},
    )
    return model


def _built(choice: ChatModelChoice) -> BaseChatModel:
    where = f"{choice.setting}: {choice.reference!r}"
    kwargs = choice.revealed()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", _UNKNOWN_KWARG_WARNING, UserWarning)
            model = _constructed(choice.reference, kwargs)
    except ValidationError as refused:
        first = refused.errors(include_input=False)[0]
        name = str(first["loc"][0]) if first["loc"] else ""
        raise ValueError(
            f"{choice.kwargs_setting(name)}: {choice.reference!r} refuses {name!r}: {first['msg']}"
        ) from None
    except ImportError as missing:
        package = _package(missing)
        raise ValueError(f"{where} needs the package {package}: {_hint(choice, package)}") from None
    except ValueError as unknown:
        raise ValueError(
            f"{where} is not 'offline', 'module:Class' or a provider:model that LangChain "
            f"knows ({_first_line(unknown).split('. ')[0].rstrip('.')})"
        ) from None
    except Exception as failed:  # the provider's own check, e.g. no API key in its env var
        raise ValueError(f"{where} cannot be built: {_first_line(failed)}") from None
    if unknown_kwargs := sorted(set(kwargs) - _accepted(type(model))):
        name = unknown_kwargs[0]
        raise ValueError(
            f"{choice.kwargs_setting(name)}: {type(model).__name__} takes no {name!r} "
            "(options only the provider's API knows go in model_kwargs)"
        )
    return model


def _constructed(reference: str, kwargs: dict[str, Any]) -> BaseChatModel:
    if _CLASS_REFERENCE.match(reference):
        module_name, _, class_name = reference.partition(":")
        model_class = getattr(importlib.import_module(module_name), class_name, None)
        if not (isinstance(model_class, type) and issubclass(model_class, BaseChatModel)):
            raise ValueError(f"{class_name} is not a BaseChatModel of {module_name}")
        built: BaseChatModel = model_class(**kwargs)
        return built
    from langchain.chat_models import init_chat_model

    initialised: BaseChatModel = init_chat_model(reference, **kwargs)
    return initialised


def _accepted(model_class: type[BaseChatModel]) -> set[str]:
    """The kwargs `model_class` takes: its fields' names and aliases."""
    accepted = set(model_class.model_fields)
    for field in model_class.model_fields.values():
        if field.alias:
            accepted.add(field.alias)
        if isinstance(field.validation_alias, str):
            accepted.add(field.validation_alias)
        elif isinstance(field.validation_alias, AliasChoices):
            accepted.update(
                alias for alias in field.validation_alias.choices if isinstance(alias, str)
            )
    return accepted


def _package(missing: ImportError) -> str:
    """The distribution to install for a failed import (langchain_openai -> langchain-openai)."""
    cause = missing.__cause__ if isinstance(missing.__cause__, ImportError) else missing
    module = cause.name or "langchain"
    return module.split(".")[0].replace("_", "-")


def _hint(choice: ChatModelChoice, package: str) -> str:
    extra = _EXTRAS.get(choice.reference.partition(":")[0])
    return f"pip install '.[{extra}]'" if extra else f"pip install {package}"


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]
