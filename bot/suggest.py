"""Suggested replies for a support agent: for each new shopper message in an agent-handled chat, up to
three drafts with their sources, and the action the shopper asked for, ready for the agent's click.

The drafts come from the same places as the bot's own answers: a lookup the shopper asked for (order
status, stock, recommendations) run for the conversation's bound customer, the best help-page
section (cited), and a model-written reply from those facts that must pass the grounding check.
A write (cancel, return, exchange, address change) is only *proposed*: it runs when the agent clicks
it, through `Agent.run_agent_action`, with the same authorisation and confirmation as the bot's.
Events: `suggestion_delta` while the model drafts, then `suggestions` with the stored rows.
"""

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from bot import grounding
from bot.llm.base import TextDelta
from bot.tools import Tool, ToolContext, ToolResult, branch_decision, dry_run, slot_values
from commerce.models import Conversation, SuggestedReply
from commerce.models import Message as MessageRow
from shopdesk.db import session_scope

if TYPE_CHECKING:
    from bot.agent import Agent

MAX_SUGGESTIONS = 3
# What the agent's button says for a proposed write.
ACTION_VERBS = {
    "cancel_order": "cancel order {order_id}",
    "return_order": "start a return for order {order_id}",
    "exchange_items": "arrange the exchange for order {order_id}",
    "change_address": "change the shipping address of order {order_id}",
}
_NOT_SUGGESTED = {"handoff", "verify_guest", "search_knowledge"}


async def draft(agent: "Agent", conversation_id: str, message_id: int) -> AsyncIterator[dict[str, Any]]:
    with session_scope(agent.engine) as db:
        conv = db.get(Conversation, conversation_id)
        message = db.get(MessageRow, message_id)
        if conv is None or message is None or message.role != "user":
            return
        history, user_texts = agent._context(db, conversation_id)
    text = message.content
    drafts: list[dict[str, Any]] = []
    facts: list[str] = []

    tool = _requested_tool(agent, conv, text)
    if tool is not None:
        args = _arguments(tool, user_texts, text)
        if args is not None and tool.execute is not None:
            preview = await _preview(agent, conversation_id, tool, args, user_texts)
            if preview.proposal:
                label = ACTION_VERBS.get(tool.name, tool.name.replace("_", " ")).format(
                    **{"order_id": "", **args}
                )
                drafts.append(
                    {
                        "text": f"I can {label} for you now. Shall I go ahead?",
                        "citations": [],
                        "action": {"tool": tool.name, "args": args, "label": label[:1].upper() + label[1:]},
                    }
                )
            elif preview.text:  # not this customer's order, already cancelled...: say so, offer nothing
                facts.append(preview.text)
                drafts.append({"text": preview.text, "citations": [], "card": preview.card})
        elif args is not None:
            result = await _lookup(agent, conversation_id, tool, args, user_texts)
            if result.outcome == "ok":
                facts.append(result.text)
                drafts.append({"text": result.text, "citations": result.citations, "card": result.card})

    knowledge = agent.tools.get("search_knowledge") if "search_knowledge" in agent.tools else None
    if knowledge is not None and agent.retriever is not None:
        result = await _lookup(agent, conversation_id, knowledge, {"query": text[:500]}, user_texts)
        if result.outcome == "ok":
            facts.append(result.text)
            drafts.append({"text": result.text, "citations": result.citations})

    written = ""
    async for event in _model_draft(agent, history, facts, message_id):
        if event["type"] == "suggestion_delta":
            yield event
        else:
            written = event["text"]
    if written and grounding.check(written, [*facts, *user_texts]).ok:
        citations = [c for d in drafts for c in d.get("citations", [])]
        drafts.insert(0 if facts else len(drafts), {"text": written, "citations": citations, "model": True})

    seen: set[str] = set()
    unique = [d for d in drafts if not (d["text"] in seen or seen.add(d["text"]))][:MAX_SUGGESTIONS]  # type: ignore[func-returns-value]
    with session_scope(agent.engine) as db:
        rows = [
            SuggestedReply(
                conversation_id=conversation_id,
                message_id=message_id,
                rank=i,
                text=d["text"],
                citations=d.get("citations", []),
                action=d.get("action"),
            )
            for i, d in enumerate(unique)
        ]
        db.add_all(rows)
        db.flush()
        out = [suggestion_view(row, unique[i].get("card")) for i, row in enumerate(rows)]
    yield {"type": "suggestions", "message_id": message_id, "suggestions": out}


