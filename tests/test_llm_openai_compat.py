"""The openai_compat backend against a fake OpenAI-compatible server speaking vLLM's SSE dialect.

The fake runs in uvicorn on 127.0.0.1 (a real socket, real HTTP/1.1 chunked streaming), records every
request body and whether the client went away before the stream ended.

The first group (text, tools, structured output) makes only protocol-level claims when
SHOPDESK_TEST_LLM_URL (and SHOPDESK_TEST_LLM_MODEL) point at a real server, e.g. vLLM; the
assertions about what was sent, and the failure scenarios, need the fake.
"""

import asyncio
import json
import os
import socket
import threading
import time

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from bot.llm import create_backend
from bot.llm.base import BackendError, TextDelta, ToolCall, Usage, collect_text
from bot.llm.openai_compat import OpenAICompatBackend
from shopdesk.settings import Settings

LIVE_URL = os.environ.get("SHOPDESK_TEST_LLM_URL")
LIVE_MODEL = os.environ.get("SHOPDESK_TEST_LLM_MODEL", "fake-model")

TEXT_PIECES = ["Hello", " there", "!", " How", " can", " I", " help", "?"]
ORDER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_order",
        "description": "Look up an order by its id",
        "parameters": {
            "type": "object",
            "properties": {"order_id": {"type": "string"}},
            "required": ["order_id"],
            "additionalProperties": False,
        },
    },
}
PRODUCT_TOOL = {
    "type": "function",
    "function": {
        "name": "search_products",
        "description": "Search the catalogue",
        "parameters": {
            "type": "object",
            "properties": {"query": {"type": "string"}, "limit": {"type": "integer"}},
            "required": ["query", "limit"],
            "additionalProperties": False,
        },
    },
}
DECISION_SCHEMA = {
    "type": "object",
    "properties": {"action": {"type": "string", "enum": ["answer", "ask", "handoff"]}},
    "required": ["action"],
    "additionalProperties": False,
}


# -- the fake server ---------------------------------------------------------------------------------


def _chunk(delta: dict | None = None, finish: str | None = None, usage: dict | None = None) -> bytes:
    body = {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "fake-model",
        "choices": []
        if delta is None
        else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        "usage": usage,
    }
    return f"data: {json.dumps(body)}\n\n".encode()


USAGE = {"prompt_tokens": 12, "completion_tokens": 8, "total_tokens": 20}
DONE = b"data: [DONE]\n\n"


