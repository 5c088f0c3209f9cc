"""The ChatBackend contract (bot/llm/base.py), one suite run against every backend.

- streaming: text deltas, then exactly one Usage, last;
- `response_schema`: the text is JSON valid under the schema;
- `tools`: a ToolCall naming one of the tools, with dict arguments;
- `max_tokens` is respected (and reported as finish_reason "length" when it cut the reply);
- a consumer that stops reading early does not break the next call;
- a tool result in the history (assistant `tool_calls` + a `tool` message) gets a text answer.

Every case takes a backend from `backend_factory`, a zero-argument callable building (or handing
out) a ready backend of the parametrised kind: `scripted` (in-process), `local` (the embedded
SmolLM2, loaded once per module) and `vllm` (OpenAICompatBackend on the real vLLM session server of
tests/conftest.py, `vllm_server`). Add a backend by adding its name to BACKENDS and a
`<name>_factory` fixture.

The vLLM backend is built with tool_choice="required": a 135M model never calls a tool under
"auto", and "required" makes vLLM grammar-constrain a tool call, which is what the local backend
does with tools (both answer in text once the last message is a tool result).
"""

import json
from collections.abc import AsyncIterator, Callable

import pytest

from bot.llm.base import ChatBackend, Event, TextDelta, ToolCall, Usage
from bot.llm.scripted import ScriptedBackend
from shopdesk.settings import Settings

BACKENDS = [
    "scripted",
    pytest.param("local", marks=pytest.mark.slow),
    pytest.param("vllm", marks=[pytest.mark.slow, pytest.mark.vllm]),
]
BackendFactory = Callable[[], ChatBackend]

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_order_status",
            "description": "Look up the status of one of the shopper's orders by its id.",
            "parameters": {
                "type": "object",
                "properties": {"order_id": {"type": "string", "maxLength": 12}},
                "required": ["order_id"],
                "additionalProperties": False,
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "search_products",
            "description": "Search the catalogue.",
            "parameters": {
                "type": "object",
                "properties": {"query": {"type": "string", "maxLength": 40}},
                "required": ["query"],
                "additionalProperties": False,
            },
        },
    },
]

INTENT_SCHEMA = {
    "type": "object",
    "properties": {
        "intent": {"enum": ["order_status", "return", "product_question", "other"]},
        "needs_human": {"type": "boolean"},
        "summary": {"type": "string", "maxLength": 60},
    },
    "required": ["intent", "needs_human", "summary"],
    "additionalProperties": False,
}


def check_intent(value: object) -> None:
    """INTENT_SCHEMA by hand (jsonschema is not a dependency)."""
    assert isinstance(value, dict), value
    assert set(value) == {"intent", "needs_human", "summary"}, value
    assert value["intent"] in INTENT_SCHEMA["properties"]["intent"]["enum"]
    assert isinstance(value["needs_human"], bool)
    assert isinstance(value["summary"], str) and len(value["summary"]) <= 60


@pytest.fixture(scope="module")
def local_backend():
    from bot.llm import create_backend

    backend = create_backend(Settings(llm_temperature=0.0), "local")
    backend.load()
    yield backend
    backend.close()


@pytest.fixture
def scripted_factory() -> BackendFactory:
    return ScriptedBackend


@pytest.fixture
def local_factory(local_backend) -> BackendFactory:
    return lambda: local_backend  # loading takes seconds: one model per module


@pytest.fixture
async def vllm_factory(vllm_server):
    from bot.llm.openai_compat import OpenAICompatBackend

    made: list[OpenAICompatBackend] = []

    def make() -> ChatBackend:
        backend = OpenAICompatBackend(
            vllm_server.base_url,
            vllm_server.settings.llm_model,
            timeout_s=60.0,
            temperature=0.0,
            tool_choice="required",
        )
        made.append(backend)
        return backend

    yield make
    for backend in made:
        await backend.aclose()


@pytest.fixture(params=BACKENDS)
def backend_factory(request: pytest.FixtureRequest) -> BackendFactory:
    return request.getfixturevalue(f"{request.param}_factory")


@pytest.fixture
def backend(backend_factory: BackendFactory) -> ChatBackend:
    return backend_factory()


