"""Chat models from the persona settings, and Brendan's structured proposal.

The real `langchain-openai` client talks to a loopback stand-in of OpenAI's
chat-completions API, which answers in OpenAI's format and records each request.
"""

import json
import logging
import sys
from dataclasses import dataclass, field
from typing import Any, cast

import pytest
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_openai import ChatOpenAI
from langgraph.runtime import Runtime
from pydantic import SecretStr, ValidationError

from engine.runtime.workflow import RunContext
from gates.production import valid_workflow
from personas.brendan import ASKS, SYSTEM, Proposal, make_brendan
from personas.model import OfflineChatModel, load_chat_model
from personas.settings import PersonaSettings
from personas.state import CREW, ProductionState
from tests.scripted_http import Reply, ScriptedServer

API_KEY = "sk-test-never-shown-4711"


@pytest.fixture(autouse=True)
def _no_chat_model_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PersonaSettings.model_fields:
        monkeypatch.delenv(f"ORCHESTRATOR_{name.upper()}", raising=False)


def persona_settings(**values: Any) -> PersonaSettings:
    """Settings from `values` and the environment only: no `.env` file leaks in."""
    return PersonaSettings(_env_file=None, **values)  # type: ignore[call-arg]


def openai_settings(server: ScriptedServer, **kwargs: Any) -> PersonaSettings:
    return persona_settings(
        chat_model="openai:gpt-4o-mini",
        chat_model_kwargs={
            "base_url": server.url + "/v1",
            "api_key": API_KEY,
            "max_retries": 0,
            **kwargs,
        },
    )


def completion(content: str) -> Reply:
    """A chat completion as OpenAI's API answers it."""
    return Reply(
        200,
        {
            "id": "chatcmpl-loopback",
            "object": "chat.completion",
            "created": 1_700_000_000,
            "model": "gpt-4o-mini-2024-07-18",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content, "refusal": None},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 50, "completion_tokens": 20, "total_tokens": 70},
        },
        # langchain-openai shares one HTTP client per base URL across the process, and each
        # test has its own event loop: no kept-alive connection may outlive its test.
        headers={"connection": "close"},
    )


@dataclass
class Recorder:
    """The part of `RunContext` a persona calls: artifacts are kept, not written."""

    artifacts: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    async def record_artifact(self, type: str, **fields: Any) -> dict[str, Any]:
        self.artifacts.append((type, fields))
        return {}


@dataclass
class FakeRuntime:
    context: Recorder


async def run_brendan(
    model: BaseChatModel, state: ProductionState
) -> tuple[dict[str, Any], Recorder]:
    recorder = Recorder()
    runtime = cast("Runtime[RunContext]", FakeRuntime(recorder))
    update = await make_brendan(model)(state, runtime=runtime)
    return update, recorder


# --- the real OpenAI client against the loopback API ---------------------------------------


async def test_brendan_drives_langchain_openai_with_the_configured_model_and_schema(
    server: ScriptedServer,
) -> None:
    reason = "Cut from existing footage for social media: no new images."
    server.script(
        completion(
            json.dumps({"personas": ["script_writer", "editor", "publisher"], "reason": reason})
        )
    )
    model = load_chat_model(openai_settings(server, temperature=0.3), "brendan")
    assert isinstance(model, ChatOpenAI)

    update, recorder = await run_brendan(model, {"brief": "dogs", "feedback": ["shorter"]})

    # "social media" in the reason is not the media persona: only the list counts.
    assert update == {
        "proposal": ["script_writer", "editor", "publisher"],
        "publish_approved": False,
    }
    assert recorder.artifacts == [
        (
            "workflow_proposal",
            {
                "key": "brendan:1",
                "persona": "brendan",
                "metadata": {
                    "workflow": ["script_writer", "editor", "publisher"],
                    "reply": reason,
                    "round": 1,
                },
            },
        )
    ]
    [call] = server.calls
    assert (call.method, call.path) == ("POST", "/v1/chat/completions")
    assert call.headers["authorization"] == f"Bearer {API_KEY}"
    sent = json.loads(call.body)
    assert (sent["model"], sent["temperature"]) == ("gpt-4o-mini", 0.3)
    assert [m["role"] for m in sent["messages"]] == ["system", "user"]
    assert sent["messages"][0]["content"] == SYSTEM
    assert sent["messages"][1]["content"] == "Brief: dogs\nThe last proposal was rejected: shorter"
    # langchain-openai asks for OpenAI's structured outputs: the proposal's JSON schema.
    assert sent["response_format"]["type"] == "json_schema"
    assert sent["response_format"]["json_schema"]["name"] == "Proposal"
    schema = sent["response_format"]["json_schema"]["schema"]
    assert schema["required"] == ["personas", "reason"]
    assert schema["properties"]["personas"]["items"]["enum"] == list(CREW)


