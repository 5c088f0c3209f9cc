"""Signed session tokens (HMAC, HS256): the only way a conversation gets an identity from outside."""

import time
from dataclasses import dataclass

import jwt
from pwdlib import PasswordHash

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
    if payload.get("staff") or payload["role"] != "shopper":
        raise InvalidToken("invalid session token: not a shopper session")
    return SessionClaims(
        conversation_id=payload["conv"], customer_id=payload.get("sub"), role=payload["role"]
    )


# ---- staff (support agents and admins) -----------------------------------------------------------

STAFF_ROLES = ("agent", "admin")
_passwords = PasswordHash.recommended()  # argon2id
# Verifying an unknown username still costs one hash, so a login's timing does not tell who exists.
_DUMMY_HASH = _passwords.hash("not a real password")


@dataclass(frozen=True)
class StaffClaims:
    staff_id: int
    role: str  # agent | admin
    name: str


def hash_password(password: str) -> str:
    return _passwords.hash(password)


def verify_password(password: str, password_hash: str | None) -> bool:
    if password_hash is None:
        _passwords.verify(password, _DUMMY_HASH)
        return False
    try:
        return _passwords.verify(password, password_hash)
    except Exception:  # a malformed hash in the database is a failed login, not a crash
        return False


def issue_staff_token(claims: StaffClaims, settings: Settings) -> str:
    now = int(time.time())
    payload = {
        "sub": str(claims.staff_id),
        "role": claims.role,
        "name": claims.name,
        "staff": True,
        "iat": now,
        "exp": now + settings.staff_token_ttl_s,
    }
    return jwt.encode(payload, settings.signing_key(), algorithm=_ALGORITHM)


def read_staff_token(token: str, settings: Settings) -> StaffClaims:
    """A staff token; a shopper's token (no `staff` claim) is refused here as it is refused there."""
    try:
        payload = jwt.decode(
            token,
            settings.signing_key(),
            algorithms=[_ALGORITHM],
            options={"require": ["exp", "sub", "role", "staff"]},
        )
    except jwt.PyJWTError as exc:
        raise InvalidToken(f"invalid staff token: {exc}") from exc
    if payload["role"] not in STAFF_ROLES:
        raise InvalidToken("invalid staff token: unknown role")
    return StaffClaims(staff_id=int(payload["sub"]), role=payload["role"], name=str(payload.get("name", "")))
