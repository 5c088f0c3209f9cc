"""Signed session tokens (HMAC, HS256): the only way a conversation gets an identity from outside."""

import time
from dataclasses import dataclass

import jwt

from shopdesk.settings import Settings

_ALGORITHM = "HS256"


class InvalidToken(ValueError):
    pass


@dataclass(frozen=True)
class SessionClaims:
    conversation_id: str
    customer_id: str | None  # None: a guest, who must verify before any account data
    role: str = "shopper"


def issue_token(claims: SessionClaims, settings: Settings) -> str:
    now = int(time.time())
    payload: dict[str, object] = {
        "conv": claims.conversation_id,
        "role": claims.role,
        "iat": now,
        "exp": now + settings.token_ttl_s,
    }
    if claims.customer_id is not None:  # a guest's token has no subject (JWT requires a string)
        payload["sub"] = claims.customer_id
    return jwt.encode(payload, settings.signing_key(), algorithm=_ALGORITHM)


def read_token(token: str, settings: Settings) -> SessionClaims:
    try:
        payload = jwt.decode(
            token,
            settings.signing_key(),
            algorithms=[_ALGORITHM],
            options={"require": ["exp", "conv", "role"]},
        )
    except jwt.PyJWTError as exc:
        raise InvalidToken(f"invalid session token: {exc}") from exc
    return SessionClaims(
        conversation_id=payload["conv"], customer_id=payload.get("sub"), role=payload["role"]
    )
