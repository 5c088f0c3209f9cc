"""The turn loop: plan -> act (tools) -> answer, streaming protocol events as it goes.

Small models get a grammar-constrained decision whose branches only admit arguments the shopper
actually wrote; capable models get the tool schemas natively. Either way every tool call goes through
the registry's checks, writes wait for a confirmation, and the reply passes the grounding check.
Each step is recorded (decision, tool call, draft, grounding) on the assistant message, so a turn can
be replayed and inspected. No database transaction is held while the model streams.
"""

import json
import logging
import re
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import col, select

from bot import grounding, slots
from bot.llm.base import BackendError, ChatBackend, Message, TextDelta, ToolCall
from bot.prompts import PromptStore
from bot.tools import ToolContext, ToolRegistry, ToolResult, default_tools, slot_values
from commerce import customers
from commerce.models import Conversation, ToolCallRecord, utcnow
from commerce.models import Message as MessageRow
from shopdesk.db import session_scope
from shopdesk.metrics import REPLIES_CHECKED, REPLIES_REPAIRED, REPLIES_REPLACED
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
    "I'm having trouble answering right now. Your message is saved. "
    "Would you like me to connect you with a person from our support team?"
)
SAFE_FALLBACK = (
    "I can help with your orders: checking an order's status and tracking, listing your orders, "
    "or cancelling an order before it leaves our warehouse. I can also connect you with a person."
)
DECLINED_TEXT = "Okay, I haven't changed anything."
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

    @property
    def router(self) -> Any:
        if self._router is None and self._router_factory is not None:
            self._router = self._router_factory()
        return self._router

    # ---- public ---------------------------------------------------------------------------------

    async def run_turn(
        self, conversation_id: str, text: str, client_id: str | None = None
    ) -> AsyncIterator[Event]:
        """Handle one shopper message; yields protocol events and always ends with `done`."""
        started = time.perf_counter()
        turn = _Turn(started)
        # Short synchronous blocks on purpose: threads cost more here (GIL hand-offs) than they save.
        stored = self._store_user_message(conversation_id, text, client_id)
        if stored is None:
            yield {"type": "done", "duplicate": True, "client_id": client_id}
            return
        conv, message_id = stored
        yield {"type": "ack", "message_id": message_id, "client_id": client_id}

        if conv.state in ("waiting", "agent"):
            yield {"type": "handoff", "state": conv.state, "text": "A member of our team will reply here."}
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
            offer = self._offer_handoff(conversation_id, "the assistant is unavailable")
            yield {
                "type": "error",
                "code": "llm_unavailable",
                "message": UNAVAILABLE_TEXT,
                "handoff_offer": True,
            }
            yield {"type": "confirm", "action": "handoff", "summary": offer["summary"], "args": offer["args"]}
            turn.final_text = UNAVAILABLE_TEXT
            turn.draft = ""

        message_id = self._save_reply(conversation_id, turn)
        yield {
            "type": "message",
            "id": message_id,
            "text": turn.final_text,
            "citations": turn.citations,
            "replaced": turn.replaced,
        }
        yield {"type": "done", "latency_ms": round((time.perf_counter() - started) * 1000, 1)}

    async def confirm(self, conversation_id: str, approve: bool) -> AsyncIterator[Event]:
        """The confirm/cancel buttons: the same path as typing yes or no."""
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
                    db, conv.id, pending.get("tool", "?"), pending.get("args", {}), "declined", {}, 0.0
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
            self._audit(db, conv.id, tool.name, pending["args"], result.outcome, result, t0)
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
                conv.state = "waiting"
                result = ToolResult(
                    outcome="refused",
                    text=risk.HANDOFF_TEXT,
                    handoff_reason="the shopper could not confirm a detail of the order",
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
            async for event in self._say(
                preface + ASK_TEXT.get(decision.get("need", ""), ASK_TEXT["clarification"]), turn
            ):
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
        result = await self._run_tool(conv.id, action, args, user_texts)
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
        verdict = self._sure_decision(conv, text, user_texts)
        if verdict is not None:
            turn.steps.append({"type": "decision", "router": True, "valid": True, "decision": verdict})
            return verdict
        schema, actions, examples = self._decision_schema(conv, user_texts, text)
        prompt = self.prompts.render("decide", identity=identity, actions=actions, examples=examples)
        messages = [
            self._system(),
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
            decision: dict[str, Any] = {"action": top.name}
            for name, prop in named_branches[0]["properties"].items():
                if name != "action":
                    decision[name] = prop["enum"][0] if "enum" in prop else text[:200]
            return decision
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
        messages = [self._system(), *history]
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
                result = await self._run_tool(conv.id, call.name, call.arguments, user_texts)
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
        async for event in self._say(SAFE_FALLBACK, turn):
            yield event

    async def _run_tool(
        self, conversation_id: str, name: str, args: dict[str, Any], user_texts: list[str]
    ) -> ToolResult:
        t0 = time.perf_counter()
        with session_scope(self.engine) as db:
            conv = db.get(Conversation, conversation_id)
            assert conv is not None
            ctx = ToolContext(db, conv, user_texts, retriever=self.retriever, settings=self.settings)
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
            self._audit(db, conversation_id, name, args, result.outcome, result, t0)
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
            yield {"type": "handoff", "state": "waiting", "reason": result.handoff_reason}
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
        messages = self._with_instruction(history, self.prompts.render("answer", facts="\n".join(facts)))
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

    def _with_instruction(self, history: list[Message], instruction: str) -> list[Message]:
        """The conversation with this turn's instruction attached to the shopper's last message."""
        messages = [self._system(), *history]
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
            facts="\n".join(facts),
            unsupported=", ".join(result.unsupported + result.missing) or "nothing useful",
        )
        parts: list[str] = []
        async for event in self.backend.stream(
            self._with_instruction(history, instruction), max_tokens=self.settings.llm_max_tokens
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
        turn.final_text = preface + (" ".join(s for s in turn.sources if s) or SAFE_FALLBACK)

    async def _say(self, text: str, turn: "_Turn") -> AsyncIterator[Event]:
        """A reply built from data, not model text: streamed the same way, nothing to ground."""
        for piece in _pieces(text):
            turn.mark_first_token()
            yield {"type": "token", "text": piece}
        turn.final_text = text
        turn.draft = text

    def _offer_handoff(self, conversation_id: str, reason: str) -> dict[str, Any]:
        """When the model fails, a yes must reach a person without needing the model again."""
        with session_scope(self.engine) as db:
            conv = db.get(Conversation, conversation_id)
            assert conv is not None
            offer = {
                "tool": "handoff",
                "args": {"reason": reason},
                "customer_id": conv.customer_id,
                "summary": "Connect you with a person from our support team.",
            }
            conv.pending_action = offer
            db.add(conv)
        return offer

    # ---- persistence and context ----------------------------------------------------------------

    def _store_user_message(
        self, conversation_id: str, text: str, client_id: str | None
    ) -> tuple[Conversation, int | None] | None:
        """Keep the shopper's message before anything can fail; None when this client id was seen."""
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
            row = MessageRow(conversation_id=conversation_id, role="user", content=text, client_id=client_id)
            db.add(row)
            conv.updated_at = utcnow()
            db.add(conv)
            db.flush()
            return conv, row.id

    def _load_context(self, conv: Conversation) -> tuple[list[Message], list[str], str]:
        with session_scope(self.engine) as db:
            history, user_texts = self._context(db, conv.id)
            return history, user_texts, self._identity_line(db, conv)

    def _save_reply(self, conversation_id: str, turn: "_Turn") -> int | None:
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
                    "latency_ms": round((time.perf_counter() - turn.started) * 1000, 1),
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
    ) -> None:
        detail = (
            {"text": result.text, **result.audit, "card_kind": (result.card or {}).get("kind")}
            if isinstance(result, ToolResult)
            else result
        )
        db.add(
            ToolCallRecord(
                conversation_id=conversation_id,
                tool=tool,
                arguments=redact_value(args),  # type: ignore[arg-type]
                outcome=outcome,
                result=redact_value(detail),  # type: ignore[arg-type]
                latency_ms=round((time.perf_counter() - t0) * 1000, 2) if t0 else 0.0,
            )
        )

    def _system(self) -> Message:
        return {"role": "system", "content": self.prompts.render("system", store_name=self.store_name)}

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

    def __init__(self, started: float):
        self.started = started
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

    def mark_first_token(self) -> None:
        if self.ttft_ms is None:
            self.ttft_ms = round((time.perf_counter() - self.started) * 1000, 1)
