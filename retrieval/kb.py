"""The knowledge base an admin manages: the policy pages in settings.policies_dir, one file each.

Every change writes the file (atomically) and then updates the search index for that one document
(`knowledge.update_store_documents`), so the bot can cite an uploaded page in the very next turn.
Uploads are refused with a message a person can act on: wrong type, too large, not UTF-8 text,
empty, or a name that is not a plain file name.
"""

import re
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine

from retrieval.ingest import CORPUS_SUFFIXES, Document, chunk_document, slugify
from retrieval.knowledge import update_store_documents
from shopdesk.files import write_atomically
from shopdesk.metrics import KB_CHANGES
from shopdesk.settings import Settings

PREFIX = "policies/"
_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,78}\.(md|txt)$")


class KBError(ValueError):
    """A change that was refused; `status` is the HTTP status that says why."""

    def __init__(self, message: str, status: int = 422):
        super().__init__(message)
        self.status = status


@dataclass
class DocInfo:
    name: str
    doc_id: str
    title: str
    bytes: int
    modified: str
    sections: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def normalise_name(filename: str) -> str:
    """An uploaded file's name as a policy page name: "Gift Cards.MD" -> "gift-cards.md"."""
    base = Path(filename.replace("\\", "/")).name
    stem, dot, suffix = base.rpartition(".")
    if not dot:
        stem, suffix = base, "md"
    suffix = suffix.lower()
    if f".{suffix}" not in CORPUS_SUFFIXES:
        raise KBError(f"only Markdown or text files (.md, .markdown, .txt) can be uploaded, not .{suffix}")
    name = f"{slugify(stem)[:78].strip('-')}.{'md' if suffix == 'markdown' else suffix}"
    if not _NAME.match(name):
        raise KBError(f"{filename!r} does not give a usable file name: use letters, digits and dashes")
    return name


def check_text(text: str, max_bytes: int) -> str:
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > max_bytes:
        raise KBError(f"the document is {size // 1024} KiB; the limit is {max_bytes // 1024} KiB", 413)
    if "\x00" in text:
        raise KBError("this looks like a binary file: upload Markdown or plain text")
    if "\ufffd" in text:
        raise KBError("the file is not UTF-8 text (some bytes could not be read): save it as UTF-8 and retry")
    if not text.strip():
        raise KBError("the document is empty")
    return text.replace("\r\n", "\n")


def _path(settings: Settings, name: str) -> Path:
    if not _NAME.match(name):
        raise KBError(f"no document named {name!r}", 404)
    return Path(settings.policies_dir) / name


def _document(name: str, text: str) -> Document:
    # Exactly what load_corpus makes of the file, so `shopdesk index` later finds it unchanged.
    return Document(doc_id=PREFIX + name, text=text, source_type="policy")


def list_documents(settings: Settings) -> list[DocInfo]:
    root = Path(settings.policies_dir)
    out = []
    for path in sorted(root.glob("*")):
        if not path.is_file() or not _NAME.match(path.name):
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        chunks = chunk_document(_document(path.name, text))
        out.append(
            DocInfo(
                name=path.name,
                doc_id=PREFIX + path.name,
                title=chunks[0].title if chunks else path.stem,
                bytes=path.stat().st_size,
                modified=datetime.fromtimestamp(path.stat().st_mtime, UTC).isoformat(),
                sections=len(chunks),
            )
        )
    return out


def read_document(settings: Settings, name: str) -> str:
    path = _path(settings, name)
    if not path.exists():
        raise KBError(f"no document named {name!r}", 404)
    return path.read_text(encoding="utf-8", errors="replace")


def save_document(
    settings: Settings, engine: Engine | None, name: str, text: str, *, create: bool
) -> dict[str, Any]:
    """Write the page and re-index it; `create` refuses to overwrite, an edit refuses a missing page."""
    path = _path(settings, name)
    text = check_text(text, settings.kb_max_bytes)
    if create and path.exists():
        raise KBError(f"{name} already exists: edit it instead, or upload under another name", 409)
    if not create and not path.exists():
        raise KBError(f"no document named {name!r}", 404)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, text)
    doc = _document(name, text)
    update_store_documents(settings, engine, upsert=[doc])
    KB_CHANGES.labels("upload" if create else "edit").inc()
    return {"name": name, "doc_id": doc.doc_id, "sections": len(chunk_document(doc))}


def delete_document(settings: Settings, engine: Engine | None, name: str) -> None:
    path = _path(settings, name)
    if not path.exists():
        raise KBError(f"no document named {name!r}", 404)
    path.unlink()
    update_store_documents(settings, engine, delete=[PREFIX + name])
    KB_CHANGES.labels("delete").inc()
