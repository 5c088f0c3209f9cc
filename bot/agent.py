"""The turn loop: plan -> act (tools) -> answer, streaming protocol events as it goes.

Small models get a grammar-constrained decision whose branches only admit arguments the shopper
actually wrote; capable models get the tool schemas natively. Either way every tool call goes through
the registry's checks, writes wait for a confirmation, and the reply passes the grounding check.
Each step is recorded (decision, tool call, draft, grounding) on the assistant message, so a turn can
be replayed and inspected. No database transaction is held while the model streams.
"""

import asyncio
import json
import logging
import re
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import col, select

from bot import grounding, handoff, sentiment, slots
from bot.llm.base import BackendError, ChatBackend, Message, TextDelta, ToolCall
from bot.prompts import PromptStore
from bot.tools import (
    ToolContext,
    ToolRegistry,
    ToolResult,
    branch_decision,
    default_tools,
    dry_run,
    slot_values,
)
from commerce import customers
from commerce.models import Conversation, ToolCallRecord, utcnow
from commerce.models import Message as MessageRow
from shopdesk.bus import QUEUE_CHANNEL, conversation_channel
from shopdesk.db import session_scope
from shopdesk.metrics import REPLIES_CHECKED, REPLIES_REPAIRED, REPLIES_REPLACED, observe_turn
from shopdesk.redact import redact_value
from shopdesk.settings import Settings

log = logging.getLogger(__name__)

Event = dict[str, Any]

ASK_TEXT = {
    "order_id": "Which order is it about? Please give me the order number: # and W followed by seven digits, as in your confirmation email.",
    "identity": (
        "To help with your account I first need to verify you: please tell me your email, "
        "or your first name, last name and zip code."
    ),
    "clarification": "Could you tell me a bit more about what you need? I can check, list or cancel your orders.",
}
UNAVAILABLE_TEXT = (
    "I'm having trouble answering right now. Your message is saved, and a member of our support team "
    "will reply here."
)
SAFE_FALLBACK = (
    "I can help with your orders: checking an order's status and tracking, listing your orders, "
    "or cancelling an order before it leaves our warehouse. I can also connect you with a person."
)
DECLINED_TEXT = "Okay, I haven't changed anything."
NOTHING_TO_CONFIRM_TEXT = "There is nothing waiting for your confirmation; nothing was changed."
OFF_TOPIC_TEXT = (
    "Sorry, I can only help with this store: your orders, returns, delivery, payments and our products. "
    "Is there anything like that I can do for you?"
)


def _pieces(text: str) -> list[str]:
    """Word-sized chunks, so deterministic replies stream like model text."""
    return re.findall(r"\S+\s*|\s+", text)


class TurnError(Exception):
    pass


