"""The backend for vLLM or any OpenAI-compatible chat-completions server.

It speaks the wire protocol directly with httpx (one POST `/chat/completions` with `stream: true`,
server-sent events back), so every failure mode is ours to map: connection refused, 5xx, a server
that stalls before the first token, a stream cut mid-way. Each of them becomes a `BackendError`.

Several base URLs are served round robin among the healthy ones. A small circuit breaker per URL
marks a server unhealthy when it fails, re-probes it (`GET {base}/models`) in the background once a
cool-down has passed, and brings it back when the probe answers. With every server unhealthy, a
request goes to the one that failed longest ago, so recovery needs no operator.

Closing the stream early (the shopper left, the task was cancelled) closes the HTTP response at
once: the server sees the disconnect and aborts the generation instead of finishing it for nobody.

`tool_choice` (constructor default, or per call; an extra keyword of this backend only, outside the
ChatBackend protocol) is sent as is: "auto" (the default), "required", "none" or a named tool
`{"type": "function", "function": {"name": ...}}`. A small model never calls a tool by itself under
"auto"; "required" makes vLLM constrain the output to a tool call (grammar-enforced), which is how
the local backend behaves with tools. Two cases relax a *default* of "required" to "auto" (a
per-call choice is always sent unchanged): the last message is a tool result (the model answers now,
as the local backend does, instead of calling tools forever), and a `response_schema` comes with the
tools (vLLM then constrains to "a tool call or JSON valid under the schema"; with "required" it
would drop the schema).
"""

import asyncio
import copy
import json
import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx

from bot.llm import register
from bot.llm.base import BackendError, Event, Message, TextDelta, ToolCall, ToolSpec, Usage
from shopdesk.settings import Settings

SCHEMA_NAME = "decision"


@dataclass
class Endpoint:
    """One server's health, as the circuit breaker sees it."""

    url: str
    healthy: bool = True
    failures: int = 0  # consecutive
    last_failure: float = -math.inf  # monotonic seconds; -inf: never failed
    retry_at: float = 0.0  # when an unhealthy server may be probed again
    last_error: str = ""
    probing: bool = False


class HealthTracker:
    """Round robin over healthy servers; a circuit breaker with exponential cool-down for the rest."""

    def __init__(self, urls: list[str], *, cooldown_s: float = 2.0, max_cooldown_s: float = 30.0, clock=None):
        if not urls:
            raise ValueError("at least one base URL is needed")
        self.endpoints = [Endpoint(url) for url in urls]
        self.cooldown_s = cooldown_s
        self.max_cooldown_s = max_cooldown_s
        self._clock = clock or time.monotonic
        self._turn = 0

    def candidates(self) -> list[Endpoint]:
        """The servers to try for one request, in order (later ones are failovers)."""
        healthy = [ep for ep in self.endpoints if ep.healthy]
        if not healthy:
            return [min(self.endpoints, key=lambda ep: ep.last_failure)]
        start = self._turn % len(healthy)
        self._turn += 1
        return healthy[start:] + healthy[:start]

    def due_for_probe(self) -> list[Endpoint]:
        now = self._clock()
        return [ep for ep in self.endpoints if not ep.healthy and not ep.probing and now >= ep.retry_at]

    def succeeded(self, ep: Endpoint) -> None:
        ep.healthy, ep.failures, ep.last_error = True, 0, ""

    def failed(self, ep: Endpoint, error: str) -> None:
        now = self._clock()
        ep.failures += 1
        ep.healthy = False
        ep.last_failure = now
        ep.last_error = error
        ep.retry_at = now + min(self.cooldown_s * 2 ** (ep.failures - 1), self.max_cooldown_s)

    def snapshot(self) -> dict[str, bool]:
        return {ep.url: ep.healthy for ep in self.endpoints}


def _strict_tools(tools: list[ToolSpec]) -> list[ToolSpec]:
    """Copies of the tool specs, each function marked strict unless it says otherwise."""
    out = []
    for spec in tools:
        spec = copy.deepcopy(spec)
        if "function" not in spec and "name" in spec:  # a bare function spec
            spec = {"type": "function", "function": spec}
        spec.setdefault("type", "function")
        spec["function"].setdefault("strict", True)
        out.append(spec)
    return out


