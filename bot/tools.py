"""The tool registry: what the bot can do, and the rules every call passes through.

Authorisation comes from the session (ToolContext.customer_id), never from arguments: a tool looks an
order up and then checks it belongs to the session's customer. A refusal reads exactly like "not
found", so probing other customers' order ids learns nothing. Writes return a proposal first and run
only after the shopper confirms (`execute`).
"""

import asyncio
import copy
import functools
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError
from sqlmodel import Session

from bot import slots
from commerce import customers, orders
from commerce.models import Conversation

# "ask": a question back to the shopper for a choice the tool cannot make for them (which item, which
# size, an address to fix); a step of the request, not a failed turn.
Outcome = Literal["ok", "refused", "invalid", "ask", "proposed", "confirmed", "error"]


@dataclass
class ToolContext:
    db: Session
    conversation: Conversation
    user_texts: list[str]  # everything the shopper wrote in this conversation, oldest first
    # Opens the store's retriever (retrieval.search.Retriever) on first use; None: not configured.
    retriever: Callable[[], Any] | None = None
    settings: Any = None  # shopdesk.settings.Settings of the running agent (None: the process's)
    cleared_order: str | None = None  # an order the shopper just proved they hold (risk step-up)
    reviewed_by: int | None = None  # a support agent runs this action: they are the risk review
    answering: str | None = None  # the tool whose question back ("which version?") this message answers

    @property
    def customer_id(self) -> str | None:
        return self.conversation.customer_id

    def now(self) -> datetime:
        """The store's clock (Settings.store_now): what return windows and risk are measured against."""
        from shopdesk.settings import get_settings

        return (self.settings or get_settings()).store_now()


class ToolResult(BaseModel):
    outcome: Outcome
    text: str  # factual sentence(s) built from data: the answer prompt's facts and the grounded fallback
    data: dict[str, Any] = Field(default_factory=dict)
    card: dict[str, Any] | None = None
    proposal: dict[str, Any] | None = None
    handoff_reason: str | None = None  # set: a person takes over (bot/handoff.py moves the state)
    handoff_trigger: str = "shopper_request"  # bot.handoff.BOT_TRIGGERS
    key_facts: list[str] = Field(default_factory=list)  # what a reply phrased by the model must state
    citations: list[dict[str, Any]] = Field(default_factory=list)  # documents the reply rests on
    audit: dict[str, Any] = Field(default_factory=dict)  # internal detail for the audit log only


Handler = Callable[[Any, ToolContext], Awaitable[ToolResult]]


@functools.cache
def args_schema(model: type[BaseModel]) -> dict[str, Any]:
    """A tool's argument schema, built once (pydantic rebuilds it on every call otherwise)."""
    return model.model_json_schema()