class Agent:
    def __init__(
        self,
        backend: ChatBackend,
        engine: Engine,
        settings: Settings,
        tools: ToolRegistry | None = None,
        prompts: PromptStore | None = None,
        store_name: str = "Shopdesk Demo Store",
        retriever: Callable[[], Any] | None = None,
        router: Callable[[], Any] | None = None,
        bus: Any = None,
    ):
        self.backend = backend
        self.engine = engine
        self.settings = settings
        self.tools = tools or default_tools()
        self.prompts = prompts or PromptStore()
        self.store_name = store_name
        # Opens the store's retriever on first use (building an index can take seconds).
        self.retriever = retriever
        # bot.router.IntentRouter factory: orders the small model's choices (None: tool order).
        self._router_factory = router
        self._router: Any = None
        self._router_lock = threading.Lock()
        # shopdesk.bus: what agents' consoles (maybe in other processes) must see of this chat.
        self.bus = bus
        self._background: set[asyncio.Task[None]] = set()

    @property
    def router(self) -> Any:
        if self._router is None and self._router_factory is not None:
            with self._router_lock:  # the server's warm-up thread may be building it right now
                if self._router is None:
                    self._router = self._router_factory()
        return self._router

    # ---- public ---------------------------------------------------------------------------------

    async def run_turn(
        self, conversation_id: str, text: str, client_id: str | None = None
    ) -> AsyncIterator[Event]:
        """Handle one shopper message; yields protocol events and always ends with `done`."""
        started = time.perf_counter()
        turn = _Turn(started, conversation_id)
        # Short synchronous blocks on purpose: threads cost more here (GIL hand-offs) than they save.
        stored = self._store_user_message(conversation_id, text, client_id)
        if stored is None:
            yield {"type": "done", "duplicate": True, "client_id": client_id}
            return
        conv, message_id, mood = stored
        yield {"type": "ack", "message_id": message_id, "client_id": client_id}
        await self.publish(
            conversation_id,
            {
                "type": "shopper_message",
                "message": {"id": message_id, "role": "user", "text": text, "sentiment": mood},
            },
        )
        if conv.state == "closed":  # the shopper writes again: the bot picks the chat back up
            await self.transition(conversation_id, "bot", "reopen")
            conv.state = "bot"
        if conv.state in ("waiting", "agent"):
            # A person has (or will have) this chat: the message is stored and on its way to them.
            if conv.state == "agent" and message_id is not None:
                self.suggest_later(conversation_id, message_id)
            yield {"type": "done"}
            return
        if mood is not None and mood <= self.settings.handoff_sentiment and not conv.pending_action:
            event = await self.transition(
                conversation_id, "waiting", "negative_sentiment", f"sentiment {mood:+.2f}"
            )
            if event is not None:
                yield event
                yield {"type": "done"}
                return

        try:
            if conv.pending_action:
                async for event in self._confirmation(conv, text, turn):
                    yield event
            else:
                async for event in self._plan_and_act(conv, text, turn):
                    yield event
        except BackendError as exc:
            log.warning("backend failed in conversation %s: %s", conversation_id, exc)
            turn.steps.append({"type": "error", "error": str(exc)})
            yield {"type": "error", "code": "llm_unavailable", "message": UNAVAILABLE_TEXT}
            turn.final_text = UNAVAILABLE_TEXT
            turn.draft = ""
            turn.handoff = ("error", "the assistant is unavailable")

        message_id = self._save_reply(conversation_id, turn)
        yield {
            "type": "message",
            "id": message_id,
            "text": turn.final_text,
            "citations": turn.citations,
            "replaced": turn.replaced,
        }
        await self.publish(
            conversation_id,
            {
                "type": "bot_message",
                "message": {
                    "id": message_id,
                    "role": "assistant",
                    "text": turn.final_text,
                    "cards": turn.cards,
                    "citations": turn.citations,
                    "replaced": turn.replaced,
                    "tools": turn.tool_calls,
                },
            },
        )
        if turn.handoff is None and self._count_failed_turn(conversation_id, turn.failed):
            turn.handoff = ("failed_turns", "the assistant could not help twice in a row")
        if turn.handoff is not None:
            trigger, reason = turn.handoff
            # The reply already told the shopper when a tool handed over; otherwise the event does.
            event = await self.transition(
                conversation_id, "waiting", trigger, reason, say=not turn.said_handoff
            )
            if event is not None:
                yield event
        yield {"type": "done", "latency_ms": round((time.perf_counter() - started) * 1000, 1)}

    # ---- handoff and the bus --------------------------------------------------------------------

    async def publish(self, conversation_id: str, event: Event, audience: str = "agent") -> None:
        """Tell the conversation's other sockets: `agent` (consoles) or `all` (the shopper too)."""
        if self.bus is None:
            return
        try:
            await self.bus.publish(
                conversation_channel(conversation_id),
                {**event, "conversation_id": conversation_id, "audience": audience},
            )
        except Exception:  # the bus is a notification; the database already has everything
            log.exception("bus publish failed for %s", conversation_id)

    async def transition(
        self,
        conversation_id: str,
        to: str,
        trigger: str,
        reason: str | None = None,
        agent_id: int | None = None,
        audience: str = "agent",
        say: bool = True,
    ) -> Event | None:
        """Move the conversation through the handoff machine, keep the shopper-facing line in the
        history, and tell consoles (and, for `audience="all"`, the shopper's socket). None when the
        machine refuses (already there); agents' routes call `handoff.move` checks first."""
        with session_scope(self.engine) as db:
            try:
                conv, event = handoff.move(db, conversation_id, to, trigger, reason, agent_id)
            except handoff.InvalidTransition:
                return None
            if not say:
                event.pop("text", None)
            if event.get("text"):
                row = MessageRow(
                    conversation_id=conversation_id,
                    role="system",
                    content=event["text"],
                    meta={"handoff": to, "trigger": trigger},
                )
                db.add(row)
                db.flush()
                event["id"] = row.id
            state = conv.state
        await self.publish(conversation_id, {**event, "trigger": trigger, "reason": reason}, audience)
        if self.bus is not None:
            try:
                await self.bus.publish(
                    QUEUE_CHANNEL,
                    {"type": "queue_changed", "conversation_id": conversation_id, "state": state},
                )
            except Exception:
                log.exception("bus publish failed for the queue")
        return event

    def suggest_later(self, conversation_id: str, message_id: int) -> None:
        """Draft replies for the agent in the background (bot/suggest.py), streamed over the bus."""
        from bot import suggest

        async def run() -> None:
            try:
                async for event in suggest.draft(self, conversation_id, message_id):
                    await self.publish(conversation_id, event)
            except Exception:
                log.exception("suggested replies failed in %s", conversation_id)

        task = asyncio.create_task(run())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def run_agent_action(
        self, conversation_id: str, action: dict[str, Any], agent_id: int, confirm: bool
    ) -> ToolResult:
        """A write a support agent clicked (from a suggestion): proposed first (`confirm=False`
        shows what would happen), run only with `confirm=True`. Authorisation is the conversation's
        bound customer, as for the bot; the agent is the review a risk review asks for, but a fraud
        block still stops it."""
        name = str(action.get("tool", ""))
        if name not in self.tools:
            return ToolResult(outcome="invalid", text=f"There is no action called {name}.")
        tool = self.tools.get(name)
        t0 = time.perf_counter()
        with session_scope(self.engine) as db:
            conv = db.get(Conversation, conversation_id)
            assert conv is not None
            ctx = ToolContext(
                db,
                conv,
                self._user_texts(db, conv.id),
                retriever=self.retriever,
                settings=self.settings,
                reviewed_by=agent_id,
            )
            if not tool.available_to(conv):
                result = ToolResult(outcome="refused", text="This conversation has no verified customer.")
            else:
                try:
                    args = tool.args_model.model_validate(action.get("args") or {})
                except ValueError as exc:
                    return ToolResult(outcome="invalid", text=f"Invalid arguments: {exc}")
                result = await tool.run(args, ctx)
                if result.proposal and confirm and tool.execute is not None:
                    result = await tool.execute(args, ctx)
            result.audit["actor"] = f"agent:{agent_id}"
            outcome = result.outcome if confirm or result.outcome != "proposed" else "proposed"
            self._audit(db, conv.id, tool.name, dict(action.get("args") or {}), outcome, result, t0)
        return result

    def _count_failed_turn(self, conversation_id: str, failed: bool) -> bool:
        """Keep the run of turns that did not help; True when it reaches the handoff threshold."""
        with session_scope(self.engine) as db:
            conv = db.get(Conversation, conversation_id)
            if conv is None or conv.state != "bot":
                return False
            conv.failed_turns = conv.failed_turns + 1 if failed else 0
            db.add(conv)
            return conv.failed_turns >= self.settings.handoff_failed_turns

    async def confirm(self, conversation_id: str, approve: bool) -> AsyncIterator[Event]:
        """The confirm/cancel buttons: the same path as typing yes or no. A button for an action no
        longer waiting (already answered in another tab, or a stale widget) stores nothing and asks
        the model nothing: a "yes" to nothing is not a message."""
        with session_scope(self.engine) as db:
            conv = db.get(Conversation, conversation_id)
            waiting = conv is not None and bool(conv.pending_action)
        if not waiting:
            yield {"type": "error", "code": "nothing_to_confirm", "message": NOTHING_TO_CONFIRM_TEXT}
            yield {"type": "done"}
            return
        async for event in self.run_turn(conversation_id, "yes" if approve else "no"):
            yield event

    # ---- steps ----------------------------------------------------------------------------------

    async def _confirmation(self, conv: Conversation, text: str, turn: "_Turn") -> AsyncIterator[Event]:
        pending = conv.pending_action or {}
        if pending.get("step_up"):
            async for event in self._step_up(conv, pending, text, turn):
                yield event
            return
        answer = slots.yes_or_no(text)
        with session_scope(self.engine) as db:
            conv = db.get(Conversation, conv.id)  # type: ignore[assignment]
            conv.pending_action = None
            db.add(conv)
            if answer is not True:
                self._audit(
                    db, conv.id, pending.get("tool", "?"), pending.get("args", {}), "declined", {}, 0.0, turn
                )
        if answer is None:
            # The shopper moved on: nothing is changed, and the new message is handled normally.
            turn.steps.append({"type": "confirmation", "answer": None})
            async for event in self._plan_and_act(conv, text, turn, preface=DECLINED_TEXT + " "):
                yield event
            return
        if answer is False:
            turn.steps.append({"type": "confirmation", "answer": False})
            if len(text.split()) > 3:  # "no thanks, but where is my order #W...?": answer the rest too
                async for event in self._plan_and_act(conv, text, turn, preface=DECLINED_TEXT + " "):
                    yield event
                return
            async for event in self._say(DECLINED_TEXT, turn):
                yield event
            return
        turn.steps.append({"type": "confirmation", "answer": True})
        tool = self.tools.get(pending["tool"])
        t0 = time.perf_counter()
        with session_scope(self.engine) as db:
            conv = db.get(Conversation, conv.id)  # type: ignore[assignment]
            ctx = ToolContext(
                db, conv, self._user_texts(db, conv.id), retriever=self.retriever, settings=self.settings
            )
            # The proposal was made for one customer; it never runs for another.
            if pending.get("customer_id") != conv.customer_id:
                result = ToolResult(outcome="refused", text="That action is no longer valid.")
            else:
                args = tool.args_model.model_validate(pending["args"])
                result = await (tool.execute or tool.run)(args, ctx)
            self._audit(db, conv.id, tool.name, pending["args"], result.outcome, result, t0, turn)
        async for event in self._emit_result(tool.name, result, turn):
            yield event

    async def _step_up(
        self, conv: Conversation, pending: dict[str, Any], text: str, turn: "_Turn"
    ) -> AsyncIterator[Event]:
        """The shopper answers the risk step-up: the right detail brings the action's proposal, a
        wrong one another try, and a second wrong one (or a refusal) a person."""
        from bot import risk

        step = pending["step_up"]
        tool = self.tools.get(pending["tool"])
        t0 = time.perf_counter()
        with session_scope(self.engine) as db:
            conv = db.get(Conversation, conv.id)  # type: ignore[assignment]
            ctx = ToolContext(
                db, conv, self._user_texts(db, conv.id), retriever=self.retriever, settings=self.settings
            )
            conv.pending_action = None
            passed = pending.get("customer_id") == conv.customer_id and risk.step_up_passes(
                ctx, step["order_id"], text
            )
            turn.steps.append({"type": "step_up", "passed": passed, "attempt": step["attempts"] + 1})
            if passed:
                ctx.cleared_order = step["order_id"]
                result = await tool.run(tool.args_model.model_validate(pending["args"]), ctx)
                if result.proposal:
                    conv.pending_action = result.proposal
            elif step["attempts"] + 1 < risk.MAX_STEP_UP_ATTEMPTS and slots.yes_or_no(text) is not False:
                conv.pending_action = {**pending, "step_up": {**step, "attempts": step["attempts"] + 1}}
                result = ToolResult(
                    outcome="invalid",
                    text="That doesn't match our records. "
                    + risk.STEP_UP_TEXT.format(order_id=step["order_id"]),
                )
            else:
                result = ToolResult(
                    outcome="refused",
                    text=risk.HANDOFF_TEXT,
                    handoff_reason="the shopper could not confirm a detail of the order",
                    handoff_trigger="fraud_review",
                )
            db.add(conv)
            self._audit(
                db,
                conv.id,
                tool.name,
                pending["args"],
                f"step_up_{'passed' if passed else 'failed'}",
                result,
                t0,
                turn,
            )
        async for event in self._emit_result(tool.name, result, turn):
            yield event

    async def _plan_and_act(
        self, conv: Conversation, text: str, turn: "_Turn", preface: str = ""
    ) -> AsyncIterator[Event]:
        history, user_texts, identity = self._load_context(conv)
        turn.user_sources = user_texts
        if self.settings.llm_native_tools:
            async for event in self._native(conv, history, user_texts, turn, preface):
                yield event
            return

        decision = await self._decide(conv, history, text, user_texts, identity, turn)
        action = decision.get("action", "answer")
        if action == "ask":
            need = decision.get("need", "")
            turn.failed = need not in ASK_TEXT or need == "clarification"
            async for event in self._say(preface + ASK_TEXT.get(need, ASK_TEXT["clarification"]), turn):
                yield event
            return
        if action == "decline":
            async for event in self._say(preface + OFF_TOPIC_TEXT, turn):
                yield event
            return
        if action == "answer" or action not in self.tools:
            async for event in self._answer(history, [], turn, preface):
                yield event
            return
        args = {k: v for k, v in decision.items() if k != "action"}
        result = await self._run_tool(conv.id, action, args, user_texts, turn)
        async for event in self._emit_result(action, result, turn, history=history, preface=preface):
            yield event

    async def _decide(
        self,
        conv: Conversation,
        history: list[Message],
        text: str,
        user_texts: list[str],
        identity: str,
        turn: "_Turn",
    ) -> dict[str, Any]:
        verdict = await self._answer_to_question(conv, text, user_texts)
        if verdict is not None:
            turn.answering = verdict["action"]
            turn.steps.append(
                {"type": "decision", "answers": verdict["action"], "valid": True, "decision": verdict}
            )
            return verdict
        verdict = self._sure_decision(conv, text, user_texts)
        if verdict is not None:
            turn.steps.append({"type": "decision", "router": True, "valid": True, "decision": verdict})
            return verdict
        schema, actions, examples = self._decision_schema(conv, user_texts, text)
        prompt = self.prompts.render("decide", conv.id, identity=identity, actions=actions, examples=examples)
        messages = [
            self._system(conv.id),
            *history[:-1],
            {"role": "user", "content": f'{prompt}\nShopper: "{text[:1000]}" ->'},
        ]
        raw_parts: list[str] = []
        async for event in self.backend.stream(messages, response_schema=schema, max_tokens=96):
            if isinstance(event, TextDelta):
                raw_parts.append(event.text)
        raw = "".join(raw_parts)
        try:
            decision = json.loads(raw)
            if not isinstance(decision, dict):
                raise ValueError("not an object")
        except ValueError:
            turn.steps.append({"type": "decision", "raw": raw[:500], "valid": False})
            return {"action": "answer"}
        turn.steps.append({"type": "decision", "raw": raw[:500], "valid": True, "decision": decision})
        return decision

    async def _answer_to_question(
        self, conv: Conversation, text: str, user_texts: list[str]
    ) -> dict[str, Any] | None:
        """The same tool again when the bot's last reply was its question back ("which version of the
        keyboard?") and this message answers it: "linear, no backlight, 80%" names no action, yet it
        continues the exchange. A message answers when it changes what the tool says (a proposal, a
        narrower question); "where is my other order?" changes nothing and takes the usual path, as
        do a no and a message naming another action."""
        asked = self._open_question(conv.id)
        if asked is None or asked[0] not in self.tools or slots.yes_or_no(text) is False:
            return None
        tool = self.tools.get(asked[0])
        others = [t for t in self.tools.available(conv) if t.name != tool.name and t.triggers is not None]
        if not tool.available_to(conv) or any(t.requested_in(text) for t in others):
            return None
        branches = tool.decision_branches(slot_values(user_texts))
        if not branches:
            return None
        decision = branch_decision(branches[0], text)
        args = {k: v for k, v in decision.items() if k != "action"}
        with session_scope(self.engine) as db:
            ctx = ToolContext(db, conv, user_texts, retriever=self.retriever, settings=self.settings)
            preview = await dry_run(tool, args, ctx)
        if preview.outcome == "error" or (
            preview.outcome == "ask" and redact_value(preview.text) == asked[1]
        ):
            return None
        return decision

    def _open_question(self, conversation_id: str) -> tuple[str, str] | None:
        """(tool, the question as audited) when a tool's question back is the bot's latest word: its
        call (outcome "ask") is the conversation's last, made after the shopper's previous message."""
        with session_scope(self.engine) as db:
            last_call = db.exec(
                select(ToolCallRecord)
                .where(ToolCallRecord.conversation_id == conversation_id)
                .order_by(col(ToolCallRecord.id).desc())
            ).first()
            if last_call is None or last_call.outcome != "ask":
                return None
            said = db.exec(
                select(MessageRow.created_at)
                .where(MessageRow.conversation_id == conversation_id, MessageRow.role == "user")
                .order_by(col(MessageRow.id).desc())
                .limit(2)
            ).all()
        if len(said) < 2 or last_call.created_at < said[1]:
            return None
        return last_call.tool, str((last_call.result or {}).get("text", ""))

    def _sure_decision(self, conv: Conversation, text: str, user_texts: list[str]) -> dict[str, Any] | None:
        """Decisions that leave a model nothing to choose, taken in code.

        A guest who writes an email, or a name and a zip, is verifying. With the router: an off-topic
        request is declined, a guest asking for an account action must verify first, and an action
        that needs an order number the shopper has not given asks for it.
        """
        if conv.customer_id is None and "verify_guest" in self.tools:
            given = slot_values([text])
            if given["email"]:
                return {"action": "verify_guest", "email": given["email"][0]}
            pairs = slots.name_pairs(text)
            if pairs and given["zip"]:
                first, last = pairs[0]
                return {
                    "action": "verify_guest",
                    "first_name": first,
                    "last_name": last,
                    "zip": given["zip"][0],
                }
        if self.router is None:
            return None
        requested = [t for t in self.tools.all() if t.requested_in(text)]
        available = {t.name: t for t in requested if t.available_to(conv)}
        locked = [t.name for t in requested if t.needs_identity and conv.customer_id is None]
        ranked = self.router.rank(text, [*available, *locked, "answer", "decline"])
        if ranked[0] == "decline":
            return {"action": "decline"}
        if ranked[0] in locked:
            return {"action": "ask", "need": "identity"}
        top = available.get(ranked[0])
        backing = slot_values(user_texts)
        named_branches = top.decision_branches(backing) if top is not None and top.triggers else []
        if top is not None and named_branches:
            # An action named in so many words ("cancel", "a person") and the router's first pick:
            # the arguments are the shopper's own latest values; writes still wait for a yes.
            return branch_decision(named_branches[0], text)
        # ...unless the help pages may answer it ("how do I change the address of an order?").
        general = [name for name in ranked if name in available and not available[name].needs_identity]
        if top is not None and not general and "order_id" in top.missing_slots(backing):
            return {"action": "ask", "need": "order_id"}
        return None

    def _decision_schema(
        self, conv: Conversation, user_texts: list[str], text: str
    ) -> tuple[dict[str, Any], list[str], list[str]]:
        """Branches: each tool the shopper asked for (with arguments they wrote), then ask and answer.

        Actions the shopper named in so many words (cancel, a person) come first, and the prompt shows
        examples of the offered actions only: a small model leans on the nearest example.
        """
        backing = slot_values(user_texts)
        branches: list[dict[str, Any]] = []
        actions: list[str] = []
        examples: list[str] = []
        offered = [t for t in self.tools.available(conv) if t.requested_in(text)]
        likeliest = offered[0] if offered else None
        free_answer = True
        decline = False  # off-topic requests get a fixed polite refusal (router-detected only)
        if self.router is not None:
            # The router's sure verdicts (decline first, a guest's account action) never get here.
            ranked = self.router.rank(text, [t.name for t in offered] + ["answer", "decline"])
            by_name = {t.name: t for t in offered}
            # Actions named in so many words ("cancel", "a person") stay on offer whatever the
            # router thinks; the rest only when it finds them likely.
            named = [t for t in offered if t.triggers is not None]
            offered = named + [by_name[n] for n in ranked if n in by_name and by_name[n].triggers is None]
            likeliest = next((by_name[n] for n in ranked if n in by_name), None)
            free_answer = "answer" in ranked  # small talk: only when the router finds it plausible
            decline = "decline" in ranked
        offered.sort(key=lambda t: t.triggers is None)  # stable: router order within each group
        for tool in offered:
            tool_branches = tool.decision_branches(backing)
            if tool_branches:
                branches.extend(tool_branches)
                actions.append(f"{tool.name}: {tool.description}")
                if tool.example:
                    examples.append(tool.example)
        # Asking is on offer only when something is missing: the likeliest action lacks a value the
        # shopper has not given, or no action can run at all (a small model asks too readily).
        top_missing = likeliest.missing_slots(backing) if likeliest else {"all"}
        if not branches or top_missing:
            needs = ["order_id", "clarification"] + (["identity"] if conv.customer_id is None else [])
            branches.append(_ask_branch(needs))
            actions.append("ask: ask the shopper for missing information")
        if decline:
            branches.append(_DECLINE_BRANCH)
            actions.append("decline: politely decline a request that is not about this store")
        if free_answer or not branches:
            branches.append(
                {
                    "type": "object",
                    "properties": {"action": {"const": "answer"}},
                    "required": ["action"],
                    "additionalProperties": False,
                }
            )
            actions.append("answer: reply without any action")
        return {"anyOf": branches}, actions, examples

    async def _native(
        self, conv: Conversation, history: list[Message], user_texts: list[str], turn: "_Turn", preface: str
    ) -> AsyncIterator[Event]:
        """Capable models call tools themselves; each call still goes through the registry."""
        messages = [self._system(conv.id), *history]
        specs = self.tools.specs()
        for _round in range(4):
            calls: list[ToolCall] = []
            parts: list[str] = []
            async for event in self.backend.stream(messages, tools=specs):
                if isinstance(event, TextDelta):
                    parts.append(event.text)
                    turn.mark_first_token()
                    yield {"type": "token", "text": event.text}
                elif isinstance(event, ToolCall):
                    calls.append(event)
            if not calls:
                turn.draft = "".join(parts)
                await self._guard(turn, messages[1:], [], preface)
                return
            messages.append(
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": c.id or f"call_{i}",
                            "type": "function",
                            "function": {"name": c.name, "arguments": json.dumps(c.arguments)},
                        }
                        for i, c in enumerate(calls)
                    ],
                }
            )
            for i, call in enumerate(calls):
                result = await self._run_tool(conv.id, call.name, call.arguments, user_texts, turn)
                turn.sources.append(result.text)
                if result.outcome != "ok" or result.proposal or result.handoff_reason:
                    async for event in self._emit_result(call.name, result, turn, preface=preface):
                        yield event
                    return
                turn.citations.extend(result.citations)
                if result.card:
                    turn.cards.append(result.card)
                    yield {"type": "card", "card": result.card}
                messages.append(
                    {"role": "tool", "tool_call_id": call.id or f"call_{i}", "content": result.text}
                )
            with session_scope(self.engine) as db:
                conv = db.get(Conversation, conv.id)  # type: ignore[assignment]
            specs = [t.spec() for t in self.tools.available(conv)]
        turn.failed = True
        async for event in self._say(SAFE_FALLBACK, turn):
            yield event

    async def _run_tool(
        self,
        conversation_id: str,
        name: str,
        args: dict[str, Any],
        user_texts: list[str],
        turn: "_Turn | None" = None,
    ) -> ToolResult:
        t0 = time.perf_counter()
        with session_scope(self.engine) as db:
            conv = db.get(Conversation, conversation_id)
            assert conv is not None
            ctx = ToolContext(
                db,
                conv,
                user_texts,
                retriever=self.retriever,
                settings=self.settings,
                answering=turn.answering if turn is not None else None,
            )
            try:
                result = await self.tools.call(name, args, ctx)
            except Exception:  # a tool bug must not kill the chat
                log.exception("tool %s failed", name)
                db.rollback()
                result = ToolResult(
                    outcome="error", text="Something went wrong on our side with that request."
                )
            if result.proposal:
                conv.pending_action = result.proposal
                db.add(conv)
            self._audit(db, conversation_id, name, args, result.outcome, result, t0, turn)
        return result

    async def _emit_result(
        self,
        tool_name: str,
        result: ToolResult,
        turn: "_Turn",
        history: list[Message] | None = None,
        preface: str = "",
    ) -> AsyncIterator[Event]:
        turn.steps.append({"type": "tool", "tool": tool_name, "outcome": result.outcome})
        if result.outcome in ("invalid", "error"):
            turn.failed = True
        if result.outcome == "error":
            turn.handoff = ("error", f"{tool_name} failed")
        turn.sources.append(result.text)
        turn.citations.extend(result.citations)
        if result.card:
            turn.cards.append(result.card)
            yield {"type": "card", "card": result.card}
        if result.proposal and not result.proposal.get("step_up"):
            yield {
                "type": "confirm",
                "action": result.proposal["tool"],
                "summary": result.proposal["summary"],
                "args": result.proposal["args"],
            }
        if result.handoff_reason:
            turn.handoff = (result.handoff_trigger, result.handoff_reason)
            turn.said_handoff = True  # the result's text is the shopper-facing line
        model_phrases = self.settings.llm_answer_style == "model"
        if result.outcome == "ok" and history is not None and not result.handoff_reason and model_phrases:
            turn.key_facts.extend(result.key_facts)
            async for event in self._answer(history, [result.text], turn, preface):
                yield event
        else:
            async for event in self._say(preface + result.text, turn):
                yield event

    async def _answer(
        self, history: list[Message], facts: list[str], turn: "_Turn", preface: str
    ) -> AsyncIterator[Event]:
        """The model writes the reply from this turn's facts; the grounding guard decides if it stands."""
        messages = self._with_instruction(
            history,
            self.prompts.render("answer", turn.conversation_id, facts="\n".join(facts)),
            turn.conversation_id,
        )
        parts: list[str] = []
        if preface:
            yield {"type": "token", "text": preface}
        async for event in self.backend.stream(messages, max_tokens=self.settings.llm_max_tokens):
            if isinstance(event, TextDelta):
                parts.append(event.text)
                turn.mark_first_token()
                yield {"type": "token", "text": event.text}
        turn.sources.extend(facts)
        turn.draft = "".join(parts)
        await self._guard(turn, history, facts, preface)

    def _with_instruction(
        self, history: list[Message], instruction: str, conversation_id: str | None = None
    ) -> list[Message]:
        """The conversation with this turn's instruction attached to the shopper's last message."""
        messages = [self._system(conversation_id), *history]
        if messages[-1]["role"] != "user":  # after tool results (native tool calling)
            return [*messages, {"role": "user", "content": f"({instruction})"}]
        last = dict(messages[-1])
        last["content"] = f"{last['content']}\n\n({instruction})"
        messages[-1] = last
        return messages

    async def _guard(self, turn: "_Turn", history: list[Message], facts: list[str], preface: str) -> None:
        """No model-written fact reaches the shopper unless the turn's sources support it.

        The streamed draft is checked; an unsupported draft is regenerated once under a stricter
        instruction (not streamed); if that fails too, a reply composed from the sources replaces it.
        Either way the final `message` event carries the checked text with `replaced: true`.
        """
        REPLIES_CHECKED.inc()
        sources = turn.sources + turn.user_sources
        draft = turn.draft.strip()
        result = grounding.check(draft, sources, required=turn.key_facts)
        turn.steps.append({"type": "grounding", "attempt": "draft", **_grounding_step(result)})
        if draft and result.ok:
            turn.final_text = preface + draft
            return
        turn.replaced = True
        instruction = self.prompts.render(
            "answer_strict",
            turn.conversation_id,
            facts="\n".join(facts),
            unsupported=", ".join(result.unsupported + result.missing) or "nothing useful",
        )
        parts: list[str] = []
        async for event in self.backend.stream(
            self._with_instruction(history, instruction, turn.conversation_id),
            max_tokens=self.settings.llm_max_tokens,
        ):
            if isinstance(event, TextDelta):
                parts.append(event.text)
        retry = "".join(parts).strip()
        result = grounding.check(retry, sources, required=turn.key_facts)
        turn.steps.append({"type": "grounding", "attempt": "regenerated", **_grounding_step(result)})
        if retry and result.ok:
            REPLIES_REPAIRED.inc()
            turn.final_text = preface + retry
            return
        REPLIES_REPLACED.inc()
        if not any(turn.sources):
            turn.failed = True  # nothing to say but the generic fallback
        turn.final_text = preface + (" ".join(s for s in turn.sources if s) or SAFE_FALLBACK)

    async def _say(self, text: str, turn: "_Turn") -> AsyncIterator[Event]:
        """A reply built from data, not model text: streamed the same way, nothing to ground."""
        for piece in _pieces(text):
            turn.mark_first_token()
            yield {"type": "token", "text": piece}
        turn.final_text = text
        turn.draft = text

    # ---- persistence and context ----------------------------------------------------------------

    def _store_user_message(
        self, conversation_id: str, text: str, client_id: str | None
    ) -> tuple[Conversation, int | None, float | None] | None:
        """Keep the shopper's message (and its sentiment) before anything can fail; None when this
        client id was seen."""
        with session_scope(self.engine) as db:
            conv = db.get(Conversation, conversation_id)
            if conv is None:
                raise TurnError(f"unknown conversation {conversation_id}")
            if (
                client_id
                and db.exec(
                    select(MessageRow.id).where(
                        MessageRow.conversation_id == conversation_id, MessageRow.client_id == client_id
                    )
                ).first()
            ):
                return None
            mood = sentiment.score(text)
            row = MessageRow(
                conversation_id=conversation_id,
                role="user",
                content=text,
                client_id=client_id,
                sentiment=mood,
            )
            db.add(row)
            conv.updated_at = utcnow()
            db.add(conv)
            db.flush()
            return conv, row.id, mood

    def _load_context(self, conv: Conversation) -> tuple[list[Message], list[str], str]:
        with session_scope(self.engine) as db:
            history, user_texts = self._context(db, conv.id)
            return history, user_texts, self._identity_line(db, conv)

    def _save_reply(self, conversation_id: str, turn: "_Turn") -> int | None:
        latency_ms = round((time.perf_counter() - turn.started) * 1000, 1)
        observe_turn(latency_ms, turn.ttft_ms)
        with session_scope(self.engine) as db:
            row = MessageRow(
                conversation_id=conversation_id,
                role="assistant",
                content=turn.final_text,
                meta={
                    "cards": turn.cards,
                    "citations": turn.citations,
                    "replaced": turn.replaced,
                    "draft": turn.draft if turn.replaced else None,
                    "steps": turn.steps,
                    "ttft_ms": turn.ttft_ms,
                    "failed": turn.failed,  # did not help: analytics' unanswered questions
                    "latency_ms": latency_ms,
                },
            )
            db.add(row)
            db.flush()
            return row.id

    def _audit(
        self,
        db: Any,
        conversation_id: str,
        tool: str,
        args: dict[str, Any],
        outcome: str,
        result: ToolResult | dict[str, Any],
        t0: float,
        turn: "_Turn | None" = None,
    ) -> None:
        detail = (
            {"text": result.text, **result.audit, "card_kind": (result.card or {}).get("kind")}
            if isinstance(result, ToolResult)
            else result
        )
        record = ToolCallRecord(
            conversation_id=conversation_id,
            tool=tool,
            arguments=redact_value(args),  # type: ignore[arg-type]
            outcome=outcome,
            result=redact_value(detail),  # type: ignore[arg-type]
            latency_ms=round((time.perf_counter() - t0) * 1000, 2) if t0 else 0.0,
        )
        db.add(record)
        if turn is not None:
            turn.tool_calls.append(tool_call_view(record))

    def _system(self, conversation_id: str | None = None) -> Message:
        """The system prompt; with a conversation id, the version its A/B test arm gets."""
        content = self.prompts.render("system", conversation_id, store_name=self.store_name)
        return {"role": "system", "content": content}

    def _context(self, db: Any, conversation_id: str) -> tuple[list[Message], list[str]]:
        """The recent messages the model sees, and everything the shopper wrote (arguments must be
        backed by it), from one query."""
        rows = db.exec(
            select(MessageRow.role, MessageRow.content)
            .where(MessageRow.conversation_id == conversation_id)
            .order_by(col(MessageRow.id))
        ).all()
        chat = [r for r in rows if r[0] in ("user", "assistant", "agent")][
            -self.settings.max_history_messages :
        ]
        history: list[Message] = [
            {"role": "user" if role == "user" else "assistant", "content": content[:2000]}
            for role, content in chat
        ]
        return history, [content for role, content in rows if role == "user"]

    def _user_texts(self, db: Any, conversation_id: str) -> list[str]:
        return self._context(db, conversation_id)[1]

    def _identity_line(self, db: Any, conv: Conversation) -> str:
        if conv.customer_id is None:
            return "a guest who is not verified yet"
        customer = customers.get_customer(db, conv.customer_id)
        name = customer.first_name if customer else "a customer"
        return f"{name}, signed in"


