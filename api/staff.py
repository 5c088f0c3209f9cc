"""Staff sign-in: a username and password give a signed staff token (role agent or admin)."""

from typing import Any

from fastapi import APIRouter, HTTPException, status
from pydantic import BaseModel, Field

from api.deps import AgentUser, SessionDep, SettingsDep
from shopdesk.security import issue_staff_token
from shopdesk.staff import authenticate

router = APIRouter(prefix="/api/staff", tags=["staff"])


class LoginRequest(BaseModel):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=256)


class LoginResponse(BaseModel):
    token: str
    role: str
    name: str
    staff_id: int


@router.post("/login", response_model=LoginResponse)
def login(body: LoginRequest, db: SessionDep, settings: SettingsDep) -> LoginResponse:
    claims = authenticate(db, body.username, body.password)
    if claims is None:
        # One message for an unknown user and a wrong password: a login does not tell who exists.
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "wrong username or password")
    return LoginResponse(
        token=issue_staff_token(claims, settings),
        role=claims.role,
        name=claims.name,
        staff_id=claims.staff_id,
    )


@router.get("/me")
def me(staff: AgentUser) -> dict[str, Any]:
    return {"staff_id": staff.staff_id, "role": staff.role, "name": staff.name}