@dataclass
class Tool:
    name: str
    description: str
    args_model: type[BaseModel]
    run: Handler
    execute: Handler | None = None  # the confirmed write, for tools that need confirmation
    needs_identity: bool = True
    guest_only: bool = False
    # Alternative sets of required arguments (verify by email, or by name + zip).
    arg_sets: list[list[str]] = field(default_factory=list)
    # Words the shopper's latest message must contain for this action to be on offer at all: a model
    # never cancels or hands off on its own initiative.
    triggers: re.Pattern[str] | None = None
    example: str = ""  # one line of the decision prompt: a shopper message and the JSON it maps to
    utterances: tuple[str, ...] = ()  # typical shopper messages, for the intent router

    def requested_in(self, text: str) -> bool:
        return self.triggers is None or bool(self.triggers.search(text))

    @property
    def needs_confirmation(self) -> bool:
        return self.execute is not None

    def parameters(self) -> dict[str, Any]:
        """Strict JSON schema of the arguments: every property listed, nothing extra ($defs kept)."""
        schema = args_schema(self.args_model)
        props = {
            k: {kk: vv for kk, vv in v.items() if kk not in ("title", "slot")}
            for k, v in schema.get("properties", {}).items()
        }
        strict: dict[str, Any] = {
            "type": "object",
            "properties": props,
            "required": list(props),
            "additionalProperties": False,
        }
        if "$defs" in schema:
            strict["$defs"] = schema["$defs"]
        return strict

    def spec(self) -> dict[str, Any]:
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.parameters(),
                "strict": True,
            },
        }

    def available_to(self, conversation: Conversation) -> bool:
        signed_in = conversation.customer_id is not None
        return not (self.needs_identity and not signed_in) and not (self.guest_only and signed_in)

    def missing_slots(self, backing: dict[str, list[str]]) -> set[str]:
        """Slots this tool needs (in every argument set) that the shopper has given no value for."""
        schema = args_schema(self.args_model)
        fields = schema.get("properties", {})
        sets = self.arg_sets or [[n for n in fields if n in schema.get("required", [])]]
        per_set = [
            {
                fields[n].get("slot")
                for n in names
                if fields[n].get("slot") and not backing.get(fields[n]["slot"])
            }
            for names in sets
        ]
        return set.intersection(*per_set) if per_set else set()

    def decision_branches(self, backing: dict[str, list[str]]) -> list[dict[str, Any]]:
        """Grammar branches for this tool in which every slot argument is one the shopper wrote."""
        schema = args_schema(self.args_model)
        fields = schema.get("properties", {})
        sets = self.arg_sets or [[n for n in fields if n in schema.get("required", [])]]
        branches = []
        for required in sets:
            props: dict[str, Any] = {"action": {"const": self.name}}
            for name in required:
                prop = copy.deepcopy(fields[name])
                slot = prop.pop("slot", None)
                prop.pop("title", None)
                if slot is not None:
                    values = backing.get(slot, [])
                    if not values:
                        break
                    prop = {"enum": values}
                props[name] = prop
            else:
                branches.append(
                    {
                        "type": "object",
                        "properties": props,
                        "required": list(props),
                        "additionalProperties": False,
                    }
                )
        return branches


class ToolRegistry:
    def __init__(self, tools: list[Tool]):
        self._tools = {t.name: t for t in tools}

    def __contains__(self, name: str) -> bool:
        return name in self._tools

    def get(self, name: str) -> Tool:
        return self._tools[name]

    def all(self) -> list[Tool]:
        return list(self._tools.values())

    def specs(self) -> list[dict[str, Any]]:
        """Every tool's strict schema, in a fixed order: the same bytes for every shopper and turn, so a
        server's prefix cache hits. What a session may actually do is decided in `call`, not here."""
        return [t.spec() for t in self._tools.values()]

    def available(self, conversation: Conversation) -> list[Tool]:
        return [t for t in self._tools.values() if t.available_to(conversation)]

    async def call(self, name: str, raw_args: dict[str, Any], ctx: ToolContext) -> ToolResult:
        """Validate, authorise and check the arguments against the shopper's words, then run."""
        if name not in self._tools:
            return ToolResult(outcome="invalid", text=f"There is no action called {name}.")
        tool = self._tools[name]
        if not tool.available_to(ctx.conversation):
            if tool.needs_identity:
                return ToolResult(
                    outcome="refused",
                    text="Please verify who you are first: your email, or your first name, last name and zip code.",
                    audit={"reason": "not_verified"},
                )
            return ToolResult(
                outcome="refused", text="You are already signed in.", audit={"reason": "signed_in"}
            )
        try:
            args = tool.args_model.model_validate(raw_args or {})
        except ValidationError as exc:
            return ToolResult(
                outcome="invalid",
                text="I need a little more information for that.",
                audit={"errors": exc.errors(include_url=False)},
            )
        latest = ctx.user_texts[-1] if ctx.user_texts else ""
        if tool.needs_confirmation and not (tool.requested_in(latest) or ctx.answering == tool.name):
            return ToolResult(
                outcome="invalid",
                text="I can do that if you ask me to; what would you like?",
                audit={"reason": "not_requested"},
            )
        unbacked = unbacked_arguments(args, ctx.user_texts)
        if unbacked:
            return ToolResult(
                outcome="invalid",
                text="Could you tell me the " + " and ".join(f.replace("_", " ") for f in unbacked) + "?",
                audit={"unbacked": unbacked},
            )
        return await tool.run(args, ctx)


