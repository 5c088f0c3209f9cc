"""Shopper WebSocket `/ws/chat`: validates every frame, binds it to the token's identity, streams turns.

A bad frame gets an `error` event and the socket stays open. Messages are processed one at a time per
connection, in order; a bounded queue keeps a flood from exhausting the server, and a rejected message
is named in its error so the client can send it again. A disconnect cancels the running turn, which
closes the model stream (no tokens generated for nobody); the shopper's message is already stored.
"""

import asyncio
import contextlib
import logging
from typing import Annotated, Any, Literal

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from pydantic import BaseModel, Field, StrictBool, TypeAdapter, field_validator
from sqlmodel import Session

from api import frames
from bot.agent import Agent
from bot.prompts import greeting
from commerce.models import Conversation, StaffUser
from shopdesk.bus import Subscription, conversation_channel
from shopdesk.security import InvalidToken, read_token

log = logging.getLogger(__name__)
router = APIRouter()
QUEUE_MAX = 16


class MessageFrame(BaseModel):
    type: Literal["message"]
    text: str = Field(min_length=1, max_length=4000)
    id: str | None = Field(default=None, max_length=64, description="client message id, for dedup")

    @field_validator("text")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("the message is blank")
        return value


class ConfirmFrame(BaseModel):
    type: Literal["confirm"]
    approve: StrictBool  # the buttons send true/false; "yes" in a confirm frame is a client bug


class PingFrame(BaseModel):
    type: Literal["ping"]


Frame = Annotated[MessageFrame | ConfirmFrame | PingFrame, Field(discriminator="type")]
_FRAME = TypeAdapter(Frame)
FRAME_TYPES = ("message", "confirm", "ping")


def parse_frame(raw: str | bytes | None, max_bytes: int) -> tuple[BaseModel | None, dict[str, Any] | None]:
    """The shopper's frame, or the `error` event that explains why it was refused."""
    return frames.parse_frame(raw, max_bytes, _FRAME, FRAME_TYPES)


class _Connection:
    def __init__(self, ws: WebSocket, agent: Agent, conversation_id: str):
        self.ws = ws
        self.agent = agent
        self.conversation_id = conversation_id
        self.queue: asyncio.Queue[BaseModel] = asyncio.Queue(maxsize=QUEUE_MAX)
        self._send_lock = asyncio.Lock()

    async def send(self, event: dict[str, Any]) -> None:
        async with self._send_lock:
            await self.ws.send_json(event)

    async def worker(self) -> None:
        while True:
            frame = await self.queue.get()
            try:
                if isinstance(frame, MessageFrame):
                    events = self.agent.run_turn(self.conversation_id, frame.text, frame.id)
                else:
                    assert isinstance(frame, ConfirmFrame)
                    events = self.agent.confirm(self.conversation_id, frame.approve)
                async for event in events:
                    await self.send(event)
            except (WebSocketDisconnect, RuntimeError, asyncio.CancelledError):
                raise
            except Exception:
                log.exception("turn failed in conversation %s", self.conversation_id)
                await self.send(
                    {"type": "error", "code": "internal", "message": "Something went wrong; please retry."}
                )
                await self.send({"type": "done"})


@router.websocket("/ws/chat")
async def chat_socket(ws: WebSocket, token: str = "") -> None:
    app = ws.app
    settings = app.state.settings
    try:
        claims = read_token(token, settings)
    except InvalidToken:
        await ws.close(code=4401, reason="invalid or missing session token")
        return
    with Session(app.state.engine) as db:
        conv = db.get(Conversation, claims.conversation_id)
    # A token opens only the conversation it was issued for, with the customer it was issued to.
    if conv is None or (claims.customer_id is not None and conv.customer_id != claims.customer_id):
        await ws.close(code=4404, reason="unknown conversation")
        return
    await ws.accept()
    conn = _Connection(ws, app.state.agent, conv.id)
    ready: dict[str, Any] = {
        "type": "ready",
        "conversation_id": conv.id,
        "identity": conv.identity,
        "state": conv.state,
        # The admin-edited greeting (prompts/greeting.md); the widget shows it when there is no history.
        "greeting": greeting(app.state.agent.prompts, conv.id, app.state.agent.store_name),
    }
    if conv.state == "agent" and conv.assigned_agent_id is not None:
        with Session(app.state.engine) as db:
            staff = db.get(StaffUser, conv.assigned_agent_id)
        ready["agent"] = staff.display_name if staff else None
    # Subscribed before `ready`: from here on nothing an agent sends can fall between the history
    # the widget fetches and the live events.
    async with app.state.bus.subscribe(conversation_channel(conv.id)) as sub:
        await conn.send(ready)
        worker = asyncio.create_task(conn.worker())
        forward = asyncio.create_task(_forward_to_shopper(sub, conn))
        try:
            await _read_frames(ws, conn, settings.max_frame_bytes)
        finally:
            forward.cancel()
            worker.cancel()
            for task in (forward, worker):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task


# What a shopper may see of events from agents and the handoff machine: never reasons or triggers.
_SHOPPER_FIELDS = {
    "handoff": ("type", "state", "agent", "text", "id"),
    "agent_message": ("type", "id", "text", "agent", "card", "created_at"),
}


async def _forward_to_shopper(sub: Subscription, conn: "_Connection") -> None:
    """Events other parties published for the shopper (`audience: all`), e.g. an agent's reply."""
    while True:
        event = await sub.get()
        fields = _SHOPPER_FIELDS.get(event.get("type", ""))
        if event.get("audience") != "all" or fields is None:
            continue
        await conn.send({k: event[k] for k in fields if k in event})


async def _read_frames(ws: WebSocket, conn: "_Connection", max_frame_bytes: int) -> None:
    try:
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                break
            raw = message.get("text") if message.get("text") is not None else message.get("bytes")
            frame, error = parse_frame(raw, max_frame_bytes)
            if error is not None:
                await conn.send(error)
                continue
            if isinstance(frame, PingFrame):
                await conn.send({"type": "pong"})
                continue
            try:
                conn.queue.put_nowait(frame)  # type: ignore[arg-type]
            except asyncio.QueueFull:
                await conn.send(
                    {
                        "type": "error",
                        "code": "rate_limited",
                        "message": "You're sending messages faster than I can answer; please resend this one.",
                        "client_id": getattr(frame, "id", None),
                    }
                )
    except WebSocketDisconnect:
        pass
