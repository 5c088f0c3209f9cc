"""WebSocket frames: the checks every socket makes before a frame means anything (text, size, JSON,
no NUL character, a known `type`, the fields of that type), each refusal an `error` event that says
why."""

import json
from typing import Any

from pydantic import BaseModel, TypeAdapter, ValidationError

from api.nul_guard import holds_nul


def parse_frame(
    raw: str | bytes | None, max_bytes: int, adapter: TypeAdapter[Any], types: tuple[str, ...]
) -> tuple[BaseModel | None, dict[str, Any] | None]:
    """The frame validated by `adapter` (a discriminated union on `type`), or the `error` event."""
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
    if holds_nul(data):
        return None, {
            "type": "error",
            "code": "invalid_text",
            "message": "Text with a NUL character (\\u0000) cannot be stored.",
        }
    if data["type"] not in types:
        return None, {
            "type": "error",
            "code": "unknown_type",
            "message": f"Unknown frame type {str(data['type'])[:40]!r}; expected one of {', '.join(types)}.",
        }
    try:
        return adapter.validate_python(data), None
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"][1:]) or "frame"
        return None, {
            "type": "error",
            "code": "invalid_frame",
            "message": f"{where}: {first['msg']}",
            "client_id": data.get("id") if isinstance(data.get("id"), str) else None,
        }
