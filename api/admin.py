"""Admin REST (`/api/admin`, role admin only): prompts and their versions, A/B tests, the knowledge
base, analytics. Each route is a few lines over a service module; the page is web/admin.html.

Errors an admin can act on come back as 422 with `errors` (validation), 409 with the diff (someone
saved first), 404 for unknown names, 413 for an upload over the limit.
"""

import csv
import io
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, Request, status
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from sqlmodel import col, select

from api.deps import AdminUser, RowId, SessionDep, SettingsDep
from bot import abtest, analytics, prompt_versions
from bot.agent import Agent
from bot.preview import preview_turn
from bot.prompts import PromptError, PromptStore, parse_prompt, validate_prompt
from commerce.models import PromptABTest, PromptVersion, StaffUser
from retrieval import kb
from retrieval.index import RetrievalIndexError
from retrieval.knowledge import get_store_retriever

router = APIRouter(prefix="/api/admin", tags=["admin"])
MAX_PROMPT_CHARS = 64_000


def _prompts(request: Request) -> PromptStore:
    return request.app.state.prompts


def _agent(request: Request) -> Agent:
    return request.app.state.agent


def _known(store: PromptStore, name: str) -> None:
    try:
        exists = store.path(name).exists()
    except PromptError:
        exists = False
    if not exists:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no prompt named {name!r}")


def _version_out(v: PromptVersion, authors: dict[int, str]) -> dict[str, Any]:
    return {
        "version": v.version,
        "source": v.source,
        "note": v.note,
        "author": authors.get(v.author_id) if v.author_id else None,
        "created_at": v.created_at.isoformat(),
    }


def _authors(db: SessionDep) -> dict[int, str]:
    return {u.id: u.display_name for u in db.exec(select(StaffUser)).all() if u.id is not None}


# ---- prompts -------------------------------------------------------------------------------------


class PromptText(BaseModel):
    text: str = Field(max_length=MAX_PROMPT_CHARS)


class SaveRequest(PromptText):
    base_version: RowId = Field(description="the version the edit started from")
    note: str | None = Field(default=None, max_length=500)


class PreviewRequest(PromptText):
    message: str = Field(default="Hi! What is your return policy?", min_length=1, max_length=2000)
    customer_id: str | None = Field(default=None, max_length=64)


class RollbackRequest(BaseModel):
    to_version: RowId
    base_version: RowId


@router.get("/prompts")
def list_prompts(_: AdminUser, request: Request, db: SessionDep) -> list[dict[str, Any]]:
    store = _prompts(request)
    tests = {
        t.prompt_name: t.id for t in db.exec(select(PromptABTest).where(PromptABTest.status == "running"))
    }
    out = []
    for name in store.names():
        latest = prompt_versions.current(db, store, name)
        prompt = store.get(name)
        out.append(
            {
                "name": name,
                "description": prompt.description,
                "variables": list(prompt.variables),
                "max_length": prompt.max_length,
                "version": latest.version,
                "updated_at": latest.created_at.isoformat(),
                "ab_test": tests.get(name),
            }
        )
    return out


@router.get("/prompts/{name}")
def get_prompt(name: str, _: AdminUser, request: Request, db: SessionDep) -> dict[str, Any]:
    store = _prompts(request)
    _known(store, name)
    latest = prompt_versions.current(db, store, name)
    prompt = parse_prompt(latest.text, name)
    return {
        "name": name,
        "version": latest.version,
        "text": latest.text,
        "description": prompt.description,
        "variables": list(prompt_versions.provided_variables(db, name)),
        "max_length": prompt.max_length,
    }


@router.post("/prompts/{name}/validate")
def validate(name: str, body: PromptText, _: AdminUser, request: Request, db: SessionDep) -> dict[str, Any]:
    store = _prompts(request)
    _known(store, name)
    prompt_versions.current(db, store, name)
    result = validate_prompt(body.text, name, prompt_versions.provided_variables(db, name))
    return {"ok": result.ok, "errors": result.errors, "used": result.used, "rendered": result.rendered_sample}


@router.post("/prompts/{name}/preview")
async def preview(name: str, body: PreviewRequest, _: AdminUser, request: Request, db: SessionDep) -> Any:
    store = _prompts(request)
    _known(store, name)
    prompt_versions.current(db, store, name)
    result = validate_prompt(body.text, name, prompt_versions.provided_variables(db, name))
    if not result.ok:
        return JSONResponse({"detail": "the prompt is not valid", "errors": result.errors}, status_code=422)
    try:
        turn = await preview_turn(_agent(request), name, body.text, body.message, body.customer_id)
    except LookupError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc
    return {"rendered": result.rendered_sample, "turn": turn}


