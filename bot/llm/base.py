"""The one contract every model backend honours.

Messages use the OpenAI chat format (role/content, assistant `tool_calls`, `tool` results), because
every server we target speaks it and the local backend renders it with the model's chat template.
"""

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

Message = dict[str, Any]
ToolSpec = dict[str, Any]  # OpenAI function-tool schema: {"type": "function", "function": {...}}


@dataclass(frozen=True)
class TextDelta:
    text: str


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: dict[str, Any]
    id: str = ""


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = "stop"
    extra: dict[str, Any] = field(default_factory=dict)


Event = TextDelta | ToolCall | Usage


class BackendError(RuntimeError):
    """The model could not answer (server down, timeout, bad output): the agent degrades gracefully."""


@runtime_checkable
class ChatBackend(Protocol):
    name: str

    def stream(
        self,
        messages: list[Message],
        *,
        tools: list[ToolSpec] | None = None,
        response_schema: dict[str, Any] | None = None,
        max_tokens: int | None = None,
    ) -> AsyncIterator[Event]:
        """Yield text deltas (or, with `tools`, tool calls), then exactly one Usage.

        With `response_schema` the text is JSON valid against that schema (grammar-constrained).
        """
        ...

    async def aclose(self) -> None: ...


async def collect_text(stream: AsyncIterator[Event]) -> tuple[str, list[ToolCall], Usage | None]:
    """Drain a stream: the whole text, the tool calls and the usage record."""
    parts: list[str] = []
    calls: list[ToolCall] = []
    usage: Usage | None = None
    async for event in stream:
        if isinstance(event, TextDelta):
            parts.append(event.text)
        elif isinstance(event, ToolCall):
            calls.append(event)
        elif isinstance(event, Usage):
            usage = event
    return "".join(parts), calls, usage