def branch_decision(branch: dict[str, Any], text: str) -> dict[str, Any]:
    """A decision from one of a tool's decision branches, taken in code: enum arguments are the
    shopper's own values (the branch offers only those), free-text ones their latest message."""
    decision: dict[str, Any] = {}
    for name, prop in branch["properties"].items():
        if name == "action":
            decision["action"] = prop["const"]
        else:
            decision[name] = prop["enum"][0] if "enum" in prop else text[:200]
    return decision


async def dry_run(tool: Tool, args: dict[str, Any], ctx: ToolContext) -> ToolResult:
    """What the tool would say now, keeping nothing it wrote: a look before offering or continuing an
    action (the real call runs, and is audited, separately). Bad arguments or a tool bug: "error"."""
    try:
        return await tool.run(tool.args_model.model_validate(args), ctx)
    except Exception:
        return ToolResult(outcome="error", text="")
    finally:
        ctx.db.rollback()


def unbacked_arguments(args: BaseModel, user_texts: list[str]) -> list[str]:
    """Slot arguments whose value the shopper never wrote (so the model made them up)."""
    said = "\n".join(user_texts)
    backing = slot_values(user_texts)
    missing = []
    for name, info in type(args).model_fields.items():
        slot = (
            (info.json_schema_extra or {}).get("slot") if isinstance(info.json_schema_extra, dict) else None
        )
        value = getattr(args, name)
        if slot is None or value is None:
            continue
        if slot in ("first_name", "last_name"):
            if str(value).lower() not in slots.words(said):
                missing.append(name)
        elif slot == "phrase":  # free words (an item's name, an address): each must be the shopper's
            if not slots.phrase_backed(str(value), said):
                missing.append(name)
        elif str(value).lower() not in {v.lower() for v in backing.get(slot, [])}:
            missing.append(name)
    return missing


def slot_values(user_texts: list[str]) -> dict[str, list[str]]:
    """Values each slot may take: what the shopper wrote, the latest message's values first (a
    small model takes the first value it may, and "actually, it's #W..." corrects what came before).

    An order number in the latest message is the only one on offer: a shopper going through orders
    one by one means the one they just wrote, and a small model under the grammar took an earlier
    one ("status of #W1620235" answered with #W1539823's card). Without one, the newest comes first."""
    said = "\n".join(user_texts)
    latest = user_texts[-1] if user_texts else ""

    def latest_first(extract: Callable[[str], list[Any]]) -> list[Any]:
        return list(dict.fromkeys(extract(latest) + extract(said)))

    pairs = latest_first(slots.name_pairs)
    names = [w.capitalize() for w in dict.fromkeys(w for w in slots.words(said) if len(w) > 1)]
    reasons = ["no longer needed", "ordered by mistake"]
    return {
        "first_name": list(dict.fromkeys([a for a, _ in pairs] + sorted(names)))[:64],
        "last_name": list(dict.fromkeys([b for _, b in pairs] + sorted(names)))[:64],
        "order_id": list(dict.fromkeys(slots.order_ids(latest)))
        or list(dict.fromkeys(i for t in reversed(user_texts) for i in slots.order_ids(t))),  # newest first
        "email": latest_first(slots.emails),
        "zip": latest_first(slots.zips),
        "item_id": latest_first(slots.item_ids),
        "cancel_reason": sorted(reasons, key=lambda r: r != slots.cancel_reason(latest)),
    }


# ---- the tools ----------------------------------------------------------------------------------

NOT_FOUND = "I couldn't find order {order_id} on your account. Could you check the order number?"


class NoArgs(BaseModel):
    pass


class OrderArgs(BaseModel):
    order_id: str = Field(
        description="The order id the shopper wrote, like #W1234567",
        pattern=r"^#?[Ww]?[0-9]{7}$",
        max_length=9,
        json_schema_extra={"slot": "order_id"},
    )


class CancelArgs(OrderArgs):
    reason: Literal["no longer needed", "ordered by mistake"] = Field(
        description="Why the shopper cancels", json_schema_extra={"slot": "cancel_reason"}
    )


