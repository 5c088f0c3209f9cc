"""The risk gate in front of the bot's sensitive actions (cancel, return).

Before an action is proposed, the order is scored for that action (commerce.fraud). Allow: the
proposal goes ahead. Review: the shopper proves they hold the order (the last four digits of the card
that paid it, or the zip code it shipped to) before anything is proposed. Block: a person takes over.
The shopper never sees a score or a reason; the decision and reasons go to the audit (the tool call's
record and a RiskAssessment row) for the support agent.
"""

import logging
import re
from typing import Any

from sqlmodel import select

from bot.tools import ToolContext, ToolResult
from commerce.models import Order, Payment, PaymentMethod

log = logging.getLogger(__name__)

MAX_STEP_UP_ATTEMPTS = 2
STEP_UP_TEXT = (
    "For your security, please confirm one detail of order {order_id}: the last four digits of the card "
    "that paid for it, or the zip code it was shipped to."
)
HANDOFF_TEXT = (
    "I'm passing this request to a member of our support team, who will help you with it here. "
    "Please stay in this chat."
)


def assess(ctx: ToolContext, order: Order, action: str) -> dict[str, Any] | None:
    """The risk decision for `action` on `order`, recorded; None when scoring is unavailable."""
    from commerce import fraud
    from shopdesk.settings import get_settings

    try:
        assessment = fraud.score_order(
            ctx.db, ctx.settings or get_settings(), order.id, action, now=ctx.now()
        )
    except Exception:  # the gate must not break the chat; the action still needs a yes
        log.exception("risk scoring failed for %s on %s", action, order.id)
        return None
    fraud.record_assessment(
        ctx.db,
        assessment,
        order_id=order.id,
        customer_id=order.customer_id,
        action=action,
        conversation_id=ctx.conversation.id,
    )
    return {
        "decision": assessment.decision,
        "score": round(assessment.score, 4),
        "reasons": [r.model_dump() for r in assessment.reasons],
        "model_version": assessment.model_version,
        "rules_only": assessment.rules_only,
    }


def gate(ctx: ToolContext, order: Order, action: str, tool: str, args: dict[str, Any]) -> ToolResult | None:
    """None when the action may be proposed; otherwise the step-up question or the handoff."""
    if ctx.cleared_order == order.id:  # the shopper passed the step-up for this order just now
        return None
    risk = assess(ctx, order, action)
    if risk is None or risk["decision"] == "allow":
        return None
    ctx.conversation.fraud_flag = True  # the agents' queue shows it
    ctx.db.add(ctx.conversation)
    if risk["decision"] == "review" and ctx.reviewed_by is not None:
        return None  # a person looked at it: the agent who clicked the action (the flag stays)
    if risk["decision"] == "review":
        return ToolResult(
            outcome="proposed",
            text=STEP_UP_TEXT.format(order_id=order.id),
            proposal={
                "tool": tool,
                "args": args,
                "customer_id": ctx.customer_id,
                "step_up": {"order_id": order.id, "attempts": 0},
                "summary": "Confirm a detail of the order",
            },
            audit={"risk": risk},
        )
    return ToolResult(
        outcome="refused",
        text=HANDOFF_TEXT,
        handoff_reason=f"{action} request needs a review by the support team",
        handoff_trigger="fraud_review",
        audit={"risk": risk},
    )


def step_up_passes(ctx: ToolContext, order_id: str, text: str) -> bool:
    """Whether the shopper's answer names the card's last four digits or the order's shipping zip."""
    order = ctx.db.get(Order, order_id)
    if order is None:
        return False
    given = set(re.findall(r"(?<!\d)\d{4,5}(?!\d)", text))
    if order.ship_zip in given:
        return True
    last_fours = ctx.db.exec(
        select(PaymentMethod.last_four)
        .join(Payment, Payment.payment_method_id == PaymentMethod.id)  # type: ignore[arg-type]
        .where(Payment.order_id == order.id, Payment.kind == "payment")
    ).all()
    return any(four and four in given for four in last_fours)
