"""Typed dependencies: every route states in its signature what it needs (database, caller).

They do no I/O (a Session connects on its first query), so they are `async def`: FastAPI runs a sync
dependency in its thread pool, and each such hop costs more than the work (milliseconds under load).
"""

import hmac
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated

import annotated_types
from fastapi import Depends, Header, HTTPException, Request, status
from sqlalchemy.engine import Engine
from sqlmodel import Session

from shopdesk.security import InvalidToken, SessionClaims, StaffClaims, read_staff_token, read_token
from shopdesk.settings import Settings


async def get_settings_dep(request: Request) -> Settings:
    return request.app.state.settings


async def get_engine_dep(request: Request) -> Engine:
    return request.app.state.engine


async def get_db(engine: Annotated[Engine, Depends(get_engine_dep)]) -> AsyncIterator[Session]:
    with Session(engine, expire_on_commit=False) as session:
        yield session


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
SessionDep = Annotated[Session, Depends(get_db)]

# A row id (path, query or body): past PostgreSQL's INTEGER no row can exist, and the query itself
# would fail (SQLite: "int too large"), so a larger number is a 422, not a 500.
ROW_ID_MAX = 2**31 - 1
RowId = Annotated[int, annotated_types.Interval(ge=1, le=ROW_ID_MAX)]


async def get_shopper(
    settings: SettingsDep, authorization: Annotated[str | None, Header()] = None
) -> SessionClaims:
    token = _bearer(authorization)
    try:
        return read_token(token, settings)
    except InvalidToken as exc:
        try:
            read_staff_token(token, settings)
        except InvalidToken:
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, str(exc)) from exc
        raise HTTPException(status.HTTP_403_FORBIDDEN, "not a shopper token") from exc


ShopperSession = Annotated[SessionClaims, Depends(get_shopper)]


def _bearer(authorization: str | None) -> str:
    if not authorization or not authorization.lower().startswith("bearer "):
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "missing bearer token")
    return authorization.split(" ", 1)[1].strip()


async def get_staff(
    settings: SettingsDep, authorization: Annotated[str | None, Header()] = None
) -> StaffClaims:
    try:
        return read_staff_token(_bearer(authorization), settings)
    except InvalidToken as exc:
        # A shopper's token is a valid identity, just not one that may be here.
        try:
            read_token(_bearer(authorization), settings)
        except InvalidToken:
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, str(exc)) from exc
        raise HTTPException(status.HTTP_403_FORBIDDEN, "staff only") from exc


async def get_agent(staff: Annotated[StaffClaims, Depends(get_staff)]) -> StaffClaims:
    """Support agents, and admins (who may work the console too)."""
    return staff


async def get_admin(staff: Annotated[StaffClaims, Depends(get_staff)]) -> StaffClaims:
    if staff.role != "admin":
        raise HTTPException(status.HTTP_403_FORBIDDEN, "admins only")
    return staff


AgentUser = Annotated[StaffClaims, Depends(get_agent)]
AdminUser = Annotated[StaffClaims, Depends(get_admin)]


def _check_api_key(settings: Settings, setting: str, given: str | None) -> None:
    """Another service's X-API-Key against `settings.<setting>`; unset, only a demo store lets it by."""
    key = getattr(settings, setting)
    if key is None:
        if not settings.demo_mode:
            raise HTTPException(
                status.HTTP_403_FORBIDDEN, f"set SHOPDESK_{setting.upper()} to let services use this API"
            )
        return
    if given is None or not hmac.compare_digest(given.encode(), key.get_secret_value().encode()):
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "missing or wrong X-API-Key")


def require_service(setting: str) -> Callable[..., Awaitable[None]]:
    """A dependency: the caller is a service holding the key in `settings.<setting>`."""

    async def check(settings: SettingsDep, x_api_key: Annotated[str | None, Header()] = None) -> None:
        _check_api_key(settings, setting, x_api_key)

    return check


def require_customer_or_service(setting: str) -> Callable[..., Awaitable[None]]:
    """A dependency for routes about one customer (the path's `customer_id`): that customer's own
    session token, or another service's X-API-Key = `settings.<setting>`. What a customer bought is
    theirs: an id is guessable ("first_last_NNNN"), so knowing one must not be enough."""

    async def check(
        customer_id: str,
        settings: SettingsDep,
        authorization: Annotated[str | None, Header()] = None,
        x_api_key: Annotated[str | None, Header()] = None,
    ) -> None:
        if authorization is not None:
            claims = await get_shopper(settings, authorization)
            if claims.customer_id != customer_id:
                raise HTTPException(
                    status.HTTP_403_FORBIDDEN, "a shopper may only ask about their own account"
                )
            return
        _check_api_key(settings, setting, x_api_key)

    return check


def require_admin_or_service(setting: str) -> Callable[..., Awaitable[None]]:
    """A dependency for routes that serve both the admin pages (an admin's bearer token) and other
    services (X-API-Key = `settings.<setting>`)."""

    async def check(
        settings: SettingsDep,
        authorization: Annotated[str | None, Header()] = None,
        x_api_key: Annotated[str | None, Header()] = None,
    ) -> None:
        if authorization is not None:
            await get_admin(await get_staff(settings, authorization))
            return
        _check_api_key(settings, setting, x_api_key)

    return check
