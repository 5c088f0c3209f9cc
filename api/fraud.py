"""Fraud REST for checkout and other services: `POST /api/fraud/score`.

The body is either `{"order_id": "#W...", "action": null | "cancel" | "return" | "exchange" |
"address_change"}` (an order in the store) or an order payload (`commerce.fraud.OrderPayload`:
customer_id, items with variant_id / quantity / price, payment_method_id or payment_kind,
ship_address, ship_name, created_at). The answer is `{score, decision, reasons, model_version,
rules_only}`. Bad input is a 422 with one message per field; an unknown order or customer a 404.

Scores and reasons are for the store's systems and staff, never for shoppers (they would teach a
fraudster what to change): callers send `X-API-Key` = settings.fraud_api_key. With no key
configured, only a demo store answers. Every score given is kept as a RiskAssessment (the audit).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, HTTPException, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field, ValidationError
from sqlalchemy.engine import Engine
from sqlmodel import Session

from api.deps import require_service
from commerce.fraud import (
    FraudAssessment,
    OrderPayload,
    PayloadError,
    UnknownCustomer,
    record_assessment,
    score_order,
    score_payload,
)
from commerce.orders import OrderNotFound, normalize_order_id
from shopdesk.settings import Settings

router = APIRouter(prefix="/api/fraud", tags=["fraud"])


class ScoreOrderRequest(BaseModel):
    model_config = {"extra": "forbid", "str_strip_whitespace": True}

    order_id: str = Field(min_length=1, max_length=32)
    action: Literal["cancel", "return", "exchange", "address_change"] | None = None


def _validate(model: type[BaseModel], body: dict[str, Any]) -> Any:
    try:
        return model.model_validate(body)
    except ValidationError as exc:  # field-level messages through the app's 422 handler
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]) from None


def _score(engine: Engine, settings: Settings, request: ScoreOrderRequest | OrderPayload) -> FraudAssessment:
    """Score and keep the audit row, in one session (one trip to the worker thread)."""
    with Session(engine, expire_on_commit=False) as db:
        if isinstance(request, ScoreOrderRequest):
            result = score_order(db, settings, request.order_id, request.action)
            record_assessment(
                db, result, order_id=normalize_order_id(request.order_id), action=request.action
            )
        else:
            result = score_payload(db, settings, request)
            record_assessment(db, result, customer_id=request.customer_id)
        db.commit()
    return result


@router.post(
    "/score", response_model=FraudAssessment, dependencies=[Depends(require_service("fraud_api_key"))]
)
async def score(request: Request, body: Annotated[dict[str, Any], Body()]) -> Response:
    """Score an order in the store (`order_id`) or an order being placed (a payload).

    Async on purpose: validation runs on the event loop and the store work in one worker-thread
    trip, instead of one trip per sync dependency (settings, engine, session): on a busy 2-core box
    each trip costs about a millisecond of the 10 ms budget. The answer is already a validated
    FraudAssessment: it is written out as it is, not validated again through `response_model`
    (which stays for the OpenAPI schema)."""
    parsed = _validate(ScoreOrderRequest if "order_id" in body else OrderPayload, body)
    state = request.app.state
    try:
        result = await run_in_threadpool(_score, state.engine, state.settings, parsed)
        return Response(result.model_dump_json(), media_type="application/json")
    except (OrderNotFound, UnknownCustomer) as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None
    except PayloadError as exc:
        loc = ("body", *(int(p) if p.isdigit() else p for p in exc.field.split(".")))
        raise RequestValidationError(
            [{"loc": loc, "msg": exc.message, "type": "value_error", "input": None}]
        ) from None