def _ask_branch(needs: list[str]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {"action": {"const": "ask"}, "need": {"enum": needs}},
        "required": ["action", "need"],
        "additionalProperties": False,
    }


_DECLINE_BRANCH = {
    "type": "object",
    "properties": {"action": {"const": "decline"}},
    "required": ["action"],
    "additionalProperties": False,
}


def _grounding_step(result: grounding.GroundingResult) -> dict[str, Any]:
    return {"ok": result.ok, "unsupported": result.unsupported, "missing": result.missing}


class _Turn:
    """What one turn accumulates: steps for the audit/replay, sources for grounding, the reply."""

    def __init__(self, started: float, conversation_id: str | None = None):
        self.started = started
        self.conversation_id = conversation_id  # renders the prompt versions its A/B arms get
        self.steps: list[dict[str, Any]] = []
        self.sources: list[str] = []
        self.user_sources: list[str] = []
        self.key_facts: list[str] = []
        self.cards: list[dict[str, Any]] = []
        self.citations: list[dict[str, Any]] = []
        self.draft = ""
        self.final_text = ""
        self.replaced = False
        self.ttft_ms: float | None = None
        self.failed = False  # the turn did not help (clarification, invalid or failed tool, fallback)
        self.handoff: tuple[str, str] | None = None  # (trigger, reason): a person takes over after it
        self.said_handoff = False
        self.tool_calls: list[dict[str, Any]] = []  # for the agents' live transcript
        self.answering: str | None = None  # the tool whose question back this turn's message answers

    def mark_first_token(self) -> None:
        if self.ttft_ms is None:
            self.ttft_ms = round((time.perf_counter() - self.started) * 1000, 1)


def tool_call_view(record: ToolCallRecord) -> dict[str, Any]:
    """A tool call as agents see it in the transcript (arguments and results already redacted)."""
    return {
        "tool": record.tool,
        "outcome": record.outcome,
        "arguments": record.arguments,
        "result": {k: v for k, v in (record.result or {}).items() if k != "text"},
        "text": (record.result or {}).get("text", ""),
        "latency_ms": record.latency_ms,
        "created_at": record.created_at.isoformat() if record.created_at else None,
    }
