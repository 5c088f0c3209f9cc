"""Refuse the NUL character at the edge: PostgreSQL cannot store it in text, so a `%00` in a URL or a
`\\u0000` in a JSON body would otherwise reach a query and fail there as a 500 (SQLite stores it, so
the same request would behave differently per database). Refused up front, it is a clear 400 / 422 on
every database; WebSocket frames are checked by `api.frames`.

Since it is the one place that reads a request body before any route, it also bounds its size: a
body over the limit (declared in Content-Length, or counted as it arrives) is a 413 before more of it
is read, so a client sending hundreds of megabytes cannot hold a worker and the memory behind it.
"""

import json
import re
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

# A JSON escape for U+0000 that is not itself escaped ("\\u0000" is a backslash and the text "u0000").
_JSON_NUL = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


def holds_nul(value: Any) -> bool:
    """Whether a decoded JSON value has a NUL in any string, key or value."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(holds_nul(k) or holds_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(holds_nul(v) for v in value)
    return False


class NulGuard:
    """Pure ASGI middleware (streams and sockets pass untouched): 400 for a NUL in the path or query,
    422 for one in a JSON body, before any route sees the request."""

    def __init__(self, app: ASGIApp, max_body_bytes: int = 16 * 1024 * 1024) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        in_url = "\x00" in scope.get("path", "") or b"%00" in scope.get("query_string", b"")
        if in_url:
            if scope["type"] == "websocket":
                await receive()  # websocket.connect; a close before the accept refuses the handshake
                await send({"type": "websocket.close", "code": 4400, "reason": "NUL character in the URL"})
            else:
                await _refuse(send, 400, "the URL holds a NUL character (%00)")
            return
        if scope["type"] != "http" or scope.get("method") not in _BODY_METHODS:
            await self.app(scope, receive, send)
            return
        too_large = f"the request body is over the limit of {self.max_body_bytes:,} bytes"
        declared = dict(scope.get("headers") or []).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            await _refuse(send, 413, too_large)
            return
        messages: list[Message] = []
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_body_bytes:
                await _refuse(send, 413, too_large)
                return
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if _JSON_NUL.search(body):
            await _refuse(send, 422, "text with a NUL character (\\u0000) cannot be stored")
            return

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)


async def _refuse(send: Send, status: int, detail: str) -> None:
    payload = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})
