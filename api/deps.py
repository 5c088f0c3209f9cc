"""Typed dependencies: every route states in its signature what it needs (database, caller).

They do no I/O (a Session connects on its first query), so they are `async def`: FastAPI runs a sync
dependency in its thread pool, and each such hop costs more than the work (milliseconds under load).
"""

from collections.abc import AsyncIterator
from typing import Annotated

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