class VerifyArgs(BaseModel):
    email: str | None = Field(default=None, max_length=254, json_schema_extra={"slot": "email"})
    first_name: str | None = Field(default=None, max_length=100, json_schema_extra={"slot": "first_name"})
    last_name: str | None = Field(default=None, max_length=100, json_schema_extra={"slot": "last_name"})
    zip: str | None = Field(default=None, pattern=r"^[0-9]{5}$", json_schema_extra={"slot": "zip"})


class SearchArgs(BaseModel):
    query: str | None = Field(
        default=None, max_length=500, description="What to look up; the shopper's own question when empty"
    )


class HandoffArgs(BaseModel):
    reason: str = Field(description="Why a person should take over", max_length=200)


def _owned_order(ctx: ToolContext, order_id: str):  # type: ignore[no-untyped-def]
    """The order if it exists and belongs to the session's customer; None either way otherwise."""
    canonical = orders.normalize_order_id(order_id)
    order = orders.get_order(ctx.db, canonical) if canonical else None
    if order is None or order.customer_id != ctx.customer_id:
        return None, ("not_found" if order is None else "not_owner")
    return order, ""


def not_found(order_id: str, why: str) -> ToolResult:
    """The same words whether the order does not exist or is someone else's; the audit knows which."""
    return ToolResult(outcome="refused", text=NOT_FOUND.format(order_id=order_id), audit={"reason": why})


def order_fact(view: dict[str, Any]) -> str:
    """One factual paragraph about an order, every value straight from the store."""
    parts = [f"Order {view['id']} is {view['status']}."]
    items = view.get("items", [])
    if items:
        names = ", ".join(i["name"] for i in items)
        parts.append(
            f"It has {len(items)} item{'s' if len(items) != 1 else ''} ({names}), total ${view['total']:.2f}."
        )
    for ship in view.get("shipments", []):
        line = f"Shipped with {ship['carrier']}, tracking number {ship['tracking_id']}"
        if ship.get("delivered_at"):
            line += f", delivered on {str(ship['delivered_at'])[:10]}."
        elif ship.get("estimated_delivery"):
            line += f", estimated delivery {ship['estimated_delivery']}."
        else:
            line += "."
        parts.append(line)
    if view["status"] == "pending":
        parts.append("It has not shipped yet, so it can still be cancelled.")
    if view.get("cancel_reason"):
        parts.append(f"It was cancelled ({view['cancel_reason']}).")
    return " ".join(parts)


def order_card(view: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "order", **view}


async def order_status(args: OrderArgs, ctx: ToolContext) -> ToolResult:
    order, why = _owned_order(ctx, args.order_id)
    if order is None:
        return not_found(args.order_id, why)
    view = orders.order_view(ctx.db, order)
    return ToolResult(
        outcome="ok",
        text=order_fact(view),
        data=view,
        card=order_card(view),
        key_facts=[view["id"], view["status"]],
    )


async def list_my_orders(args: NoArgs, ctx: ToolContext) -> ToolResult:
    assert ctx.customer_id is not None
    rows = orders.list_orders(ctx.db, ctx.customer_id)
    views = [orders.order_view(ctx.db, o) for o in rows]
    summary = [
        {
            "id": v["id"],
            "status": v["status"],
            "created_at": v["created_at"],
            "total": v["total"],
            "items": len(v["items"]),
        }
        for v in views
    ]
    if not summary:
        return ToolResult(outcome="ok", text="You have no orders yet.", data={"orders": []})
    lines = "; ".join(f"{s['id']} ({s['status']}, {s['items']} items, ${s['total']:.2f})" for s in summary)
    return ToolResult(
        outcome="ok",
        text=f"You have {len(summary)} order{'s' if len(summary) != 1 else ''}: {lines}.",
        data={"orders": summary},
        card={"kind": "order_list", "orders": summary},
    )