@pytest.mark.parametrize(
    ("content", "error"),
    [
        (
            '{"personas": [], "reason": "nothing to do"}',
            "Brendan proposed no valid workflow: "
            "personas: List should have at least 1 item after validation, not 0",
        ),
        (
            '{"personas": ["script_writer", "social_media"], "reason": "x"}',
            "Brendan proposed no valid workflow: personas.1: "
            "Input should be 'script_writer', 'media', 'editor' or 'publisher'",
        ),
        (
            '{"personas": ["media", "media"], "reason": "x"}',
            "Brendan proposed no valid workflow: "
            "personas: Value error, a persona is named more than once",
        ),
        (
            "script_writer -> media",
            "Brendan proposed no valid workflow: Invalid JSON: expected value at line 1 column 1",
        ),
    ],
)
async def test_an_empty_or_invalid_proposal_fails_clearly(
    server: ScriptedServer, content: str, error: str
) -> None:
    server.script(*[completion(content)] * ASKS)
    model = load_chat_model(openai_settings(server), "brendan")
    with pytest.raises(ValueError) as raised:
        await run_brendan(model, {"brief": "dogs"})
    assert str(raised.value).startswith(error)
    assert "\n" not in str(raised.value)
    assert len(server.calls) == ASKS  # asked again each time, saying why


async def test_a_proposal_the_gate_would_refuse_is_asked_again_and_never_shown(
    server: ScriptedServer,
) -> None:
    refused = ["script_writer", "media", "publisher"]  # no editor: nothing to publish
    server.script(
        completion(json.dumps({"personas": refused, "reason": "as asked"})),
        completion(json.dumps({"personas": ["script_writer", "media"], "reason": "fixed"})),
    )
    model = load_chat_model(openai_settings(server), "brendan")
    update, recorder = await run_brendan(model, {"brief": "cats, without editor"})
    assert update["proposal"] == ["script_writer", "media"]
    assert [fields["metadata"]["workflow"] for _, fields in recorder.artifacts] == [
        ["script_writer", "media"]
    ]
    first, second = (json.loads(call.body)["messages"][1]["content"] for call in server.calls)
    assert first == "Brief: cats, without editor"
    assert second == (
        "Brief: cats, without editor\nYour last proposal cannot run: "
        "workflow: the publisher needs the editor's video before it. Propose again."
    )


async def test_a_model_that_keeps_proposing_what_the_gate_refuses_fails_the_step(
    server: ScriptedServer,
) -> None:
    refused = json.dumps({"personas": ["publisher", "editor"], "reason": "backwards"})
    server.script(*[completion(refused)] * ASKS)
    model = load_chat_model(openai_settings(server), "brendan")
    with pytest.raises(ValueError) as raised:
        await run_brendan(model, {"brief": "dogs"})
    assert str(raised.value) == (
        "Brendan proposed no valid workflow: "
        "workflow: the publisher needs the editor's video before it"
    )


class Mute(OfflineChatModel):
    """A model that answers in prose whatever tool it is given."""

    def _generate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> ChatResult:
        reply = AIMessage(content="script_writer -> media, I think")
        return ChatResult(generations=[ChatGeneration(message=reply)])


async def test_a_reply_without_a_proposal_fails_clearly() -> None:
    with pytest.raises(ValueError) as raised:
        await run_brendan(Mute(), {"brief": "dogs"})
    assert str(raised.value) == (
        "Brendan proposed no valid workflow: the model's reply held no proposal"
    )


# --- offline ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "workflow"),
    [
        ({"brief": "dogs"}, list(CREW)),
        ({"brief": "dogs for social media"}, list(CREW)),
        ({"brief": "dogs", "feedback": ["skip media"]}, ["script_writer", "editor", "publisher"]),
        # The publisher needs the editor's video: without the editor, no publisher either.
        ({"brief": "cats, without editor"}, ["script_writer", "media"]),
        ({"brief": "cats, no script"}, ["media", "editor", "publisher"]),
        ({"brief": "skip script, skip media, no editor, no publisher"}, list(CREW)),
    ],
)
async def test_offline_brendan_proposes_the_crew_minus_what_the_brief_skips(
    state: ProductionState, workflow: list[str]
) -> None:
    update, recorder = await run_brendan(OfflineChatModel(), state)
    assert update["proposal"] == workflow
    [(kind, recorded)] = recorder.artifacts
    assert kind == "workflow_proposal"
    assert list(recorded["metadata"]) == ["workflow", "reply", "round"]
    assert recorded["metadata"]["workflow"] == workflow


