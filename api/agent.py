"""Support agents' REST: the queue, a conversation's full transcript, and what an agent does with a
chat (take over, reply, accept a suggestion, run a proposed action, release, hand back, close).

Every route is `AgentUser` (agents and admins; shoppers get 403). Each change goes through the
handoff machine (bot/handoff.py), is stored first and then published on the bus, so the shopper's
socket, wherever it is connected, shows it.
"""

from datetime import timedelta
from typing import Any

from fastapi import APIRouter, HTTPException, Query, Request, status
from pydantic import BaseModel, Field
from sqlalchemy import func
from sqlmodel import Session, col, select

from api.deps import AgentUser, RowId, SessionDep
from bot.agent import Agent, tool_call_view
from bot.handoff import TRANSITIONS
from bot.suggest import suggestion_view
from commerce.models import (
    Conversation,
    Customer,
    HandoffEvent,
    Message,
    RiskAssessment,
    StaffUser,
    SuggestedReply,
    ToolCallRecord,
    utcnow,
)
from shopdesk.security import StaffClaims

router = APIRouter(prefix="/api/agent", tags=["agent"])
ONLINE_WINDOW = timedelta(seconds=60)  # the console beats every 20 s
LIVE_BOT_WINDOW = timedelta(minutes=30)  # bot chats shown as "live" when the shopper wrote this recently


class ReplyRequest(BaseModel):
    text: str = Field(min_length=1, max_length=4000)
    suggestion_id: RowId | None = Field(
        default=None, description="the suggested reply this text started from"
    )


class CloseRequest(BaseModel):
    tags: list[str] = Field(default_factory=list, max_length=10)
    note: str | None = Field(default=None, max_length=2000)


class ActionRequest(BaseModel):
    suggestion_id: RowId
    confirm: bool = Field(default=False, description="false: show what would happen; true: do it")


def _agent(request: Request) -> Agent:
    return request.app.state.agent


def _conversation(db: Session, conversation_id: str) -> Conversation:
    conv = db.get(Conversation, conversation_id)
    if conv is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"unknown conversation {conversation_id!r}")
    return conv


def _require(conv: Conversation, to: str) -> None:
    if to not in TRANSITIONS[conv.state]:
        raise HTTPException(
            status.HTTP_409_CONFLICT, f"the conversation is {conv.state}; it cannot move to {to}"
        )


def _own(conv: Conversation, staff: StaffClaims) -> None:
    """Only the agent who took the chat speaks in it (an admin may step in)."""
    if conv.state != "agent":
        raise HTTPException(
            status.HTTP_409_CONFLICT, f"take the conversation over first (it is {conv.state})"
        )
    if conv.assigned_agent_id != staff.staff_id and staff.role != "admin":
        raise HTTPException(status.HTTP_409_CONFLICT, "another agent has this conversation")