def _wire_messages(messages: list[Message]) -> list[Message]:
    """OpenAI wants assistant tool-call arguments as a JSON string; the agent may hold dicts."""
    out = []
    for message in messages:
        calls = message.get("tool_calls")
        if calls and any(not isinstance(c.get("function", {}).get("arguments", ""), str) for c in calls):
            message = {**message, "tool_calls": [copy.deepcopy(c) for c in calls]}
            for call in message["tool_calls"]:
                fn = call.get("function", {})
                if not isinstance(fn.get("arguments", ""), str):
                    fn["arguments"] = json.dumps(fn["arguments"])
        out.append(message)
    return out


@dataclass
class _PartialCall:
    id: str = ""
    name: str = ""
    arguments: str = ""


def _finish_call(index: int, part: _PartialCall) -> ToolCall:
    if not part.name:
        raise BackendError(f"tool call #{index} came without a function name")
    try:
        arguments = json.loads(part.arguments) if part.arguments.strip() else {}
    except json.JSONDecodeError as exc:
        raise BackendError(
            f"tool call {part.name!r} has invalid JSON arguments ({exc.msg}): {part.arguments[:200]!r}"
        ) from None
    if not isinstance(arguments, dict):
        raise BackendError(
            f"tool call {part.name!r} arguments are not a JSON object: {part.arguments[:200]!r}"
        )
    return ToolCall(name=part.name, arguments=arguments, id=part.id)


