"""Model backends, registered by name and chosen by settings."""

from collections.abc import Callable

from bot.llm.base import BackendError, ChatBackend, Event, Message, TextDelta, ToolCall, ToolSpec, Usage
from shopdesk.settings import Settings

_FACTORIES: dict[str, Callable[[Settings], ChatBackend]] = {}


def register(name: str) -> Callable[[Callable[[Settings], ChatBackend]], Callable[[Settings], ChatBackend]]:
    def deco(factory: Callable[[Settings], ChatBackend]) -> Callable[[Settings], ChatBackend]:
        _FACTORIES[name] = factory
        return factory

    return deco


def create_backend(settings: Settings, name: str | None = None) -> ChatBackend:
    """Build the backend named by settings (imports lazily: torch only when `local` is chosen)."""
    name = name or settings.llm_backend
    if name == "local":
        from bot.llm import local  # noqa: F401
    elif name == "openai_compat":
        from bot.llm import openai_compat  # noqa: F401
    elif name == "scripted":
        from bot.llm import scripted  # noqa: F401
    if name not in _FACTORIES:
        raise ValueError(f"unknown LLM backend {name!r}; known: local, openai_compat, scripted")
    return _FACTORIES[name](settings)


__all__ = [
    "BackendError",
    "ChatBackend",
    "Event",
    "Message",
    "TextDelta",
    "ToolCall",
    "ToolSpec",
    "Usage",
    "create_backend",
    "register",
]