class FakeServer:
    """An OpenAI-compatible /v1 that streams like vLLM; `mode` picks the scenario."""

    def __init__(self) -> None:
        self.mode = "ok"
        self.requests: list[dict] = []
        self.disconnected = threading.Event()
        self.completed = 0
        self.app = Starlette(
            routes=[
                Route("/v1/models", self.models),
                Route("/v1/chat/completions", self.chat, methods=["POST"]),
            ]
        )

    def reset(self, mode: str = "ok") -> None:
        self.mode = mode
        self.requests.clear()
        self.disconnected.clear()
        self.completed = 0

    async def models(self, request: Request) -> JSONResponse:
        return JSONResponse({"object": "list", "data": [{"id": "fake-model", "object": "model"}]})

    async def chat(self, request: Request):
        body = await request.json()
        self.requests.append(body)
        mode = self.mode
        if mode == "http500":
            return JSONResponse({"error": {"message": "engine dead", "code": 500}}, status_code=500)
        if mode == "stall_headers":
            await self._wait(request, 10)
            return JSONResponse({})
        return StreamingResponse(self._events(request, body, mode), media_type="text/event-stream")

    async def _wait(self, request: Request, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end and not await request.is_disconnected():
            await asyncio.sleep(0.02)

    async def _events(self, request: Request, body: dict, mode: str):
        finished = False
        try:
            yield _chunk({"role": "assistant", "content": ""})
            if mode == "stall_after_role":
                await self._wait(request, 10)
            elif mode == "keepalive":  # bytes keep flowing, tokens never come
                for _ in range(200):
                    if await request.is_disconnected():
                        self.disconnected.set()
                        return
                    yield b": ping\n\n"
                    await asyncio.sleep(0.05)
            elif mode == "long":
                for i in range(500):
                    if await request.is_disconnected():
                        self.disconnected.set()
                        return
                    yield _chunk({"content": f"w{i} "})
                    await asyncio.sleep(0.02)
            elif body.get("tools"):
                yield _chunk(
                    {
                        "tool_calls": [
                            {
                                "id": "call-1",
                                "type": "function",
                                "index": 0,
                                "function": {"name": "get_order"},
                            }
                        ]
                    }
                )
                args = '{"order_id": "#W1234567"}' if mode != "bad_args" else '{"order_id": "#W12'
                for piece in (args[:5], args[5:14], args[14:]):
                    yield _chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]})
                yield _chunk(
                    {
                        "tool_calls": [
                            {
                                "id": "call-2",
                                "type": "function",
                                "index": 1,
                                "function": {"name": "search_products", "arguments": '{"query": "la'},
                            }
                        ]
                    }
                )
                yield _chunk({"tool_calls": [{"index": 1, "function": {"arguments": 'mp", "limit": 3}'}}]})
                yield _chunk({}, finish="tool_calls")
            elif body.get("response_format"):
                for piece in ('{"act', 'ion": "', 'answer"}'):
                    yield _chunk({"content": piece})
                yield _chunk({"content": ""}, finish="stop")
            else:
                for i, piece in enumerate(TEXT_PIECES):
                    data = _chunk({"content": piece})
                    if i == 2:  # one SSE event split across two network writes
                        yield data[:17]
                        await asyncio.sleep(0.01)
                        yield data[17:]
                    else:
                        yield data
                    if mode == "die" and i == 2:
                        raise RuntimeError("the server process died")  # uvicorn drops the connection
                    if mode == "truncated" and i == 2:
                        return  # a clean end of body, but no finish_reason and no [DONE]
                yield _chunk({"content": ""}, finish="stop")
            if mode != "no_usage":
                yield _chunk(usage=USAGE)
            yield DONE
            finished = True
            self.completed += 1
        finally:
            if not finished:
                self.disconnected.set()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerThread:
    def __init__(self, fake: FakeServer, port: int) -> None:
        self.fake = fake
        self.port = port
        config = uvicorn.Config(
            fake.app,
            host="127.0.0.1",
            port=port,
            log_level="critical",
            loop="asyncio",
            http="h11",
            lifespan="off",
            timeout_graceful_shutdown=1,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> "ServerThread":
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("fake server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(5)


@pytest.fixture(scope="module")
def server():
    srv = ServerThread(FakeServer(), _free_port()).start()
    yield srv
    srv.stop()


@pytest.fixture
def fake(server) -> FakeServer:
    server.fake.reset()
    return server.fake


def backend_for(urls, **kw) -> OpenAICompatBackend:
    kw.setdefault("timeout_s", 5.0)
    return OpenAICompatBackend(urls, LIVE_MODEL, **kw)


@pytest.fixture
async def target(server):
    """(backend, fake or None): the fake server, or a real one when SHOPDESK_TEST_LLM_URL is set."""
    server.fake.reset()
    backend = backend_for(LIVE_URL or server.url, timeout_s=60.0 if LIVE_URL else 5.0)
    yield backend, (None if LIVE_URL else server.fake)
    await backend.aclose()


async def drain(agen):
    return [event async for event in agen]


# -- contract: text, tools, structured output ----------------------------------------------------------


async def test_text_streams_in_several_deltas_then_one_usage_last(target):
    backend, fake = target
    events = await drain(backend.stream([{"role": "user", "content": "Say hello."}], max_tokens=32))
    deltas = [e for e in events if isinstance(e, TextDelta)]
    assert len(deltas) >= 2
    assert isinstance(events[-1], Usage) and sum(isinstance(e, Usage) for e in events) == 1
    usage = events[-1]
    assert usage.completion_tokens > 0 and usage.prompt_tokens > 0
    assert usage.finish_reason in ("stop", "length")
    if fake is None:
        return
    assert [d.text for d in deltas] == TEXT_PIECES  # the split SSE event is reassembled, nothing lost
    assert (usage.prompt_tokens, usage.completion_tokens, usage.finish_reason) == (12, 8, "stop")
    assert "estimated" not in usage.extra
    sent = fake.requests[-1]
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
    assert sent["model"] == LIVE_MODEL and sent["max_tokens"] == 32
    assert "tools" not in sent and "response_format" not in sent


async def test_deltas_arrive_as_the_server_sends_them(fake, server):
    fake.reset("long")
    backend = backend_for(server.url)
    agen = backend.stream([{"role": "user", "content": "talk"}])
    started = time.monotonic()
    first = await anext(agen)
    # the server needs ~10 s to finish: the first delta must not wait for the end
    assert isinstance(first, TextDelta) and time.monotonic() - started < 2
    await agen.aclose()
    await backend.aclose()


async def test_usage_is_counted_when_the_server_sends_none(fake, server):
    fake.reset("no_usage")
    backend = backend_for(server.url)
    events = await drain(backend.stream([{"role": "user", "content": "Say hello to me please."}]))
    await backend.aclose()
    usage = events[-1]
    assert isinstance(usage, Usage) and usage.extra.get("estimated") is True
    assert usage.completion_tokens == len(TEXT_PIECES)
    assert usage.prompt_tokens > 0 and usage.finish_reason == "stop"


async def test_tool_call_fragments_assemble_into_one_call_each_and_tools_go_strict(target):
    backend, fake = target
    tools = [ORDER_TOOL, PRODUCT_TOOL]
    messages = [
        {"role": "system", "content": "You are a store assistant. Use tools."},
        {"role": "user", "content": "Where is my order #W1234567?"},
    ]
    events = await drain(backend.stream(messages, tools=tools, max_tokens=64))
    calls = [e for e in events if isinstance(e, ToolCall)]
    assert calls and all(isinstance(c.arguments, dict) for c in calls)
    assert {c.name for c in calls} <= {"get_order", "search_products"}
    assert isinstance(events[-1], Usage)
    assert "strict" not in ORDER_TOOL["function"]  # the caller's specs are not mutated
    if fake is None:
        return
    assert calls == [
        ToolCall("get_order", {"order_id": "#W1234567"}, id="call-1"),
        ToolCall("search_products", {"query": "lamp", "limit": 3}, id="call-2"),
    ]
    assert not any(isinstance(e, TextDelta) for e in events)
    assert events[-1].finish_reason == "tool_calls"
    sent = fake.requests[-1]
    assert [t["function"]["strict"] for t in sent["tools"]] == [True, True]
    assert sent["tools"][0]["function"]["parameters"] == ORDER_TOOL["function"]["parameters"]
    assert sent["tool_choice"] == "auto"


async def test_invalid_tool_arguments_raise_backend_error(fake, server):
    fake.reset("bad_args")
    backend = backend_for(server.url)
    with pytest.raises(BackendError, match="invalid JSON arguments"):
        await drain(backend.stream([{"role": "user", "content": "order?"}], tools=[ORDER_TOOL]))
    await backend.aclose()


async def test_response_schema_is_sent_as_strict_json_schema(target):
    backend, fake = target
    messages = [{"role": "user", "content": "Decide: answer, ask or handoff. Reply in JSON."}]
    text, calls, usage = await collect_text(backend.stream(messages, response_schema=DECISION_SCHEMA))
    assert json.loads(text)["action"] in ("answer", "ask", "handoff") and usage is not None
    if fake is None:
        return
    assert fake.requests[-1]["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "decision", "schema": DECISION_SCHEMA, "strict": True},
    }


async def test_assistant_tool_call_arguments_are_sent_as_json_strings(fake, server):
    backend = backend_for(server.url)
    history = [
        {"role": "user", "content": "order?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "get_order", "arguments": {"order_id": "#W1"}},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": '{"status": "shipped"}'},
    ]
    await drain(backend.stream(history))
    await backend.aclose()
    sent_call = fake.requests[-1]["messages"][1]["tool_calls"][0]
    assert json.loads(sent_call["function"]["arguments"]) == {"order_id": "#W1"}
    assert isinstance(history[1]["tool_calls"][0]["function"]["arguments"], dict)  # caller's copy intact


# -- failures become BackendError, fast ----------------------------------------------------------------


@pytest.mark.parametrize("mode", ["stall_headers", "stall_after_role", "keepalive"])
async def test_a_stalling_server_raises_within_the_timeout(fake, server, mode):
    fake.reset(mode)
    # read timeout 0.6 s; the keep-alive case never trips it, only the first-token timeout catches it
    backend = backend_for(server.url, timeout_s=0.6)
    started = time.monotonic()
    with pytest.raises(BackendError, match="timeout|timed out|stalled|no response"):
        await asyncio.wait_for(drain(backend.stream([{"role": "user", "content": "hi"}])), 5)
    assert time.monotonic() - started < 2.0
    await backend.aclose()


async def test_a_server_that_dies_mid_stream_raises(fake, server):
    fake.reset("die")
    backend = backend_for(server.url)
    seen = []
    with pytest.raises(BackendError, match="mid-way|ended before"):
        async for event in backend.stream([{"role": "user", "content": "hi"}]):
            seen.append(event)
    assert seen and all(isinstance(e, TextDelta) for e in seen)  # what came before was streamed
    assert (await backend.health()) == {server.url: True}  # health probe brings it back
    await backend.aclose()


async def test_a_stream_that_ends_before_the_completion_raises(fake, server):
    fake.reset("truncated")
    backend = backend_for(server.url)
    with pytest.raises(BackendError, match="ended before"):
        await drain(backend.stream([{"role": "user", "content": "hi"}]))
    await backend.aclose()


async def test_http_500_raises(fake, server):
    fake.reset("http500")
    backend = backend_for(server.url)
    with pytest.raises(BackendError, match="500.*engine dead"):
        await drain(backend.stream([{"role": "user", "content": "hi"}]))
    await backend.aclose()


async def test_connection_refused_raises_and_recovers_when_the_server_returns():
    port = _free_port()
    backend = backend_for(f"http://127.0.0.1:{port}/v1", cooldown_s=0.1)
    with pytest.raises(BackendError, match="no LLM server"):
        await drain(backend.stream([{"role": "user", "content": "hi"}]))
    assert await backend.health() == {f"http://127.0.0.1:{port}/v1": False}
    srv = ServerThread(FakeServer(), port).start()
    try:  # all servers unhealthy: the least-recently-failed one is still tried
        text, _, usage = await collect_text(backend.stream([{"role": "user", "content": "hi"}]))
        assert text == "".join(TEXT_PIECES) and usage is not None
        assert backend.tracker.snapshot() == {srv.url: True}
    finally:
        await backend.aclose()
        srv.stop()


async def test_closed_backend_raises():
    backend = backend_for("http://127.0.0.1:9/v1")
    await backend.aclose()
    with pytest.raises(BackendError, match="closed"):
        await drain(backend.stream([{"role": "user", "content": "hi"}]))


# -- several servers -------------------------------------------------------------------------------------


async def test_requests_go_to_the_healthy_server_and_the_other_is_used_again_once_back(fake, server):
    down_port = _free_port()
    down_url = f"http://127.0.0.1:{down_port}/v1"
    backend = backend_for([down_url, server.url], cooldown_s=0.1)
    for _ in range(4):
        text, _, _ = await collect_text(backend.stream([{"role": "user", "content": "hi"}]))
        assert text == "".join(TEXT_PIECES)
    assert len(fake.requests) == 4
    assert await backend.health() == {down_url: False, server.url: True}

    revived = ServerThread(FakeServer(), down_port).start()
    try:
        deadline = time.monotonic() + 5
        while not revived.fake.requests and time.monotonic() < deadline:  # no health() call: automatic
            await collect_text(backend.stream([{"role": "user", "content": "hi"}]))
            await asyncio.sleep(0.05)
        assert revived.fake.requests, "the recovered server never got traffic back"
        before_a, before_b = len(revived.fake.requests), len(fake.requests)
        for _ in range(4):
            await collect_text(backend.stream([{"role": "user", "content": "hi"}]))
        # round robin between the two healthy servers
        assert len(revived.fake.requests) - before_a == 2 and len(fake.requests) - before_b == 2
        assert await backend.health() == {down_url: True, server.url: True}
    finally:
        await backend.aclose()
        revived.stop()


async def test_a_5xx_server_fails_over_to_the_next():
    bad, good = FakeServer(), FakeServer()
    bad.mode = "http500"
    bad_srv, good_srv = ServerThread(bad, _free_port()).start(), ServerThread(good, _free_port()).start()
    backend = backend_for([bad_srv.url, good_srv.url], cooldown_s=30)
    try:
        for _ in range(3):
            text, _, _ = await collect_text(backend.stream([{"role": "user", "content": "hi"}]))
            assert text == "".join(TEXT_PIECES)
        assert len(bad.requests) == 1 and len(good.requests) == 3  # marked unhealthy after one 500
    finally:
        await backend.aclose()
        bad_srv.stop()
        good_srv.stop()


# -- abort on disconnect ---------------------------------------------------------------------------------


async def test_closing_the_stream_early_makes_the_server_see_the_disconnect(fake, server):
    fake.reset("long")
    backend = backend_for(server.url)
    agen = backend.stream([{"role": "user", "content": "talk"}])
    for _ in range(3):
        assert isinstance(await anext(agen), TextDelta)
    await agen.aclose()
    # Wait *blocking the event loop*: the connection must be closed by the time aclose() returns,
    # not later by a finaliser task the loop would run once the generator is garbage-collected.
    assert fake.disconnected.wait(3), "server never saw the client go away"
    assert fake.completed == 0
    await backend.aclose()


async def test_cancelling_the_consumer_task_makes_the_server_see_the_disconnect(fake, server):
    fake.reset("long")
    backend = backend_for(server.url)
    got = asyncio.Event()

    async def consume():
        async for _ in backend.stream([{"role": "user", "content": "talk"}]):
            got.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(got.wait(), 3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert fake.disconnected.wait(3), "server never saw the client go away"  # loop blocked: see above
    assert fake.completed == 0
    await backend.aclose()


# -- wiring ------------------------------------------------------------------------------------------------


async def test_registered_factory_reads_settings():
    settings = Settings(
        llm_backend="openai_compat",
        llm_base_urls=["http://a:1/v1/", "http://b:2/v1"],
        llm_model="m",
        llm_timeout_s=7.0,
        llm_max_tokens=99,
    )
    backend = create_backend(settings)
    assert isinstance(backend, OpenAICompatBackend) and backend.name == "openai_compat"
    assert backend.base_urls == ["http://a:1/v1", "http://b:2/v1"]
    assert (backend.model, backend.timeout_s, backend.max_tokens) == ("m", 7.0, 99)
    await backend.aclose()