@pytest.mark.parametrize(
    "brief",
    [
        "without editor",
        "skip media",
        "only publish",
        "no editor, no media",
        "drop the editor and skip the script",
        "without publisher",
        "skip everything: no script, no media, no editor, no publisher",
    ],
)
@pytest.mark.parametrize("where", ["brief", "feedback"])
async def test_the_offline_proposal_is_one_the_workflow_gate_runs(brief: str, where: str) -> None:
    state: ProductionState = {"brief": brief} if where == "brief" else {"feedback": [brief]}
    update, _ = await run_brendan(OfflineChatModel(), state)
    assert valid_workflow(update["proposal"]) == update["proposal"]


def test_the_offline_model_honours_structured_output() -> None:
    structured = OfflineChatModel().with_structured_output(Proposal)
    messages = [SystemMessage(SYSTEM), HumanMessage("Brief: dogs\nskip the media")]
    proposal = structured.invoke(messages)
    assert proposal == Proposal(
        personas=["script_writer", "editor", "publisher"],
        reason="The crew without media, as asked.",
    )
    assert structured.invoke(messages) == proposal  # deterministic


def test_the_offline_model_writes_text_when_no_tool_is_bound() -> None:
    reply = OfflineChatModel().invoke([SystemMessage("Write a script."), HumanMessage("dogs")])
    assert reply.text.endswith("] dogs")


# --- settings -----------------------------------------------------------------------------


def test_offline_is_the_default_and_imports_no_provider_package(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for module in ("langchain", "langchain.chat_models", "langchain_openai", "openai"):
        monkeypatch.setitem(sys.modules, module, None)  # importing it now fails
    settings = persona_settings()
    assert settings.chat_model == "offline"
    assert isinstance(load_chat_model(settings, "brendan"), OfflineChatModel)
    assert isinstance(load_chat_model(settings, "script_writer"), OfflineChatModel)


def test_a_persona_override_lays_its_model_and_kwargs_over_the_shared_ones(
    server: ScriptedServer,
) -> None:
    settings = persona_settings(
        chat_model="offline",
        chat_model_kwargs={"temperature": 0.2, "api_key": API_KEY, "base_url": server.url},
        persona_chat_models={"brendan": "openai:gpt-4o"},
        persona_chat_model_kwargs={"brendan": {"temperature": 0.9}},
    )
    brendan = load_chat_model(settings, "brendan")
    assert isinstance(brendan, ChatOpenAI)
    assert (brendan.model_name, brendan.temperature) == ("gpt-4o", 0.9)
    assert brendan.openai_api_base == server.url
    assert isinstance(load_chat_model(settings, "script_writer"), OfflineChatModel)


def test_the_settings_read_json_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCHESTRATOR_CHAT_MODEL", "openai:gpt-4o-mini")
    monkeypatch.setenv(
        "ORCHESTRATOR_CHAT_MODEL_KWARGS", '{"temperature": 0, "base_url": "http://127.0.0.1:1/v1"}'
    )
    monkeypatch.setenv("ORCHESTRATOR_PERSONA_CHAT_MODELS", '{"script_writer": "offline"}')
    monkeypatch.setenv("ORCHESTRATOR_PERSONA_CHAT_MODEL_KWARGS", '{"brendan": {"seed": 7}}')
    settings = persona_settings()
    assert settings.chat_model == "openai:gpt-4o-mini"
    assert settings.chat_model_kwargs == {"temperature": 0, "base_url": "http://127.0.0.1:1/v1"}
    assert settings.persona_chat_models == {"script_writer": "offline"}
    choice = settings.chat_model_for("brendan")
    assert (choice.reference, choice.revealed()) == (
        "openai:gpt-4o-mini",
        {"temperature": 0, "base_url": "http://127.0.0.1:1/v1", "seed": 7},
    )
    assert settings.chat_model_for("script_writer").reference == "offline"


@pytest.mark.parametrize(
    ("variable", "value", "field_name", "message"),
    [
        (
            "ORCHESTRATOR_CHAT_MODEL_KWARGS",
            f'{{"api_key": "{API_KEY}",}}',
            "chat_model_kwargs",
            "Value error, not JSON: Expecting property name enclosed in double quotes",
        ),
        (
            "ORCHESTRATOR_CHAT_MODEL_KWARGS",
            "[0.2]",
            "chat_model_kwargs",
            "Value error, not a JSON object",
        ),
        (
            "ORCHESTRATOR_PERSONA_CHAT_MODELS",
            '{"brendon": "openai:gpt-4o"}',
            "persona_chat_models",
            "Value error, no persona 'brendon' talks to a chat model; "
            "these do: brendan, script_writer",
        ),
        (
            "ORCHESTRATOR_CHAT_MODEL_KWARGS",
            '{"model": "gpt-4o"}',
            "chat_model_kwargs",
            "Value error, 'model' is not a kwarg: the model is named by the chat model setting",
        ),
    ],
)
def test_an_invalid_setting_names_its_field_and_never_echoes_the_value(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, field_name: str, message: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValidationError) as raised:
        persona_settings()
    [error] = raised.value.errors()
    assert error["loc"] == (field_name,)
    assert error["msg"].startswith(message)
    assert API_KEY not in str(raised.value)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"chat_model": "nosuch:model-1"},
            "ORCHESTRATOR_CHAT_MODEL: 'nosuch:model-1' is not 'offline', 'module:Class' or a "
            "provider:model that LangChain knows "
            "(Unable to infer model provider for model='nosuch:model-1')",
        ),
        (
            {"persona_chat_models": {"brendan": "anthropic:claude-sonnet-4-5"}},
            "ORCHESTRATOR_PERSONA_CHAT_MODELS: 'anthropic:claude-sonnet-4-5' needs the package "
            "langchain-anthropic: pip install '.[anthropic]'",
        ),
        (
            {"chat_model_kwargs": {"api_key": API_KEY, "temperature": "hot"}},
            "ORCHESTRATOR_CHAT_MODEL_KWARGS: 'openai:gpt-4o-mini' refuses 'temperature': "
            "Input should be a valid number, unable to parse string as a number",
        ),
        (
            {"chat_model_kwargs": {"api_key": API_KEY, "temprature": 0.2}},
            "ORCHESTRATOR_CHAT_MODEL_KWARGS: ChatOpenAI takes no 'temprature' "
            "(options only the provider's API knows go in model_kwargs)",
        ),
        (
            {"persona_chat_model_kwargs": {"brendan": {"top": 3}}},
            "ORCHESTRATOR_PERSONA_CHAT_MODEL_KWARGS: ChatOpenAI takes no 'top' "
            "(options only the provider's API knows go in model_kwargs)",
        ),
        (
            {"chat_model": "json:JSONDecoder"},
            "ORCHESTRATOR_CHAT_MODEL: 'json:JSONDecoder' is not 'offline', 'module:Class' or a "
            "provider:model that LangChain knows (JSONDecoder is not a BaseChatModel of json)",
        ),
        (
            {"chat_model_kwargs": {}},
            "ORCHESTRATOR_CHAT_MODEL: 'openai:gpt-4o-mini' cannot be built: Missing credentials.",
        ),
    ],
)
def test_a_model_that_cannot_be_built_fails_in_one_line_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch, values: dict[str, Any], message: str
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setitem(sys.modules, "langchain_anthropic", None)  # even where it is installed
    defaults: dict[str, Any] = {
        "chat_model": "openai:gpt-4o-mini",
        "chat_model_kwargs": {"api_key": API_KEY},
    }
    with pytest.raises(ValueError) as raised:
        load_chat_model(persona_settings(**{**defaults, **values}), "brendan")
    assert str(raised.value).startswith(message)
    assert "\n" not in str(raised.value)
    assert API_KEY not in str(raised.value)


