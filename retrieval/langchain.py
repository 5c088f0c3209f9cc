"""The Retriever as a LangChain `BaseRetriever`, for the teams that build on LangChain.

    from retrieval.knowledge import load_store_retriever
    from retrieval.langchain import ShopdeskLangChainRetriever

    lc = ShopdeskLangChainRetriever(retriever=load_store_retriever(settings), k=4,
                                    filters={"source_type": "policy"})
    docs = lc.invoke("how long do refunds take?")  # list[Document]

Each Document's page_content is the passage text; metadata holds id, source, title, anchor,
section, score, source_type and product_id (the fields of a citation).
"""

from __future__ import annotations

from typing import Any

from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict, Field

from retrieval.search import Retriever


class ShopdeskLangChainRetriever(BaseRetriever):
    """Wraps `retrieval.search.Retriever` (hybrid BM25 + dense by default)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    retriever: Retriever
    k: int = Field(default=5, ge=1, le=50)
    filters: dict[str, Any] | None = None
    mode: str | None = None  # None: the wrapped retriever's mode

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun
    ) -> list[Document]:
        passages = self.retriever.search(query, k=self.k, filters=self.filters, mode=self.mode)
        docs = []
        for p in passages:
            meta = p.to_dict()
            text = meta.pop("text")
            docs.append(Document(page_content=text, metadata=meta, id=p.id))
        return docs
