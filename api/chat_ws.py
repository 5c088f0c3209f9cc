"""Shopper WebSocket `/ws/chat`: validates every frame, binds it to the token's identity, streams turns.

A bad frame gets an `error` event and the socket stays open. Messages are processed one at a time per
connection, in order; a bounded queue keeps a flood from exhausting the server, and a rejected message
is named in its error so the client can send it again. A disconnect cancels the running turn, which
closes the model stream (no tokens generated for nobody); the shopper's message is already stored.
"""

import asyncio
import contextlib
import json
import logging
from typing import Annotated, Any, Literal

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from pydantic import BaseModel, Field, TypeAdapter, ValidationError
from sqlmodel import Session

from bot.agent import Agent
from commerce.models import Conversation
from shopdesk.security import InvalidToken, read_token

log = logging.getLogger(__name__)
router = APIRouter()
QUEUE_MAX = 16


class MessageFrame(BaseModel):
    type: Literal["message"]
    text: str = Field(min_length=1, max_length=4000)
    id: str | None = Field(default=None, max_length=64, description="client message id, for dedup")


class ConfirmFrame(BaseModel):
    type: Literal["confirm"]
    approve: bool


class PingFrame(BaseModel):
    type: Literal["ping"]


Frame = Annotated[MessageFrame | ConfirmFrame | PingFrame, Field(discriminator="type")]
_FRAME = TypeAdapter(Frame)
FRAME_TYPES = ("message", "confirm", "ping")


def parse_frame(raw: str | bytes | None, max_bytes: int) -> tuple[BaseModel | None, dict[str, Any] | None]:
    """The frame, or the `error` event that explains why it was refused."""
    if raw is None or isinstance(raw, bytes):
        return None, {
            "type": "error",
            "code": "binary_frame",
            "message": "Only JSON text frames are accepted.",
        }
    if len(raw.encode("utf-8", "surrogatepass")) > max_bytes:
        return None, {
            "type": "error",
            "code": "too_large",
            "message": f"Frames are limited to {max_bytes // 1024} KiB.",
        }
    try:
        data = json.loads(raw)
    except ValueError:
        return None, {"type": "error", "code": "malformed_json", "message": "The frame is not valid JSON."}
    if not isinstance(data, dict) or "type" not in data:
        return None, {
            "type": "error",
            "code": "invalid_frame",
            "message": "A frame is a JSON object with a type.",
        }
    if data["type"] not in FRAME_TYPES:
        return None, {
            "type": "error",
            "code": "unknown_type",
            "message": f"Unknown frame type {str(data['type'])[:40]!r}; expected one of {', '.join(FRAME_TYPES)}.",
        }
    try:
        return _FRAME.validate_python(data), None
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"][1:]) or "frame"
        return None, {
            "type": "error",
            "code": "invalid_frame",
            "message": f"{where}: {first['msg']}",
            "client_id": data.get("id") if isinstance(data.get("id"), str) else None,
        }


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
    await conn.send(
        {"type": "ready", "conversation_id": conv.id, "identity": conv.identity, "state": conv.state}
    )
    worker = asyncio.create_task(conn.worker())
    try:
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                break
            raw = message.get("text") if message.get("text") is not None else message.get("bytes")
            frame, error = parse_frame(raw, settings.max_frame_bytes)
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
    finally:
        worker.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await worker