@router.get("/queue")
def queue(
    staff: AgentUser,
    db: SessionDep,
    states: str = Query(
        "waiting,agent", pattern=r"^(bot|waiting|agent|closed)(,(bot|waiting|agent|closed))*$"
    ),
    limit: int = Query(100, ge=1, le=500),
) -> dict[str, Any]:
    """Conversations waiting first (longest wait first), then those agents handle, then live bot chats."""
    wanted = states.split(",")
    now = utcnow()
    query = select(Conversation).where(col(Conversation.state).in_(wanted))
    if "bot" in wanted:
        query = query.where(
            (col(Conversation.state) != "bot") | (col(Conversation.updated_at) >= now - LIVE_BOT_WINDOW)
        )
    order = {"waiting": 0, "agent": 1, "bot": 2, "closed": 3}
    convs = sorted(
        db.exec(query.order_by(col(Conversation.updated_at).desc()).limit(limit)).all(),
        key=lambda c: (order[c.state], (c.waiting_since or c.updated_at).timestamp()),
    )
    ids = [c.id for c in convs]
    names = _customer_names(db, [c.customer_id for c in convs if c.customer_id])
    agents = {
        s.id: s.display_name
        for s in db.exec(
            select(StaffUser).where(col(StaffUser.id).in_({c.assigned_agent_id for c in convs}))
        ).all()
    }
    moods = _sentiments(db, ids)
    last = _last_messages(db, ids)
    online = db.exec(
        select(func.count()).select_from(StaffUser).where(col(StaffUser.last_seen_at) >= now - ONLINE_WINDOW)
    ).one()
    return {
        "conversations": [
            {
                "id": c.id,
                "state": c.state,
                "customer": {"id": c.customer_id, "name": names.get(c.customer_id or "")}
                if c.customer_id
                else None,
                "identity": c.identity,
                "handoff_reason": c.handoff_reason,
                "waiting_since": c.waiting_since.isoformat() if c.waiting_since else None,
                "waiting_s": round((now - c.waiting_since).total_seconds()) if c.waiting_since else None,
                "sentiment": moods.get(c.id, {}).get("last"),
                "sentiment_min": moods.get(c.id, {}).get("min"),
                "fraud_flag": c.fraud_flag,
                "tags": c.tags or [],
                "agent": {"id": c.assigned_agent_id, "name": agents.get(c.assigned_agent_id)}
                if c.assigned_agent_id
                else None,
                "last_message": last.get(c.id),
                "updated_at": c.updated_at.isoformat(),
            }
            for c in convs
        ],
        "agents_online": int(online),
        "me": {"id": staff.staff_id, "name": staff.name, "role": staff.role},
    }


@router.get("/conversations/{conversation_id}")
def conversation(conversation_id: str, staff: AgentUser, db: SessionDep) -> dict[str, Any]:
    """Everything an agent needs: messages (with sentiment), the bot's tool calls and their results,
    risk assessments with reasons, state changes, and the suggestions for the last shopper message."""
    conv = _conversation(db, conversation_id)
    messages = db.exec(
        select(Message).where(Message.conversation_id == conv.id).order_by(col(Message.id))
    ).all()
    tools = db.exec(
        select(ToolCallRecord)
        .where(ToolCallRecord.conversation_id == conv.id)
        .order_by(col(ToolCallRecord.id))
    ).all()
    risks = db.exec(
        select(RiskAssessment)
        .where(RiskAssessment.conversation_id == conv.id)
        .order_by(col(RiskAssessment.id))
    ).all()
    events = db.exec(
        select(HandoffEvent).where(HandoffEvent.conversation_id == conv.id).order_by(col(HandoffEvent.id))
    ).all()
    last_user = next((m.id for m in reversed(messages) if m.role == "user"), None)
    suggestions = (
        db.exec(
            select(SuggestedReply)
            .where(SuggestedReply.message_id == last_user)
            .order_by(col(SuggestedReply.rank))
        ).all()
        if last_user
        else []
    )
    agent_names = {s.id: s.display_name for s in db.exec(select(StaffUser)).all()}
    customer = db.get(Customer, conv.customer_id) if conv.customer_id else None
    return {
        "id": conv.id,
        "state": conv.state,
        "identity": conv.identity,
        "customer": {"id": customer.id, "name": f"{customer.first_name} {customer.last_name}"}
        if customer
        else None,
        "handoff_reason": conv.handoff_reason,
        "waiting_since": conv.waiting_since.isoformat() if conv.waiting_since else None,
        "agent": {"id": conv.assigned_agent_id, "name": agent_names.get(conv.assigned_agent_id)}
        if conv.assigned_agent_id
        else None,
        "fraud_flag": conv.fraud_flag,
        "tags": conv.tags or [],
        "close_note": conv.close_note,
        "pending_action": (conv.pending_action or {}).get("summary"),
        "messages": [message_view(m, agent_names) for m in messages],
        "tool_calls": [tool_call_view(t) for t in tools],
        "risk": [
            {
                "order_id": r.order_id,
                "action": r.action,
                "decision": r.decision,
                "score": r.score,
                "reasons": r.reasons,
                "created_at": r.created_at.isoformat(),
            }
            for r in risks
        ],
        "events": [
            {
                "from": e.from_state,
                "to": e.to_state,
                "trigger": e.trigger,
                "reason": e.reason,
                "agent": agent_names.get(e.agent_id),
                "created_at": e.created_at.isoformat(),
            }
            for e in events
        ],
        "suggestions": [suggestion_view(s) for s in suggestions],
    }