def propose(tool: str, args: BaseModel, ctx: ToolContext, view: dict[str, Any], summary: str) -> ToolResult:
    """A write on an order, waiting for the shopper's yes (the agent keeps it as the pending action)."""
    return ToolResult(
        outcome="proposed",
        text=summary + " Shall I go ahead? Please answer yes or no.",
        data=view,
        card=order_card(view),
        proposal={
            "tool": tool,
            "args": args.model_dump(),
            "customer_id": ctx.customer_id,
            "summary": summary,
        },
    )


async def propose_cancel(args: CancelArgs, ctx: ToolContext) -> ToolResult:
    order, why = _owned_order(ctx, args.order_id)
    if order is None:
        return not_found(args.order_id, why)
    view = orders.order_view(ctx.db, order)
    if order.status != "pending":
        return ToolResult(
            outcome="refused",
            text=f"Order {order.id} is {order.status}, and only pending orders can be cancelled.",
            data=view,
            card=order_card(view),
            audit={"reason": f"status_{order.status}"},
        )
    from bot import risk

    stopped = risk.gate(ctx, order, "cancel", "cancel_order", args.model_dump())
    if stopped is not None:
        return stopped
    summary = (
        f"Cancel order {order.id} ({len(view['items'])} items, ${view['total']:.2f}), reason: {args.reason}. "
        "The refund goes back to the original payment method."
    )
    return propose("cancel_order", args, ctx, view, summary)


async def execute_cancel(args: CancelArgs, ctx: ToolContext) -> ToolResult:
    order, why = _owned_order(ctx, args.order_id)
    if order is None:
        return not_found(args.order_id, why)
    try:
        order = orders.cancel_order(ctx.db, order.id, args.reason, now=ctx.now())
    except orders.OrderNotCancellable as exc:
        return ToolResult(outcome="refused", text=f"Order {order.id} can no longer be cancelled ({exc}).")
    view = orders.order_view(ctx.db, order)
    return ToolResult(
        outcome="confirmed",
        text=f"Done: order {order.id} is cancelled. The refund of ${view['total']:.2f} goes back to the original payment method.",
        data=view,
        card=order_card(view),
    )


async def propose_return(args: OrderArgs, ctx: ToolContext) -> ToolResult:
    order, why = _owned_order(ctx, args.order_id)
    if order is None:
        return not_found(args.order_id, why)
    view = orders.order_view(ctx.db, order)
    try:
        orders.check_returnable(ctx.db, order, now=ctx.now())
    except orders.OrderNotReturnable as exc:
        return ToolResult(
            outcome="refused",
            text=f"Order {order.id} can't be returned: {exc.why}.",
            data=view,
            card=order_card(view),
            audit={"reason": "not_returnable"},
        )
    from bot import risk

    stopped = risk.gate(ctx, order, "return", "return_order", args.model_dump())
    if stopped is not None:
        return stopped
    names = ", ".join(i["name"] for i in view["items"])
    summary = (
        f"Return order {order.id} ({names}, ${view['total']:.2f}). We email you a prepaid label, and the "
        "refund goes to the original payment method once the items are back."
    )
    return propose("return_order", args, ctx, view, summary)


async def execute_return(args: OrderArgs, ctx: ToolContext) -> ToolResult:
    order, why = _owned_order(ctx, args.order_id)
    if order is None:
        return not_found(args.order_id, why)
    try:
        order = orders.request_return(ctx.db, order.id, now=ctx.now())
    except orders.OrderNotReturnable as exc:
        return ToolResult(outcome="refused", text=f"Order {order.id} can no longer be returned: {exc.why}.")
    view = orders.order_view(ctx.db, order)
    return ToolResult(
        outcome="confirmed",
        text=f"Done: the return of order {order.id} is requested. We'll email you a prepaid label.",
        data=view,
        card=order_card(view),
    )


SEARCH_MIN_SCORE = 0.0  # fused scores are rank-based; an empty result is the real "no answer"
# A question about what the store allows ("can I exchange my boots for...") is answered by a policy
# page even when a product's own page matches the product's name better.
_POLICY_CUES = re.compile(
    r"\b(return|exchange|refund|warrant|ship|deliver|carrier|pay|paid|card|gift card|cancel|price|"
    r"policy|polic|privacy|data|address|hours|contact)|退货|退款|换货|运费|配送|付款|保修|隐私",
    re.IGNORECASE,
)


