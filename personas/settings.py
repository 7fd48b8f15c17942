"""The personas' settings: which chat model each persona talks to (docs/models.md)."""

import json
import re
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

CHAT_PERSONAS = ("brendan", "script_writer")  # the personas that talk to a chat model
# Kwargs named like these hold secrets: kept as SecretStr, so no repr or log shows them.
_SECRET_NAME = re.compile(r"key|token|secret|password|credential|authorization", re.I)
# init_chat_model's own parameters: the model is named by a setting, never by a kwarg.
_RESERVED = frozenset({"model", "model_provider", "configurable_fields", "config_prefix"})


class PersonaSettings(BaseSettings):
    # An invalid value's error never echoes it: it may hold an API key.
    model_config = SettingsConfigDict(
        env_prefix="ORCHESTRATOR_", env_file=".env", extra="ignore", hide_input_in_errors=True
    )

    chat_model: str = Field(
        default="offline",
        description="'offline', a 'provider:model' that LangChain's init_chat_model takes "
        "(openai:gpt-4o-mini), or 'module:Class' of a BaseChatModel",
    )
    chat_model_kwargs: Annotated[dict[str, Any], NoDecode] = Field(
        default_factory=dict,
        description="JSON object: the chat model's keyword arguments (temperature, base_url)",
    )
    persona_chat_models: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=dict,
        description="JSON object: persona -> chat model, in place of chat_model",
    )
    persona_chat_model_kwargs: Annotated[dict[str, dict[str, Any]], NoDecode] = Field(
        default_factory=dict,
        description="JSON object: persona -> kwargs laid over chat_model_kwargs",
    )

    @field_validator(
        "chat_model_kwargs", "persona_chat_models", "persona_chat_model_kwargs", mode="before"
    )
    @classmethod
    def _json_object(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        try:
            decoded = json.loads(value)
        except json.JSONDecodeError as error:
            raise ValueError(f"not JSON: {error}") from None
        if not isinstance(decoded, dict):
            raise ValueError("not a JSON object")
        return decoded

    @field_validator("persona_chat_models", "persona_chat_model_kwargs")
    @classmethod
    def _chat_personas(cls, value: dict[str, Any]) -> dict[str, Any]:
        if unknown := sorted(set(value) - set(CHAT_PERSONAS)):
            raise ValueError(
                f"no persona {unknown[0]!r} talks to a chat model; these do: "
                + ", ".join(CHAT_PERSONAS)
            )
        return value

    @field_validator("chat_model_kwargs")
    @classmethod
    def _shared_kwargs(cls, value: dict[str, Any]) -> dict[str, Any]:
        return _checked_kwargs(value)

    @field_validator("persona_chat_model_kwargs")
    @classmethod
    def _persona_kwargs(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        return {persona: _checked_kwargs(kwargs) for persona, kwargs in value.items()}

    def chat_model_for(self, persona: str) -> "ChatModelChoice":
        """The model `persona` talks to, its kwargs, and the settings they come from."""
        if persona not in CHAT_PERSONAS:
            raise ValueError(f"persona {persona!r} talks to no chat model")
        own_kwargs = self.persona_chat_model_kwargs.get(persona, {})
        if persona in self.persona_chat_models:
            reference, setting = self.persona_chat_models[persona], "PERSONA_CHAT_MODELS"
        else:
            reference, setting = self.chat_model, "CHAT_MODEL"
        return ChatModelChoice(
            persona=persona,
            reference=reference,
            kwargs={**self.chat_model_kwargs, **own_kwargs},
            setting=f"ORCHESTRATOR_{setting}",
            persona_kwargs=frozenset(own_kwargs),
        )


@dataclass(frozen=True)
class ChatModelChoice:
    persona: str
    reference: str
    kwargs: dict[str, Any]  # secrets still wrapped in SecretStr: `revealed()` unwraps them
    setting: str  # the variable `reference` comes from, for error messages
    persona_kwargs: frozenset[str]  # kwargs that come from the persona's own setting

    def kwargs_setting(self, name: str) -> str:
        """The variable kwarg `name` comes from, for error messages."""
        own = name in self.persona_kwargs
        return "ORCHESTRATOR_" + ("PERSONA_CHAT_MODEL_KWARGS" if own else "CHAT_MODEL_KWARGS")

    def revealed(self) -> dict[str, Any]:
        """The kwargs as the model's class takes them, secrets in the clear."""
        revealed: dict[str, Any] = _reveal(self.kwargs)
        return revealed


def _checked_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    if reserved := sorted(_RESERVED & set(kwargs)):
        raise ValueError(
            f"{reserved[0]!r} is not a kwarg: the model is named by the chat model setting"
        )
    return {name: _hidden(name, value) for name, value in kwargs.items()}


def _hidden(name: str, value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _hidden(key, item) for key, item in value.items()}
    if isinstance(value, str) and _SECRET_NAME.search(name):
        return SecretStr(value)
    return value


def _reveal(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _reveal(item) for key, item in value.items()}
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    return value