@router.post("/conversations/{conversation_id}/take-over")
async def take_over(
    conversation_id: str, staff: AgentUser, db: SessionDep, request: Request
) -> dict[str, Any]:
    conv = _conversation(db, conversation_id)
    _require(conv, "agent")
    await _move(request, conv.id, "agent", "take_over", staff)  # 409 when another agent was faster
    last_user = db.exec(
        select(Message.id)
        .where(Message.conversation_id == conv.id, Message.role == "user")
        .order_by(col(Message.id).desc())
    ).first()
    if last_user is not None:
        _agent(request).suggest_later(conv.id, last_user)
    return {"state": "agent", "agent": {"id": staff.staff_id, "name": staff.name}}


@router.post("/conversations/{conversation_id}/release")
async def release(conversation_id: str, staff: AgentUser, db: SessionDep, request: Request) -> dict[str, Any]:
    """Back to the queue, for another agent."""
    conv = _conversation(db, conversation_id)
    _own(conv, staff)
    return await _move(request, conv.id, "waiting", "release", staff, reason=f"released by {staff.name}")


@router.post("/conversations/{conversation_id}/hand-back")
async def hand_back(
    conversation_id: str, staff: AgentUser, db: SessionDep, request: Request
) -> dict[str, Any]:
    conv = _conversation(db, conversation_id)
    _require(conv, "bot")
    if conv.state == "agent":
        _own(conv, staff)
    return await _move(request, conv.id, "bot", "hand_back", staff)


@router.post("/conversations/{conversation_id}/close")
async def close(
    conversation_id: str, body: CloseRequest, staff: AgentUser, db: SessionDep, request: Request
) -> dict[str, Any]:
    conv = _conversation(db, conversation_id)
    _require(conv, "closed")
    if conv.state == "agent":
        _own(conv, staff)
    conv.tags = sorted({t.strip().lower()[:40] for t in body.tags if t.strip()})
    conv.close_note = body.note
    db.add(conv)
    db.commit()
    return await _move(request, conv.id, "closed", "close", staff)


async def _move(
    request: Request,
    conversation_id: str,
    to: str,
    trigger: str,
    staff: StaffClaims,
    reason: str | None = None,
) -> dict[str, Any]:
    event = await _agent(request).transition(
        conversation_id, to, trigger, reason, agent_id=staff.staff_id, audience="all"
    )
    if event is None:
        raise HTTPException(status.HTTP_409_CONFLICT, "the conversation changed meanwhile; reload it")
    return {"state": to}


@router.post("/conversations/{conversation_id}/messages", status_code=status.HTTP_201_CREATED)
async def reply(
    conversation_id: str, body: ReplyRequest, staff: AgentUser, db: SessionDep, request: Request
) -> dict[str, Any]:
    """The agent's message to the shopper; started from a suggestion, it records accepted / edited."""
    conv = _conversation(db, conversation_id)
    _own(conv, staff)
    text = body.text.strip()
    if not text:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, "the message is empty")
    suggestion = None
    if body.suggestion_id is not None:
        suggestion = db.get(SuggestedReply, body.suggestion_id)
        if suggestion is None or suggestion.conversation_id != conv.id:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"unknown suggestion {body.suggestion_id}")
    row = Message(conversation_id=conv.id, role="agent", content=text, agent_id=staff.staff_id)
    db.add(row)
    now = utcnow()
    # The suggestions for the shopper's last message are now decided: this one used, the rest not.
    pending = db.exec(
        select(SuggestedReply).where(
            SuggestedReply.conversation_id == conv.id, SuggestedReply.status == "offered"
        )
    ).all()
    for s in pending:
        if suggestion is not None and s.id == suggestion.id:
            s.status = "accepted" if s.text.strip() == text else "edited"
            s.sent_text = text
        else:
            s.status = "ignored"
        s.agent_id = staff.staff_id
        s.decided_at = now
        db.add(s)
    conv.updated_at = now
    db.add(conv)
    db.commit()
    db.refresh(row)
    event = {
        "type": "agent_message",
        "id": row.id,
        "text": text,
        "agent": staff.name,
        "created_at": row.created_at.isoformat(),
    }
    await _agent(request).publish(conv.id, event, audience="all")
    return {"id": row.id, "suggestion_status": suggestion.status if suggestion else None}