@router.put("/prompts/{name}")
def save_prompt(name: str, body: SaveRequest, admin: AdminUser, request: Request, db: SessionDep) -> Any:
    store = _prompts(request)
    _known(store, name)
    try:
        row = prompt_versions.save(
            db, store, name, body.text, body.base_version, admin.staff_id, note=body.note
        )
    except prompt_versions.PromptInvalid as exc:
        return JSONResponse({"detail": "the prompt is not valid", "errors": exc.errors}, status_code=422)
    except prompt_versions.VersionConflict as exc:
        return _conflict(exc)
    return {"name": name, "version": row.version}


def _conflict(exc: prompt_versions.VersionConflict) -> JSONResponse:
    return JSONResponse(
        {
            "detail": f"{exc}: nothing was saved. Review the changes, then save again on top of "
            f"v{exc.current.version}.",
            "base_version": exc.base.version if exc.base else None,
            "current_version": exc.current.version,
            "current_text": exc.current.text,
            "diff": exc.diff,
            "your_diff": exc.your_diff,
        },
        status_code=409,
    )


@router.get("/prompts/{name}/versions")
def versions(name: str, _: AdminUser, request: Request, db: SessionDep) -> list[dict[str, Any]]:
    store = _prompts(request)
    _known(store, name)
    prompt_versions.current(db, store, name)
    authors = _authors(db)
    return [_version_out(v, authors) for v in prompt_versions.history(db, name)]


@router.get("/prompts/{name}/versions/{version}")
def version(name: str, version: RowId, _: AdminUser, db: SessionDep) -> dict[str, Any]:
    row = prompt_versions.get_version(db, name, version)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"prompt {name!r} has no version {version}")
    return {**_version_out(row, _authors(db)), "text": row.text}


@router.get("/prompts/{name}/diff")
def diff(name: str, a: RowId, b: RowId, _: AdminUser, db: SessionDep) -> dict[str, Any]:
    va, vb = prompt_versions.get_version(db, name, a), prompt_versions.get_version(db, name, b)
    if va is None or vb is None:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, f"prompt {name!r} has no version {a if va is None else b}"
        )
    return {"a": a, "b": b, "diff": prompt_versions.diff_text(va.text, vb.text, f"v{a}", f"v{b}")}


@router.post("/prompts/{name}/rollback")
def rollback(name: str, body: RollbackRequest, admin: AdminUser, request: Request, db: SessionDep) -> Any:
    store = _prompts(request)
    _known(store, name)
    try:
        row = prompt_versions.rollback(db, store, name, body.to_version, body.base_version, admin.staff_id)
    except PromptError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc
    except prompt_versions.PromptInvalid as exc:
        return JSONResponse({"detail": "cannot roll back", "errors": exc.errors}, status_code=422)
    except prompt_versions.VersionConflict as exc:
        return _conflict(exc)
    return {"name": name, "version": row.version}


# ---- A/B tests -----------------------------------------------------------------------------------


class StartTest(BaseModel):
    prompt_name: str = Field(max_length=64)
    version_a: RowId
    version_b: RowId
    share_b: float = Field(default=0.5, gt=0.0, lt=1.0)


class StopTest(BaseModel):
    promote: Literal["A", "B"] | None = None


@router.get("/abtests")
def list_tests(_: AdminUser, db: SessionDep) -> list[dict[str, Any]]:
    rows = db.exec(select(PromptABTest).order_by(col(PromptABTest.id).desc())).all()
    return [t.model_dump(mode="json") for t in rows]


@router.post("/abtests", status_code=201)
def start_test(body: StartTest, admin: AdminUser, request: Request, db: SessionDep) -> dict[str, Any]:
    store = _prompts(request)
    _known(store, body.prompt_name)
    prompt_versions.current(db, store, body.prompt_name)
    try:
        test = abtest.start_test(
            db, body.prompt_name, body.version_a, body.version_b, body.share_b, admin.staff_id
        )
    except abtest.ABTestError as exc:
        raise HTTPException(422, str(exc)) from exc
    store.tests_changed()
    return test.model_dump(mode="json")