async def drain(stream: AsyncIterator[Event]) -> list[Event]:
    return [event async for event in stream]


def assert_ends_with_one_usage(events: list[Event]) -> Usage:
    assert events, "the stream yielded nothing"
    assert isinstance(events[-1], Usage), events[-1]
    assert sum(isinstance(e, Usage) for e in events) == 1
    return events[-1]


async def test_streams_text_deltas_then_one_usage(backend: ChatBackend):
    messages = [
        {"role": "system", "content": "You are the assistant of an online shop."},
        {"role": "user", "content": "Say hello to a shopper in one short sentence."},
    ]
    events = await drain(backend.stream(messages, max_tokens=32))
    usage = assert_ends_with_one_usage(events)
    deltas = events[:-1]
    assert deltas and all(isinstance(e, TextDelta) for e in deltas)
    assert "".join(e.text for e in deltas).strip()
    assert usage.finish_reason in ("stop", "length")
    assert 1 <= usage.completion_tokens <= 32


async def test_response_schema_output_is_valid_json(backend: ChatBackend):
    messages = [
        {
            "role": "system",
            "content": "Classify the shopper's message. "
            "Reply with JSON with the keys intent, needs_human, summary.",
        },
        {"role": "user", "content": "My parcel for order #W2378156 has not arrived, where is it?"},
    ]
    events = await drain(backend.stream(messages, response_schema=INTENT_SCHEMA, max_tokens=80))
    usage = assert_ends_with_one_usage(events)
    assert usage.finish_reason == "stop"
    assert not [e for e in events if isinstance(e, ToolCall)]
    check_intent(json.loads("".join(e.text for e in events if isinstance(e, TextDelta))))


async def test_tools_produce_a_tool_call(backend: ChatBackend):
    if isinstance(backend, ScriptedBackend):
        backend.push(ToolCall("get_order_status", {"order_id": "#W2378156"}, id="call_1"))
    messages = [{"role": "user", "content": "What is the status of my order #W2378156?"}]
    events = await drain(backend.stream(messages, tools=TOOLS, max_tokens=80))
    usage = assert_ends_with_one_usage(events)
    calls = [e for e in events if isinstance(e, ToolCall)]
    assert len(calls) == 1
    assert calls[0].name in {t["function"]["name"] for t in TOOLS}
    assert isinstance(calls[0].arguments, dict)
    params = next(t["function"]["parameters"] for t in TOOLS if t["function"]["name"] == calls[0].name)
    assert set(params["required"]) <= set(calls[0].arguments) <= set(params["properties"])
    assert usage.finish_reason in ("stop", "tool_calls")


async def test_max_tokens_is_respected(backend: ChatBackend):
    messages = [
        {
            "role": "user",
            "content": "Please list every step of returning a parcel, in a lot of detail, one two three four "
            "five six seven eight nine ten.",
        }
    ]
    events = await drain(backend.stream(messages, max_tokens=4))
    usage = assert_ends_with_one_usage(events)
    assert 1 <= len([e for e in events if isinstance(e, TextDelta)]) <= 4
    assert usage.completion_tokens <= 4
    assert usage.finish_reason == "length"


async def test_closing_early_does_not_break_the_next_call(backend: ChatBackend):
    messages = [{"role": "user", "content": "Tell me about your shipping options."}]
    stream = backend.stream(messages, max_tokens=64)
    first = await anext(stream)
    assert isinstance(first, TextDelta)
    await stream.aclose()
    events = await drain(backend.stream([{"role": "user", "content": "Hello!"}], max_tokens=16))
    usage = assert_ends_with_one_usage(events)
    assert any(isinstance(e, TextDelta) for e in events)
    assert usage.completion_tokens >= 1


async def test_tool_result_in_history_gets_a_text_answer(backend: ChatBackend, tool_round_trip):
    messages = tool_round_trip
    events = await drain(backend.stream(messages, tools=TOOLS, max_tokens=24))
    usage = assert_ends_with_one_usage(events)
    assert not [e for e in events if isinstance(e, ToolCall)]
    assert "".join(e.text for e in events if isinstance(e, TextDelta)).strip()
    assert usage.finish_reason in ("stop", "length")
