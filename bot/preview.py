"""An admin's unsaved prompt, tried for real: one turn on the running backend in a throwaway conversation.

The turn runs through a copy of the live agent (same backend, tools, retriever, router) whose prompt
store renders the edited text for that prompt and records every prompt it renders; the copy has no
bus, so no console hears about it. Afterwards the conversation and everything recorded for it are
deleted, so previews never show up in the analytics.
"""

import copy
import time
import uuid
from typing import Any

from sqlalchemy import delete
from sqlalchemy.engine import Engine
from sqlmodel import Session, SQLModel, col, select

from bot.agent import Agent
from bot.prompts import Prompt, PromptStore, parse_prompt
from commerce.models import Conversation, Customer, ToolCallRecord

MAX_EVENTS = 2000


class _RecordingStore(PromptStore):
    """Renders `name` from the edit and everything else from the files, noting each render."""

    def __init__(self, base: PromptStore, name: str, text: str):
        super().__init__(base.directory, None)
        self._overrides = {name: parse_prompt(text, name)}
        self.rendered: list[dict[str, str]] = []

    def for_conversation(self, name: str, conversation_id: str | None) -> Prompt:
        return self.get(name)

    def render(self, name: str, conversation_id: str | None = None, **values: Any) -> str:
        text = super().render(name, None, **values)
        self.rendered.append({"name": name, "text": text})
        return text


async def preview_turn(
    agent: Agent, name: str, text: str, message: str, customer_id: str | None = None
) -> dict[str, Any]:
    """The reply, tool calls, cards and rendered prompts of one turn under the edited prompt."""
    engine: Engine = agent.engine
    store = _RecordingStore(agent.prompts, name, text)
    trial = copy.copy(agent)
    trial.prompts = store
    trial.bus = None
    if hasattr(trial, "_background"):
        trial._background = set()
    conversation_id = str(uuid.uuid4())
    with Session(engine) as db:
        if customer_id is not None and db.get(Customer, customer_id) is None:
            raise LookupError(f"unknown customer {customer_id!r}")
        db.add(
            Conversation(
                id=conversation_id,
                customer_id=customer_id,
                identity="customer" if customer_id else "guest",
                tags=["admin-preview"],
            )
        )
        db.commit()
    started = time.perf_counter()
    events: list[dict[str, Any]] = []
    try:
        async for event in trial.run_turn(conversation_id, message):
            if len(events) < MAX_EVENTS:
                events.append(event)
        with Session(engine) as db:
            calls = db.exec(
                select(ToolCallRecord)
                .where(ToolCallRecord.conversation_id == conversation_id)
                .order_by(col(ToolCallRecord.id))
            ).all()
            tool_calls = [
                {"tool": c.tool, "arguments": c.arguments, "outcome": c.outcome, "latency_ms": c.latency_ms}
                for c in calls
            ]
    finally:
        discard_conversation(engine, conversation_id)
    final = next((e for e in reversed(events) if e.get("type") == "message"), {})
    greeting = None
    if name == "greeting":
        greeting = store.render("greeting", store_name=agent.store_name)
    return {
        "message": message,
        "reply": final.get("text", ""),
        "replaced": bool(final.get("replaced")),
        "citations": final.get("citations", []),
        "cards": [e["card"] for e in events if e.get("type") == "card"],
        "events": [e for e in events if e.get("type") not in ("token", "ack")],
        "tool_calls": tool_calls,
        "prompts": store.rendered,
        "greeting": greeting,
        "seconds": round(time.perf_counter() - started, 3),
    }


def discard_conversation(engine: Engine, conversation_id: str) -> None:
    """Delete a conversation and every row that names it (children first: foreign keys)."""
    with Session(engine) as db:
        for table in reversed(SQLModel.metadata.sorted_tables):
            if table.name != "conversation" and "conversation_id" in table.c:
                db.execute(delete(table).where(table.c.conversation_id == conversation_id))
        db.execute(delete(Conversation).where(col(Conversation.id) == conversation_id))  # type: ignore[arg-type]
        db.commit()