def _test(db: SessionDep, test_id: RowId) -> PromptABTest:
    test = db.get(PromptABTest, test_id)
    if test is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no A/B test {test_id}")
    return test


@router.get("/abtests/{test_id}")
def test_report(test_id: RowId, _: AdminUser, db: SessionDep) -> dict[str, Any]:
    return abtest.report(db, _test(db, test_id))


@router.post("/abtests/{test_id}/stop")
def stop_test(test_id: RowId, body: StopTest, admin: AdminUser, request: Request, db: SessionDep) -> Any:
    try:
        test = abtest.stop_test(db, _prompts(request), _test(db, test_id), body.promote, admin.staff_id)
    except abtest.ABTestError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc
    except prompt_versions.PromptInvalid as exc:
        return JSONResponse({"detail": "cannot promote", "errors": exc.errors}, status_code=422)
    return test.model_dump(mode="json")


# ---- knowledge base ------------------------------------------------------------------------------


class Upload(BaseModel):
    filename: str = Field(min_length=1, max_length=200)
    text: str


class DocText(BaseModel):
    text: str


def _kb_error(exc: kb.KBError) -> HTTPException:
    return HTTPException(exc.status, str(exc))


@router.get("/kb")
def kb_list(_: AdminUser, settings: SettingsDep) -> list[dict[str, Any]]:
    return [d.to_dict() for d in kb.list_documents(settings)]


@router.get("/kb/search")
def kb_search(
    _: AdminUser,
    request: Request,
    q: Annotated[str, Query(min_length=1, max_length=2000)],
    k: Annotated[int, Query(ge=1, le=20)] = 5,
    type: Literal["policy", "product"] | None = None,
) -> dict[str, Any]:
    state = request.app.state
    try:
        retriever = get_store_retriever(state.settings, state.engine)
    except RetrievalIndexError as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc)) from exc
    filters = {"source_type": type} if type else None
    return {"query": q, "passages": [p.to_dict() for p in retriever.search(q, k=k, filters=filters)]}


@router.get("/kb/{name}")
def kb_get(name: str, _: AdminUser, settings: SettingsDep) -> dict[str, Any]:
    try:
        return {"name": name, "text": kb.read_document(settings, name)}
    except kb.KBError as exc:
        raise _kb_error(exc) from exc


@router.post("/kb", status_code=201)
def kb_upload(body: Upload, _: AdminUser, request: Request, settings: SettingsDep) -> dict[str, Any]:
    try:
        name = kb.normalise_name(body.filename)
        return kb.save_document(settings, request.app.state.engine, name, body.text, create=True)
    except kb.KBError as exc:
        raise _kb_error(exc) from exc


@router.put("/kb/{name}")
def kb_edit(
    name: str, body: DocText, _: AdminUser, request: Request, settings: SettingsDep
) -> dict[str, Any]:
    try:
        return kb.save_document(settings, request.app.state.engine, name, body.text, create=False)
    except kb.KBError as exc:
        raise _kb_error(exc) from exc


@router.delete("/kb/{name}", status_code=204)
def kb_delete(name: str, _: AdminUser, request: Request, settings: SettingsDep) -> Response:
    try:
        kb.delete_document(settings, request.app.state.engine, name)
    except kb.KBError as exc:
        raise _kb_error(exc) from exc
    return Response(status_code=204)


# ---- analytics -----------------------------------------------------------------------------------

Days = Annotated[int, Query(ge=1, le=366, description="the last N days of conversations")]


Since = Annotated[datetime | None, Query(description="instead of days: conversations created from this time")]


def _window(days: int, since: datetime | None) -> tuple[datetime, datetime]:
    until = datetime.now(UTC) + timedelta(seconds=1)
    if since is not None:
        return (since if since.tzinfo else since.replace(tzinfo=UTC)), until
    return until - timedelta(days=days), until


@router.get("/analytics")
def analytics_summary(_: AdminUser, db: SessionDep, days: Days = 30, since: Since = None) -> dict[str, Any]:
    return analytics.dashboard(db, *_window(days, since))


@router.get("/analytics/export.csv")
def analytics_csv(_: AdminUser, db: SessionDep, days: Days = 30, since: Since = None) -> Response:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(analytics.CSV_COLUMNS)
    writer.writerows(analytics.csv_rows(analytics.conversation_outcomes(db, *_window(days, since))))
    return Response(
        out.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="shopdesk-conversations-{days}d.csv"'},
    )