@router.post("/conversations/{conversation_id}/actions")
async def run_action(
    conversation_id: str, body: ActionRequest, staff: AgentUser, db: SessionDep, request: Request
) -> dict[str, Any]:
    """A suggested action: `confirm=false` shows the proposal (nothing changes), `confirm=true` runs
    it. The result goes to the shopper as the agent's message, with its card."""
    conv = _conversation(db, conversation_id)
    _own(conv, staff)
    suggestion = db.get(SuggestedReply, body.suggestion_id)
    if suggestion is None or suggestion.conversation_id != conv.id:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"unknown suggestion {body.suggestion_id}")
    if not suggestion.action:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, "this suggestion proposes no action")
    agent = _agent(request)
    result = await agent.run_agent_action(conv.id, suggestion.action, staff.staff_id, body.confirm)
    done = body.confirm and result.outcome == "confirmed"
    out: dict[str, Any] = {
        "outcome": result.outcome,
        "text": result.text,
        "summary": (result.proposal or {}).get("summary"),
        "card": result.card,
        "done": done,
    }
    if done:
        row = Message(
            conversation_id=conv.id,
            role="agent",
            content=result.text,
            agent_id=staff.staff_id,
            meta={"cards": [result.card] if result.card else [], "action": suggestion.action.get("tool")},
        )
        db.add(row)
        db.commit()
        db.refresh(row)
        out["message_id"] = row.id
        event = {"type": "agent_message", "id": row.id, "text": result.text, "agent": staff.name}
        if result.card:
            event["card"] = result.card
        await agent.publish(conv.id, event, audience="all")
    return out


def message_view(m: Message, agent_names: dict[int | None, str]) -> dict[str, Any]:
    meta = m.meta or {}
    view: dict[str, Any] = {
        "id": m.id,
        "role": m.role,
        "text": m.content,
        "created_at": m.created_at.isoformat(),
        "cards": meta.get("cards", []),
        "citations": meta.get("citations", []),
    }
    if m.role == "user":
        view["sentiment"] = m.sentiment
    if m.role == "agent":
        view["agent"] = agent_names.get(m.agent_id)
    if m.role == "assistant":
        view["replaced"] = bool(meta.get("replaced"))
    return view


def _customer_names(db: Session, ids: list[str]) -> dict[str, str]:
    if not ids:
        return {}
    rows = db.exec(
        select(Customer.id, Customer.first_name, Customer.last_name).where(col(Customer.id).in_(ids))
    ).all()
    return {r[0]: f"{r[1]} {r[2]}" for r in rows}


def _sentiments(db: Session, ids: list[str]) -> dict[str, dict[str, float | None]]:
    if not ids:
        return {}
    rows = db.exec(
        select(Message.conversation_id, Message.sentiment)
        .where(
            col(Message.conversation_id).in_(ids), Message.role == "user", col(Message.sentiment).is_not(None)
        )
        .order_by(col(Message.id))
    ).all()
    out: dict[str, dict[str, float | None]] = {}
    for conv_id, value in rows:
        entry = out.setdefault(conv_id, {"last": None, "min": None})
        entry["last"] = value
        entry["min"] = value if entry["min"] is None else min(entry["min"], value)  # type: ignore[type-var]
    return out


def _last_messages(db: Session, ids: list[str]) -> dict[str, dict[str, Any]]:
    if not ids:
        return {}
    newest = (
        select(func.max(col(Message.id)))
        .where(col(Message.conversation_id).in_(ids), col(Message.role).in_(["user", "assistant", "agent"]))
        .group_by(col(Message.conversation_id))
    )
    rows = db.exec(select(Message).where(col(Message.id).in_(newest))).all()
    return {
        m.conversation_id: {"role": m.role, "text": m.content[:160], "created_at": m.created_at.isoformat()}
        for m in rows
    }