def suggestion_view(row: SuggestedReply, card: dict[str, Any] | None = None) -> dict[str, Any]:
    view: dict[str, Any] = {
        "id": row.id,
        "message_id": row.message_id,
        "rank": row.rank,
        "text": row.text,
        "citations": row.citations,
        "action": row.action,
        "status": row.status,
    }
    if card:
        view["card"] = card
    return view


def _requested_tool(agent: "Agent", conv: Conversation, text: str) -> Tool | None:
    """The action or lookup the shopper asked for, as the bot's router ranks them."""
    offered = [
        t for t in agent.tools.available(conv) if t.requested_in(text) and t.name not in _NOT_SUGGESTED
    ]
    if not offered:
        return None
    router = agent.router
    if router is None:
        return offered[0]
    ranked = router.rank(text, [t.name for t in offered] + ["answer"])
    by_name = {t.name: t for t in offered}
    top = next((by_name[name] for name in ranked if name in by_name), None)
    # Only an action the shopper named ("cancel", "return") or the router's first pick.
    if top is not None and (top.triggers is not None and top.triggers.search(text) or ranked[0] == top.name):
        return top
    return None


def _arguments(tool: Tool, user_texts: list[str], text: str) -> dict[str, Any] | None:
    """The tool's arguments from what the shopper wrote (latest first); None when one is missing."""
    branches = tool.decision_branches(slot_values(user_texts))
    if not branches:
        return None
    args = {k: v for k, v in branch_decision(branches[0], text).items() if k != "action"}
    try:
        return tool.args_model.model_validate(args).model_dump()
    except Exception:
        return None


async def _lookup(
    agent: "Agent", conversation_id: str, tool: Tool, args: dict[str, Any], user_texts: list[str]
) -> ToolResult:
    """A read-only tool run for the conversation's own customer (nothing is stored as pending)."""
    with session_scope(agent.engine) as db:
        conv = db.get(Conversation, conversation_id)
        assert conv is not None
        ctx = ToolContext(db, conv, user_texts, retriever=agent.retriever, settings=agent.settings)
        try:
            return await agent.tools.call(tool.name, args, ctx)
        except Exception:
            db.rollback()
            return ToolResult(outcome="error", text="")


async def _preview(
    agent: "Agent", conversation_id: str, tool: Tool, args: dict[str, Any], user_texts: list[str]
) -> ToolResult:
    """What the agent's click would propose, checked now, as `Agent.run_agent_action` checks it (the
    bound customer, the order's state, the risk gate with the assigned agent as reviewer): a button
    for an action that would be refused is a promise the agent cannot keep. Nothing is written."""
    with session_scope(agent.engine) as db:
        conv = db.get(Conversation, conversation_id)
        assert conv is not None
        if not tool.available_to(conv):
            return ToolResult(outcome="refused", text="")
        ctx = ToolContext(
            db,
            conv,
            user_texts,
            retriever=agent.retriever,
            settings=agent.settings,
            reviewed_by=conv.assigned_agent_id,
        )
        return await dry_run(tool, args, ctx)


async def _model_draft(
    agent: "Agent", history: list[Any], facts: list[str], message_id: int
) -> AsyncIterator[dict[str, Any]]:
    instruction = agent.prompts.render("suggest_reply", facts="\n".join(facts))
    parts: list[str] = []
    try:
        async for event in agent.backend.stream(
            agent._with_instruction(history, instruction), max_tokens=agent.settings.llm_max_tokens
        ):
            if isinstance(event, TextDelta):
                parts.append(event.text)
                yield {"type": "suggestion_delta", "message_id": message_id, "text": event.text}
    except Exception:  # the model is down: the data-built drafts still go out
        parts = []
    yield {"type": "draft_done", "text": "".join(parts).strip()}
