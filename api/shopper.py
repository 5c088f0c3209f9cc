"""Shopper REST: start a chat session (signed token), read one's own conversation, demo customers."""

from typing import Any

from fastapi import APIRouter, HTTPException, Query, status
from pydantic import BaseModel, Field
from sqlalchemy import case, func
from sqlmodel import col, select

from api.deps import ROW_ID_MAX, SessionDep, SettingsDep, ShopperSession
from bot import sessions
from commerce.models import Conversation, Customer, FraudLabel, Message, Order, StaffUser

router = APIRouter(prefix="/api", tags=["shopper"])


class SessionRequest(BaseModel):
    customer_id: str | None = Field(
        default=None, max_length=64, description="Demo only: sign in as this customer"
    )


class SessionResponse(BaseModel):
    token: str
    conversation_id: str
    customer: dict[str, Any] | None


@router.post("/session", response_model=SessionResponse)
def start_session(body: SessionRequest, db: SessionDep, settings: SettingsDep) -> SessionResponse:
    """A new conversation bound to a demo customer (demo mode) or to a guest who must verify."""
    customer = None
    if body.customer_id is not None:
        if not settings.demo_mode:
            raise HTTPException(
                status.HTTP_403_FORBIDDEN, "signing in by customer id is only for the demo store"
            )
        customer = db.get(Customer, body.customer_id)
        if customer is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"unknown customer {body.customer_id!r}")
    conv, token = sessions.start_session(db, settings, customer)
    return SessionResponse(
        token=token,
        conversation_id=conv.id,
        customer={"id": customer.id, "first_name": customer.first_name} if customer else None,
    )


@router.get("/conversation")
def my_conversation(shopper: ShopperSession, db: SessionDep) -> dict[str, Any]:
    """The conversation's state for a page reload: who has it, and the action waiting for the shopper's
    yes (the `confirm` event was sent once, live; a reloaded widget redraws its buttons from here)."""
    conv = db.get(Conversation, shopper.conversation_id)
    if conv is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "unknown conversation")
    agent = db.get(StaffUser, conv.assigned_agent_id) if conv.assigned_agent_id is not None else None
    pending = conv.pending_action or {}
    return {
        "conversation_id": conv.id,
        "state": conv.state,
        "agent": agent.display_name if agent is not None and conv.state == "agent" else None,
        # A risk step-up is a question in the chat, not a yes/no: it has no buttons to redraw.
        "pending_action": {
            "action": pending.get("tool"),
            "summary": pending.get("summary"),
            "args": pending.get("args", {}),
        }
        if pending.get("tool") and not pending.get("step_up")
        else None,
    }


@router.get("/conversation/messages")
def my_messages(
    shopper: ShopperSession, db: SessionDep, after_id: int = Query(0, ge=0, le=ROW_ID_MAX)
) -> dict[str, Any]:
    """The session's own conversation (for reloads and reconnects); nobody else's is reachable."""
    rows = db.exec(
        select(Message)
        .where(Message.conversation_id == shopper.conversation_id, col(Message.id) > after_id)
        .order_by(col(Message.id))
    ).all()
    staff_ids = {r.agent_id for r in rows if r.agent_id is not None}
    agents = (
        dict(
            db.exec(
                select(StaffUser.id, StaffUser.display_name).where(col(StaffUser.id).in_(staff_ids))
            ).all()
        )
        if staff_ids
        else {}
    )
    return {
        "conversation_id": shopper.conversation_id,
        "messages": [
            {
                "id": r.id,
                "role": r.role,
                "text": r.content,
                "client_id": r.client_id,
                "cards": (r.meta or {}).get("cards", []),
                "citations": (r.meta or {}).get("citations", []),
                "created_at": r.created_at.isoformat(),
                **({"agent": agents.get(r.agent_id)} if r.role == "agent" else {}),
            }
            for r in rows
        ],
    }


@router.get("/demo/customers")
def demo_customers(
    db: SessionDep, settings: SettingsDep, limit: int = Query(12, ge=1, le=100)
) -> dict[str, Any]:
    """Customers to sign in as on the demo page: those with a mix of orders, most interesting first.
    Accounts in the labelled fraud history (generated attackers and their victims) are left out."""
    if not settings.demo_mode:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "not a demo store")
    pending = func.sum(case((col(Order.status) == "pending", 1), else_=0))
    rows = db.exec(
        select(Customer.id, Customer.first_name, Customer.last_name, func.count(col(Order.id)), pending)
        .join(Order, col(Order.customer_id) == col(Customer.id))
        .where(col(Customer.id).not_in(select(FraudLabel.customer_id)))
        .group_by(col(Customer.id), col(Customer.first_name), col(Customer.last_name))
        # A mix of statuses first (something to track, cancel and return), then fewer orders (readable).
        .order_by(
            func.count(func.distinct(col(Order.status))).desc(),
            pending.desc(),
            func.count(col(Order.id)),
            col(Customer.id),
        )
        .limit(limit)
    ).all()
    orders_of: dict[str, list[dict[str, str]]] = {r[0]: [] for r in rows}
    for order_id, customer_id, order_status in db.exec(
        select(Order.id, Order.customer_id, Order.status)
        .where(col(Order.customer_id).in_(list(orders_of)))
        .order_by(col(Order.created_at).desc())
    ).all():
        orders_of[customer_id].append({"id": order_id, "status": order_status})
    return {
        "customers": [
            {
                "id": r[0],
                "name": f"{r[1]} {r[2]}",
                "orders": orders_of[r[0]],
                "pending": int(r[4] or 0),
            }
            for r in rows
        ]
    }
