"""The handoff state machine of a conversation: bot -> waiting -> agent -> back to bot, or closed.

Every change goes through `move`, which refuses a change the machine does not allow (two agents
taking the same chat: the second gets InvalidTransition), records a HandoffEvent (the analytics'
handoff rate and reasons) and returns the protocol event both sides are shown.
"""

from typing import Any

from sqlmodel import Session

from commerce.models import Conversation, HandoffEvent, StaffUser, utcnow

STATES = ("bot", "waiting", "agent", "closed")
TRANSITIONS: dict[str, frozenset[str]] = {
    "bot": frozenset({"waiting", "agent", "closed"}),  # an agent may step into a live bot chat
    "waiting": frozenset({"agent", "bot", "closed"}),
    "agent": frozenset({"bot", "waiting", "closed"}),  # waiting again: released to the queue
    "closed": frozenset({"bot"}),  # the shopper writes again
}
# Why a conversation left the bot (HandoffEvent.trigger for bot -> waiting).
BOT_TRIGGERS = ("shopper_request", "failed_turns", "negative_sentiment", "error", "fraud_review")

SHOPPER_TEXT = {
    "shopper_request": "I'm handing this conversation to a member of our support team. Please stay here; they will reply in this chat.",
    "failed_turns": "I'm sorry I couldn't sort this out. I've asked a member of our support team to join; they will reply here.",
    "negative_sentiment": "I'm sorry about this. I've asked a member of our support team to join; they will reply here.",
    "error": "Something went wrong on my side. Your message is saved, and a member of our support team will reply here.",
    "fraud_review": "For your security, a member of our support team will continue this conversation here.",
    "release": "You're back in the queue; the next free member of our team will reply here.",
    "hand_back": "You're chatting with the shop's assistant again.",
    "close": "This conversation was closed. Write again any time.",
    "reopen": "",
    "take_over": "",
}


class InvalidTransition(ValueError):
    pass


def move(
    db: Session,
    conversation_id: str,
    to: str,
    trigger: str,
    reason: str | None = None,
    agent_id: int | None = None,
) -> tuple[Conversation, dict[str, Any]]:
    """Change the state (row locked where the database can), record why; the caller commits."""
    conv = db.get(Conversation, conversation_id, with_for_update=True, populate_existing=True)
    if conv is None:
        raise InvalidTransition(f"unknown conversation {conversation_id}")
    if to not in TRANSITIONS[conv.state]:
        raise InvalidTransition(f"a conversation in state {conv.state!r} cannot move to {to!r}")
    now = utcnow()
    db.add(
        HandoffEvent(
            conversation_id=conv.id,
            from_state=conv.state,
            to_state=to,
            trigger=trigger,
            reason=(reason or "")[:200] or None,
            agent_id=agent_id,
        )
    )
    if to == "waiting":
        conv.waiting_since = now
        conv.handoff_reason = (reason or trigger)[:200]
        conv.assigned_agent_id = None
    elif to == "agent":
        conv.assigned_agent_id = agent_id
        conv.waiting_since = conv.waiting_since or now
    elif to == "bot":
        conv.assigned_agent_id = None
        conv.waiting_since = None
        conv.failed_turns = 0
        conv.closed_at = None
    elif to == "closed":
        conv.closed_at = now
        conv.waiting_since = None
        conv.pending_action = None
    if trigger == "fraud_review":
        conv.fraud_flag = True
    conv.state = to
    conv.updated_at = now
    db.add(conv)
    agent_name = None
    if to == "agent" and agent_id is not None:
        staff = db.get(StaffUser, agent_id)
        agent_name = staff.display_name if staff else None
    return conv, state_event(conv, trigger, agent_name)


def state_event(conv: Conversation, trigger: str = "", agent_name: str | None = None) -> dict[str, Any]:
    """The `handoff` protocol event: the state, the shopper-facing line, the agent's name."""
    # No trigger or reason here: the shopper sees this (a fraud review is for agents' eyes only).
    event: dict[str, Any] = {"type": "handoff", "state": conv.state}
    if agent_name:
        event["agent"] = agent_name
    text = SHOPPER_TEXT.get(trigger, "")
    if text:
        event["text"] = text
    return event
