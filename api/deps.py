"""Typed dependencies: every route states in its signature what it needs (database, caller)."""

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Header, HTTPException, Request, status
from sqlalchemy.engine import Engine
from sqlmodel import Session

from shopdesk.security import InvalidToken, SessionClaims, read_token
from shopdesk.settings import Settings


def get_settings_dep(request: Request) -> Settings:
    return request.app.state.settings


def get_engine_dep(request: Request) -> Engine:
    return request.app.state.engine


def get_db(engine: Annotated[Engine, Depends(get_engine_dep)]) -> Iterator[Session]:
    with Session(engine, expire_on_commit=False) as session:
        yield session


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
SessionDep = Annotated[Session, Depends(get_db)]


def get_shopper(
    settings: SettingsDep, authorization: Annotated[str | None, Header()] = None
) -> SessionClaims:
    if not authorization or not authorization.lower().startswith("bearer "):
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "missing bearer token")
    try:
        claims = read_token(authorization.split(" ", 1)[1].strip(), settings)
    except InvalidToken as exc:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, str(exc)) from exc
    if claims.role != "shopper":
        raise HTTPException(status.HTTP_403_FORBIDDEN, "not a shopper token")
    return claims


ShopperSession = Annotated[SessionClaims, Depends(get_shopper)]