class OpenAICompatBackend:
    """Chat completions from vLLM (or any OpenAI-compatible server), streamed, over several servers."""

    name = "openai_compat"

    def __init__(
        self,
        base_urls: list[str] | str,
        model: str,
        *,
        api_key: str = "EMPTY",
        timeout_s: float = 60.0,
        first_token_timeout_s: float | None = None,
        max_tokens: int = 160,
        temperature: float = 0.0,
        cooldown_s: float = 2.0,
        max_cooldown_s: float = 30.0,
        probe_timeout_s: float | None = None,
        tool_choice: str | dict[str, Any] = "auto",
        transport: httpx.AsyncBaseTransport | None = None,
    ):
        urls = [base_urls] if isinstance(base_urls, str) else list(base_urls)
        self.base_urls = [url.rstrip("/") for url in urls]
        self.model = model
        self.timeout_s = timeout_s
        self.first_token_timeout_s = first_token_timeout_s if first_token_timeout_s is not None else timeout_s
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.tool_choice = tool_choice
        self.probe_timeout_s = probe_timeout_s if probe_timeout_s is not None else min(timeout_s, 2.0)
        self.tracker = HealthTracker(self.base_urls, cooldown_s=cooldown_s, max_cooldown_s=max_cooldown_s)
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_s),
            headers={"Authorization": f"Bearer {api_key}"},
            transport=transport,
        )
        self._probes: set[asyncio.Task] = set()
        self._closed = False

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> "OpenAICompatBackend":
        options: dict[str, Any] = {
            "api_key": settings.llm_api_key.get_secret_value(),
            "timeout_s": settings.llm_timeout_s,
            "max_tokens": settings.llm_max_tokens,
            "temperature": settings.llm_temperature,
        }
        options.update(overrides)
        return cls(settings.llm_base_urls, settings.llm_model, **options)

    # -- the one public call ---------------------------------------------------------------------

    async def stream(
        self,
        messages: list[Message],
        *,
        tools: list[ToolSpec] | None = None,
        response_schema: dict[str, Any] | None = None,
        max_tokens: int | None = None,
        tool_choice: str | dict[str, Any] | None = None,
    ) -> AsyncIterator[Event]:
        body = self._request_body(messages, tools, response_schema, max_tokens, tool_choice)
        loop = asyncio.get_running_loop()
        started = loop.time()
        first_deadline = started + self.first_token_timeout_s
        response, endpoint = await self._open(body, first_deadline)

        parts: list[str] = []
        calls: dict[int, _PartialCall] = {}
        usage: dict[str, Any] | None = None
        finish_reason: str | None = None
        pieces = 0  # streamed content/tool fragments: the token count when the server sends none
        ttft: float | None = None
        done = False
        try:
            lines = response.aiter_lines()
            data: list[str] = []
            while not done:
                try:
                    async with asyncio.timeout_at(first_deadline if ttft is None else None):
                        line = await anext(lines, None)
                except TimeoutError:
                    raise self._fail(
                        endpoint,
                        f"no output within the first-token timeout ({self.first_token_timeout_s:g}s)",
                    ) from None
                except httpx.TimeoutException:
                    raise self._fail(endpoint, f"stream stalled (no data for {self.timeout_s:g}s)") from None
                except httpx.HTTPError as exc:
                    raise self._fail(endpoint, f"stream broke mid-way: {exc!r}") from None

                if line is not None and line.startswith("data:"):
                    data.append(line[5:].removeprefix(" "))
                    continue
                if line is not None and line != "":
                    continue  # ":" keep-alive comments and other SSE fields
                if not data:
                    if line is None:
                        break
                    continue
                payload, data = "\n".join(data), []
                if payload.strip() == "[DONE]":
                    done = True
                    break
                chunk = self._parse_chunk(endpoint, payload)
                if chunk.get("usage"):
                    usage = chunk["usage"]
                for choice in chunk.get("choices") or []:
                    if choice.get("index", 0) != 0:
                        continue
                    delta = choice.get("delta") or {}
                    for fragment in delta.get("tool_calls") or []:
                        self._add_fragment(calls, fragment)
                        pieces += 1
                    text = delta.get("content")
                    if text:
                        pieces += 1
                        parts.append(text)
                        if ttft is None:
                            ttft = loop.time() - started
                        yield TextDelta(text)
                    elif delta.get("tool_calls") and ttft is None:
                        ttft = loop.time() - started
                    if choice.get("finish_reason"):
                        finish_reason = choice["finish_reason"]
                if line is None:
                    break
        finally:
            # Runs on completion, error, cancellation and early close (GeneratorExit): closing an
            # unfinished response drops the connection, which is how the server learns to abort.
            await response.aclose()

        if not done and finish_reason is None:
            raise self._fail(endpoint, "stream ended before the completion finished")
        self.tracker.succeeded(endpoint)

        for index in sorted(calls):
            yield _finish_call(index, calls[index])
        if response_schema is not None and not calls:
            text = "".join(parts)
            try:
                json.loads(text)
            except json.JSONDecodeError:
                raise BackendError(
                    f"structured output is not valid JSON (finish_reason={finish_reason}): {text[:200]!r}"
                ) from None

        extra: dict[str, Any] = {"base_url": endpoint.url, "ttft_s": ttft}
        if usage:
            prompt_tokens = int(usage.get("prompt_tokens") or 0)
            completion_tokens = int(usage.get("completion_tokens") or 0)
        else:
            prompt_tokens = sum(len(str(m.get("content") or "")) for m in messages) // 4
            completion_tokens = pieces
            extra["estimated"] = True
        yield Usage(
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            finish_reason=finish_reason or "stop",
            extra=extra,
        )

    # -- health ----------------------------------------------------------------------------------

    async def health(self) -> dict[str, bool]:
        """Probe every server now; returns {base_url: healthy} and updates the circuit breaker."""
        await asyncio.gather(*(self._probe(ep) for ep in self.tracker.endpoints))
        return self.tracker.snapshot()

    async def aclose(self) -> None:
        self._closed = True
        for task in list(self._probes):
            task.cancel()
        if self._probes:
            await asyncio.gather(*self._probes, return_exceptions=True)
        await self._client.aclose()

    # -- internals -------------------------------------------------------------------------------

    def _request_body(
        self,
        messages: list[Message],
        tools: list[ToolSpec] | None,
        response_schema: dict[str, Any] | None,
        max_tokens: int | None,
        tool_choice: str | dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": _wire_messages(messages),
            "stream": True,
            "stream_options": {"include_usage": True},
            "max_tokens": max_tokens if max_tokens is not None else self.max_tokens,
            "temperature": self.temperature,
        }
        if tools:
            body["tools"] = _strict_tools(tools)
            if tool_choice is None:
                tool_choice = self.tool_choice
                answering = bool(messages) and messages[-1].get("role") == "tool"
                if tool_choice == "required" and (answering or response_schema is not None):
                    tool_choice = "auto"
            body["tool_choice"] = tool_choice
        if response_schema is not None:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": SCHEMA_NAME, "schema": response_schema, "strict": True},
            }
        return body

    async def _open(self, body: dict[str, Any], deadline: float) -> tuple[httpx.Response, Endpoint]:
        """Send the request to a healthy server (failing over on refusals and 5xx); the open response."""
        if self._closed:
            raise BackendError("the openai_compat backend is closed")
        candidates = self.tracker.candidates()
        self._schedule_probes()
        errors: list[str] = []
        for ep in candidates:
            request = self._client.build_request("POST", f"{ep.url}/chat/completions", json=body)
            try:
                async with asyncio.timeout_at(deadline):
                    response = await self._client.send(request, stream=True)
            except TimeoutError:
                raise self._fail(ep, f"no response within {self.first_token_timeout_s:g}s") from None
            except httpx.TimeoutException as exc:
                raise self._fail(ep, f"timed out ({type(exc).__name__}, {self.timeout_s:g}s)") from None
            except httpx.HTTPError as exc:  # refused, reset, DNS...: try the next server
                self._fail(ep, f"cannot connect: {exc!r}")
                errors.append(f"{ep.url}: {exc!r}")
                continue
            if response.status_code < 400:
                self.tracker.succeeded(ep)
                return response, ep
            detail = await self._error_detail(response, deadline)
            if response.status_code >= 500 or response.status_code == 429:
                if response.status_code >= 500:
                    self._fail(ep, f"HTTP {response.status_code}: {detail}")
                errors.append(f"{ep.url}: HTTP {response.status_code}: {detail}")
                continue
            raise BackendError(f"{ep.url} rejected the request: HTTP {response.status_code}: {detail}")
        raise BackendError("no LLM server could take the request: " + "; ".join(errors))

    async def _error_detail(self, response: httpx.Response, deadline: float) -> str:
        try:
            async with asyncio.timeout_at(deadline):
                raw = await response.aread()
        except (TimeoutError, httpx.HTTPError):
            return "(no body)"
        finally:
            await response.aclose()
        try:
            err = json.loads(raw)
            if isinstance(err, dict):
                inner = err.get("error", err)
                message = inner.get("message") if isinstance(inner, dict) else inner
                return str(message or err.get("detail") or raw[:300])[:300]
        except ValueError:
            pass
        return raw[:300].decode(errors="replace")

    def _parse_chunk(self, ep: Endpoint, payload: str) -> dict[str, Any]:
        try:
            chunk = json.loads(payload)
        except json.JSONDecodeError:
            raise BackendError(f"{ep.url} sent a malformed stream chunk: {payload[:200]!r}") from None
        if not isinstance(chunk, dict):
            raise BackendError(f"{ep.url} sent a malformed stream chunk: {payload[:200]!r}")
        if "error" in chunk or chunk.get("object") == "error":
            err = chunk.get("error", chunk)
            message = err.get("message", err) if isinstance(err, dict) else err
            raise BackendError(f"{ep.url} reported an error mid-stream: {message}")
        return chunk

    @staticmethod
    def _add_fragment(calls: dict[int, _PartialCall], fragment: dict[str, Any]) -> None:
        part = calls.setdefault(int(fragment.get("index", 0)), _PartialCall())
        if fragment.get("id"):
            part.id = fragment["id"]
        fn = fragment.get("function") or {}
        name = fn.get("name")
        if name and name != part.name:  # some servers repeat the whole name on every fragment
            part.name += name
        if fn.get("arguments"):
            part.arguments += fn["arguments"]

    def _fail(self, ep: Endpoint, message: str) -> BackendError:
        self.tracker.failed(ep, message)
        return BackendError(f"{ep.url}: {message}")

    def _schedule_probes(self) -> None:
        if self._closed:
            return
        for ep in self.tracker.due_for_probe():
            ep.probing = True
            task = asyncio.get_running_loop().create_task(self._probe(ep))
            self._probes.add(task)
            task.add_done_callback(self._probes.discard)

    async def _probe(self, ep: Endpoint) -> bool:
        ep.probing = True
        try:
            response = await self._client.get(f"{ep.url}/models", timeout=self.probe_timeout_s)
            ok = response.status_code < 400
            error = "" if ok else f"health probe: HTTP {response.status_code}"
        except httpx.HTTPError as exc:
            ok, error = False, f"health probe: {exc!r}"
        except RuntimeError as exc:  # the client was closed under us
            ok, error = False, f"health probe: {exc}"
        finally:
            ep.probing = False
        if ok:
            self.tracker.succeeded(ep)
        else:
            self.tracker.failed(ep, error)
        return ok


@register("openai_compat")
def _factory(settings: Settings) -> OpenAICompatBackend:
    return OpenAICompatBackend.from_settings(settings)
