"""A deterministic backend for tests and demos (the part `llm`'s markov model plays).

It replays a script: each `stream()` call takes the next item. A string streams as word-sized text
deltas; a dict streams as its JSON text (for schema-constrained calls); a ToolCall is emitted as one.
A callable script is asked for each reply instead. With nothing scripted, it answers with the
smallest JSON valid under the schema, or echoes the last user message: always valid, never clever.
"""

import asyncio
import json
import re
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

from bot.llm import register
from bot.llm.base import Event, Message, TextDelta, ToolCall, ToolSpec, Usage
from shopdesk.settings import Settings

ScriptItem = str | dict | ToolCall
ScriptFn = Callable[[list[Message], list[ToolSpec] | None, dict | None], ScriptItem]


def minimal_instance(schema: dict[str, Any]) -> Any:
    """The smallest value valid under a (simple) JSON schema: first branch, first enum, required keys."""
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return schema["enum"][0]
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return minimal_instance(schema[key][0])
    kind = schema.get("type", "object")
    if isinstance(kind, list):
        kind = kind[0]
    if kind == "object":
        props = schema.get("properties", {})
        return {name: minimal_instance(props.get(name, {})) for name in schema.get("required", [])}
    if kind == "array":
        return [minimal_instance(schema.get("items", {})) for _ in range(schema.get("minItems", 0))]
    if kind == "string":
        return "x" * schema.get("minLength", 0)
    if kind in ("integer", "number"):
        return schema.get("minimum", 0)
    if kind == "boolean":
        return False
    return None


class ScriptedBackend:
    name = "scripted"

    def __init__(self, script: Iterable[ScriptItem] | ScriptFn | None = None, delay_s: float = 0.0):
        self._fn: ScriptFn | None = script if callable(script) else None
        self._queue: deque[ScriptItem] = deque() if script is None or callable(script) else deque(script)
        self.delay_s = delay_s
        self.calls: list[dict[str, Any]] = []  # what the agent asked, for assertions
        self.aborted = 0  # streams the consumer closed before the end (a shopper who left)

    def push(self, *items: ScriptItem) -> None:
        self._queue.extend(items)

    def reset(self) -> None:
        """Forget what is left of the script (a scenario turn scripts its own replies)."""
        self._queue.clear()

    def _next(self, messages: list[Message], tools: list[ToolSpec] | None, schema: dict | None) -> ScriptItem:
        if self._queue:
            return self._queue.popleft()
        if self._fn is not None:
            return self._fn(messages, tools, schema)
        if schema is not None:
            return minimal_instance(schema)
        last_user = next((m.get("content") or "" for m in reversed(messages) if m["role"] == "user"), "")
        return f"You said: {last_user[:200]}"

    async def stream(
        self,
        messages: list[Message],
        *,
        tools: list[ToolSpec] | None = None,
        response_schema: dict[str, Any] | None = None,
        max_tokens: int | None = None,
    ) -> AsyncIterator[Event]:
        self.calls.append({"messages": messages, "tools": tools, "response_schema": response_schema})
        item = self._next(messages, tools, response_schema)
        produced = 0
        truncated = False
        finished = False
        try:
            if isinstance(item, ToolCall):
                produced = 1
                yield item
            else:
                text = json.dumps(item) if isinstance(item, dict) else str(item)
                for piece in re.findall(r"\S+\s*|\s+", text):
                    if max_tokens is not None and produced >= max_tokens:
                        truncated = True
                        break
                    if self.delay_s:
                        await asyncio.sleep(self.delay_s)
                    produced += 1
                    yield TextDelta(piece)
            finished = True
        finally:
            if not finished:
                self.aborted += 1
        prompt_tokens = sum(len(str(m.get("content") or "").split()) for m in messages)
        yield Usage(
            prompt_tokens=prompt_tokens,
            completion_tokens=produced,
            finish_reason="length" if truncated else "stop",
        )

    async def aclose(self) -> None:
        return None


@register("scripted")
def _factory(settings: Settings) -> ScriptedBackend:
    return ScriptedBackend()
