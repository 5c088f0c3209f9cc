"""Platform REST (other teams' services): knowledge search for now.

`GET /api/search?q=&k=&type=` returns the store's passages (policy pages and product pages), best
first, each with what a citation needs (source, title, anchor). The Retriever is opened once per
app, lazily, from settings.var_dir/"index" (built there on first use when missing), and reopened when
`shopdesk index` rewrites the index on disk. Other code (the agent's tool) shares the same instance
through `retrieval.knowledge.get_store_retriever(settings, engine)`.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel

from retrieval.index import RetrievalIndexError
from retrieval.search import Retriever

router = APIRouter(prefix="/api", tags=["platform"])
MAX_Q_CHARS = 32_768  # longer is a 422; anything over 2 KB is truncated by the retriever anyway


class PassageOut(BaseModel):
    id: str
    source: str
    title: str
    section: str
    anchor: str
    text: str
    score: float
    source_type: str
    product_id: str | None


class SearchResponse(BaseModel):
    query: str
    k: int
    type: str | None
    passages: list[PassageOut]


def get_retriever(request: Request) -> Retriever:
    """The app's Retriever: opened (or built) on first use, then kept in app.state; reopened when
    `shopdesk index` rewrote the index (the process-wide cache notices the new manifest)."""
    from retrieval.knowledge import get_store_retriever

    state = request.app.state
    try:
        retriever = get_store_retriever(state.settings, getattr(state, "engine", None))
    except RetrievalIndexError as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc)) from exc
    state.retriever = retriever
    return retriever


RetrieverDep = Annotated[Retriever, Depends(get_retriever)]


@router.get("/search", response_model=SearchResponse)
def search(
    request: Request,
    q: Annotated[str, Query(max_length=MAX_Q_CHARS, description="What to search for")] = "",
    k: Annotated[int, Query(ge=1, le=50, description="How many passages (1-50)")] = 5,
    type: Annotated[Literal["policy", "product"] | None, Query(description="Only this source type")] = None,
) -> SearchResponse:
    """The store's knowledge passages for `q`, best first (hybrid BM25 + dense search).

    Long queries are cut at 2 KB before searching; an empty one is a 422.
    """
    if not q.strip():
        raise RequestValidationError(
            [{"loc": ("query", "q"), "msg": "q must not be empty", "type": "value_error", "input": q}]
        )
    retriever = get_retriever(request)  # after validation: a bad request never opens the index
    filters = {"source_type": type} if type else None
    passages = retriever.search(q, k=k, filters=filters)
    return SearchResponse(query=q, k=k, type=type, passages=[PassageOut(**p.to_dict()) for p in passages])