def test_without_langchain_a_provider_model_says_which_extra_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "langchain.chat_models", None)
    with pytest.raises(ValueError) as raised:
        load_chat_model(persona_settings(chat_model="openai:gpt-4o-mini"), "brendan")
    assert str(raised.value) == (
        "ORCHESTRATOR_CHAT_MODEL: 'openai:gpt-4o-mini' needs the package langchain: "
        "pip install '.[openai]'"
    )


def test_a_key_given_as_a_kwarg_stays_out_of_reprs_and_logs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = persona_settings(
        chat_model="openai:gpt-4o-mini",
        chat_model_kwargs={"api_key": API_KEY, "default_headers": {"X-Team": "video"}},
    )
    headers = persona_settings(
        chat_model_kwargs={"default_headers": {"Authorization": f"Bearer {API_KEY}"}}
    )
    for shown in (repr(settings), str(settings.model_dump()), repr(headers)):
        assert API_KEY not in shown
    with caplog.at_level(logging.DEBUG):
        model = load_chat_model(settings, "brendan")
    assert API_KEY not in caplog.text
    assert [(r.action, r.persona) for r in caplog.records if hasattr(r, "action")] == [  # type: ignore[attr-defined]
        ("chat_model", "brendan")
    ]
    assert isinstance(model, ChatOpenAI)
    assert isinstance(model.openai_api_key, SecretStr)
    assert model.openai_api_key.get_secret_value() == API_KEY  # the model gets it in the clear
    assert model.default_headers == {"X-Team": "video"}
    assert headers.chat_model_for("brendan").revealed() == {
        "default_headers": {"Authorization": f"Bearer {API_KEY}"}
    }
    assert API_KEY not in repr(model)


def test_the_proposal_offers_exactly_the_crew() -> None:
    schema = Proposal.model_json_schema()
    assert schema["properties"]["personas"]["items"]["enum"] == list(CREW)
