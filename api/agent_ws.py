"""Support agents' live socket `/ws/agent?token=<staff token>`: queue changes, and the live events of
the conversations the console watches (shopper messages, the bot's replies with tool calls, state
changes, streamed suggested replies). Commands go through REST (api/agent.py); this socket only
listens, so a reconnect loses nothing: the console reloads the queue and transcript from REST.

Client frames: `{"type": "watch", "conversation_id": ...}`, `{"type": "unwatch", "conversation_id": ...}`,
`{"type": "ping"}` (also marks the agent present). Bad frames get an `error` event, the socket stays.
"""

import asyncio
import contextlib
import logging
from typing import Annotated, Any, Literal

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from pydantic import BaseModel, Field, TypeAdapter
from sqlmodel import Session

from api.frames import parse_frame
from commerce.models import Conversation
from shopdesk.bus import QUEUE_CHANNEL, Subscription, conversation_channel
from shopdesk.security import InvalidToken, read_staff_token
from shopdesk.staff import touch

log = logging.getLogger(__name__)
router = APIRouter()
MAX_WATCHED = 20
PRESENCE_EVERY_S = 15.0


@router.websocket("/ws/agent")
async def agent_socket(ws: WebSocket, token: str = "") -> None:
    app = ws.app
    settings = app.state.settings
    try:
        staff = read_staff_token(token, settings)
    except InvalidToken:
        # A shopper's token (or none) never opens this socket.
        await ws.close(code=4403, reason="staff only")
        return
    await ws.accept()
    engine = app.state.engine
    bus = app.state.bus
    send_lock = asyncio.Lock()

    async def send(event: dict[str, Any]) -> None:
        async with send_lock:
            await ws.send_json(event)

    with Session(engine) as db:
        touch(db, staff.staff_id)
    last_touch = asyncio.get_running_loop().time()
    async with bus.subscribe(QUEUE_CHANNEL) as sub:
        forward = asyncio.create_task(_forward(sub, send))
        await send({"type": "ready", "agent": {"id": staff.staff_id, "name": staff.name, "role": staff.role}})
        try:
            while True:
                message = await ws.receive()
                if message["type"] == "websocket.disconnect":
                    break
                raw = message.get("text") if message.get("text") is not None else message.get("bytes")
                frame, error = parse_frame(raw, settings.max_frame_bytes, _FRAME, FRAME_TYPES)
                if error is not None:
                    await send(error)
                    continue
                if isinstance(frame, PingFrame):
                    now = asyncio.get_running_loop().time()
                    if now - last_touch >= PRESENCE_EVERY_S:
                        with Session(engine) as db:
                            touch(db, staff.staff_id)
                        last_touch = now
                    await send({"type": "pong"})
                    continue
                assert isinstance(frame, WatchFrame)
                conversation_id = frame.conversation_id
                with Session(engine) as db:
                    exists = db.get(Conversation, conversation_id) is not None
                if not exists:
                    await send(
                        {"type": "error", "code": "unknown_conversation", "message": "No such conversation."}
                    )
                    continue
                channel = conversation_channel(conversation_id)
                if frame.type == "watch":
                    if len(sub.channels) > MAX_WATCHED:
                        await send(
                            {"type": "error", "code": "too_many", "message": "Watching too many chats."}
                        )
                        continue
                    await bus.add(sub, channel)
                    await send({"type": "watching", "conversation_id": conversation_id})
                else:
                    await bus.remove(sub, channel)
        except WebSocketDisconnect:
            pass
        finally:
            forward.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await forward


async def _forward(sub: Subscription, send: Any) -> None:
    """Bus events meant for agents, in order; a subscriber that fell behind is told to reload."""
    while True:
        event = await sub.get()
        if sub.overflow:
            sub.overflow = False
            await send({"type": "resync"})
        if event.get("audience", "agent") not in ("agent", "all"):
            continue
        event = {k: v for k, v in event.items() if k not in ("audience", "channel")}
        try:
            await send(event)
        except Exception:
            return


class WatchFrame(BaseModel):
    type: Literal["watch", "unwatch"]
    conversation_id: str = Field(min_length=1, max_length=36)


class PingFrame(BaseModel):
    type: Literal["ping"]


_FRAME = TypeAdapter(Annotated[WatchFrame | PingFrame, Field(discriminator="type")])
FRAME_TYPES = ("watch", "unwatch", "ping")