async def search_knowledge(args: SearchArgs, ctx: ToolContext) -> ToolResult:
    """The store's policy and product pages: the reply is the best section, cited, never invented."""
    query = (args.query or (ctx.user_texts[-1] if ctx.user_texts else "")).strip()

    def search() -> list[Any] | None:
        retriever = ctx.retriever() if ctx.retriever is not None else None
        return None if retriever is None else retriever.search(query, k=5)

    # In a thread: embedding the query takes tens of ms of CPU (and the first call loads the index),
    # which on the event loop would stall every other chat's stream.
    passages = await asyncio.to_thread(search)
    if passages is None:
        return ToolResult(outcome="error", text="Our help pages are not available right now.")
    if _POLICY_CUES.search(query):
        passages.sort(key=lambda p: not p.source.startswith("policies/"))  # stable: keeps the ranking
    passages = passages[:3]
    if not passages:
        return ToolResult(
            outcome="refused",
            text="I couldn't find that in our help pages. Would you like me to connect you with a person?",
            audit={"reason": "no_passage"},
        )
    best = passages[0]
    # Neighbouring sections of the same page often answer together ("which orders" + "how long").
    used = [best] + [p for p in passages[1:2] if p.source == best.source]
    parts = []
    for passage in used:
        body = "\n".join(line for line in passage.text.strip().splitlines() if not line.startswith("#"))
        parts.append(f"{passage.section or passage.title}: {body.strip()}")
    text = f"From our {best.title} page. " + "\n\n".join(parts)
    citations = [
        {"source": p.source, "title": p.title, "anchor": p.anchor, "section": p.section or p.title}
        for p in used
    ]
    return ToolResult(
        outcome="ok",
        text=text,
        data={"passages": [p.to_dict() for p in passages]},
        citations=citations,
    )


async def verify_guest(args: VerifyArgs, ctx: ToolContext) -> ToolResult:
    customer = None
    if args.email:
        customer = customers.find_by_email(ctx.db, args.email)
    elif args.first_name and args.last_name and args.zip:
        customer = customers.find_by_name_zip(ctx.db, args.first_name, args.last_name, args.zip)
    else:
        return ToolResult(
            outcome="invalid", text="Please give your email, or your first name, last name and zip code."
        )
    if customer is None:
        return ToolResult(
            outcome="refused",
            text="I couldn't verify those details. Please check your email, or your name and zip code.",
            audit={"reason": "no_match"},
        )
    ctx.conversation.customer_id = customer.id
    ctx.conversation.identity = "verified_guest"
    ctx.db.add(ctx.conversation)
    return ToolResult(
        outcome="ok",
        text=f"Thanks {customer.first_name}, you are verified. How can I help with your orders?",
        data={"customer_id": customer.id, "first_name": customer.first_name},
    )


async def handoff(args: HandoffArgs, ctx: ToolContext) -> ToolResult:
    """The agent moves the conversation to `waiting` (bot/handoff.py) when it sees the reason."""
    from bot.handoff import SHOPPER_TEXT

    return ToolResult(
        outcome="ok",
        text=SHOPPER_TEXT["shopper_request"],
        handoff_reason=args.reason.strip() or "the shopper asked for a person",
        handoff_trigger="shopper_request",
    )


def default_tools() -> ToolRegistry:
    from bot.catalog_tools import catalog_tools
    from bot.order_tools import order_write_tools

    return ToolRegistry(
        [
            Tool(
                "verify_guest",
                "Verify a guest shopper by email, or by first name + last name + zip code.",
                VerifyArgs,
                verify_guest,
                needs_identity=False,
                guest_only=True,
                arg_sets=[["email"], ["first_name", "last_name", "zip"]],
                utterances=(
                    "my email is ann@example.com",
                    "I'm Ann Lee, zip 10001",
                    "you can find me with my email",
                    "my name is John Smith and my zip code is 94110",
                    "我的邮箱是 ann@example.com",
                ),
                example='"my email is ann@example.com" -> {"action":"verify_guest","email":"ann@example.com"}',
            ),
            Tool(
                "list_orders",
                "List the shopper's own orders.",
                NoArgs,
                list_my_orders,
                utterances=(
                    "what did I order?",
                    "show me my orders",
                    "list my recent purchases",
                    "which orders do I have with you?",
                    "我有哪些订单？",
                    "查看我的订单",
                ),
                example='"what did I order?" -> {"action":"list_orders"}',
            ),
            Tool(
                "order_status",
                "Status, items, carrier, tracking and delivery estimate of one of the shopper's orders.",
                OrderArgs,
                order_status,
                utterances=(
                    "where is my order #W1234567?",
                    "has my order shipped yet?",
                    "what's the tracking number for my package",
                    "when will my order #W7654321 arrive?",
                    "status of my order please",
                    "我的订单到哪里了？",
                    "帮我查一下订单的物流状态",
                ),
                example='"where is my order #W1234567?" -> {"action":"order_status","order_id":"#W1234567"}',
            ),
            Tool(
                "cancel_order",
                "Cancel one of the shopper's pending orders (asks for confirmation).",
                CancelArgs,
                propose_cancel,
                execute=execute_cancel,
                utterances=(
                    "please cancel my order #W1234567",
                    "I want to cancel the order, I don't need it anymore",
                    "cancel it, I ordered by mistake",
                    "请取消我的订单",
                ),
                triggers=re.compile(r"\bcancel|取消", re.IGNORECASE),
                example=(
                    '"please cancel #W7654321, I don\'t need it" -> '
                    '{"action":"cancel_order","order_id":"#W7654321","reason":"no longer needed"}'
                ),
            ),
            Tool(
                "return_order",
                "Return one of the shopper's delivered orders within 30 days of delivery (asks for confirmation).",
                OrderArgs,
                propose_return,
                execute=execute_return,
                utterances=(
                    "I want to return my order #W1234567",
                    "please start a return for order #W7654321",
                    "I'd like to send my order back",
                    "我想退货，订单#W1234567",
                ),
                triggers=re.compile(r"\breturn|send (?:it|them|this|the \w+) back|退货|退回", re.IGNORECASE),
                example='"I want to return #W7654321" -> {"action":"return_order","order_id":"#W7654321"}',
            ),
            Tool(
                "search_knowledge",
                "Look up the store's policies (returns, shipping, payments, warranty...) and product pages.",
                SearchArgs,
                search_knowledge,
                utterances=(
                    "how long do I have to return a delivered item?",
                    "what is your return policy?",
                    "do you ship with FedEx? how long does delivery take?",
                    "can I pay with a gift card or PayPal?",
                    "when will I get my refund?",
                    "is there a warranty on electronics?",
                    "how do I exchange an item for another size?",
                    "can I exchange my shoes for a different product?",
                    "can I exchange an item for a different colour?",
                    "how can I change the shipping address of an order?",
                    "can I change my delivery address after ordering?",
                    "怎么换货？",
                    "what are your opening hours and how can I contact you?",
                    "do you offer price adjustments if the price drops?",
                    "how do you use my personal data?",
                    "退货政策是什么？",
                    "运费多少？多久能送到？",
                ),
                needs_identity=False,
                arg_sets=[[]],
                example='"how long do I have to return a delivered item?" -> {"action":"search_knowledge"}',
            ),
            Tool(
                "handoff",
                "Hand the conversation to a human support agent.",
                HandoffArgs,
                handoff,
                utterances=(
                    "I want to talk to a person",
                    "let me speak to a human agent",
                    "get me a real representative",
                    "我要找人工客服",
                ),
                needs_identity=False,
                triggers=re.compile(
                    r"\b(human|person|people|agent|someone|somebody|representative|manager|staff|operator)\b"
                    r"|人工|真人|客服|工作人员",
                    re.IGNORECASE,
                ),
                example='"I want to talk to a person" -> {"action":"handoff","reason":"shopper asked for a human"}',
            ),
            *order_write_tools(),
            *catalog_tools(),
        ]
    )
