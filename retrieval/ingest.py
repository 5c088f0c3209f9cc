"""Documents in, chunks out: heading-aware Markdown chunking with the metadata a citation needs.

A `Document` is one file (a policy page, a product page, any Markdown/text file of an evaluation
corpus); its `doc_id` is its path relative to the corpus directory ("policies/refunds.md"). Each
`##` (or deeper) section becomes a chunk carrying the document title, the heading, a GitHub-style
anchor (`#how-long-a-refund-takes`) and the product id for product pages. Sections longer than
`max_chars` are split on paragraph boundaries; every part keeps the heading and anchor.

`load_corpus(dir)` reads *.md, *.markdown and *.txt files: bytes that are not UTF-8 are decoded with
replacement characters (and a warning), empty files are skipped; both are listed in the report.
"""

from __future__ import annotations

import hashlib
import logging
import re
import unicodedata
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

CORPUS_SUFFIXES = (".md", ".markdown", ".txt")
MAX_CHARS = 700  # longer sections are split (paragraphs, then lines): stays under MiniLM's 256 tokens
CHUNKER = f"markdown-sections/v1/max{MAX_CHARS}"  # recorded in the manifest: a change re-chunks all

_HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t]*#*[ \t]*$")
_FENCE = re.compile(r"^\s*(```|~~~)")


@dataclass
class Document:
    doc_id: str  # path relative to the corpus dir, "/"-separated
    text: str
    source_type: str = "policy"  # policy | product
    product_id: str | None = None
    title: str | None = None  # default: the first H1, else the file name

    @property
    def content_hash(self) -> str:
        key = f"{self.source_type}|{self.product_id}|{self.title}|{self.text}"
        return hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]


@dataclass
class Chunk:
    id: str  # "<doc_id>#<anchor>", with "~N" for the parts of a long section
    doc_id: str
    title: str  # the document's title
    section: str  # the heading of the section ("" before the first heading)
    anchor: str  # GitHub-style slug of the heading ("" when none)
    text: str  # the section's text, heading line included
    source_type: str = "policy"
    product_id: str | None = None

    @property
    def source(self) -> str:
        return self.doc_id

    def index_text(self) -> str:
        """What is embedded and BM25-indexed: the title and heading give a section its context."""
        head = (
            self.title if not self.section or self.section == self.title else f"{self.title} - {self.section}"
        )
        body = self.text
        first, _, rest = body.partition("\n")
        if _HEADING.match(first):  # the heading is already in `head`
            body = rest.strip()
        return f"{head}\n{body}" if body else head

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Chunk:
        return cls(**{k: d.get(k) for k in cls.__dataclass_fields__})  # type: ignore[arg-type]


@dataclass
class CorpusReport:
    files: int = 0
    chunks: int = 0
    skipped_empty: list[str] = field(default_factory=list)
    decoded_with_replacement: list[str] = field(default_factory=list)


def slugify(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = unicodedata.normalize("NFKC", heading).strip().lower()
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)  # [label](url) -> label
    text = re.sub(r"[*`~]|(?<!\w)_+|_+(?!\w)", "", text)  # emphasis marks (not snake_case)
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _unique(anchor: str, seen: dict[str, int]) -> str:
    if anchor not in seen:
        seen[anchor] = 0
        return anchor
    seen[anchor] += 1
    return f"{anchor}-{seen[anchor]}"


def _pieces(text: str, max_chars: int) -> list[str]:
    """Blocks no longer than max_chars: paragraphs, else lines (lists), else sentences/words."""
    out: list[str] = []
    for para in re.split(r"\n\s*\n", text):
        para = para.strip()
        if not para:
            continue
        if len(para) <= max_chars:
            out.append(para)
            continue
        for line in para.split("\n"):
            line = line.strip()
            while len(line) > max_chars:  # one enormous line: cut at a sentence end or a space
                cut = max(line.rfind(". ", 0, max_chars), line.rfind(" ", 0, max_chars))
                cut = cut + 1 if cut > max_chars // 2 else max_chars
                out.append(line[:cut].strip())
                line = line[cut:].strip()
            if line:
                out.append(line)
    return out


def _split_long(text: str, max_chars: int) -> list[str]:
    """Greedy packing of paragraphs/lines into parts of at most max_chars (one part if it fits)."""
    if len(text) <= max_chars:
        return [text]
    parts: list[str] = []
    current = ""
    for piece in _pieces(text, max_chars):
        sep = "\n" if piece.startswith(("- ", "* ", "|")) or re.match(r"\d+\. ", piece) else "\n\n"
        if current and len(current) + len(sep) + len(piece) > max_chars:
            parts.append(current)
            current = piece
        else:
            current = f"{current}{sep}{piece}" if current else piece
    if current:
        parts.append(current)
    return parts


def chunk_document(doc: Document, max_chars: int = MAX_CHARS) -> list[Chunk]:
    """Split a Markdown document into one chunk per section (headings outside code fences)."""
    lines = doc.text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    sections: list[tuple[int, str, list[str]]] = [(0, "", [])]  # (level, heading, lines)
    title = doc.title
    in_fence = False
    for line in lines:
        if _FENCE.match(line):
            in_fence = not in_fence
        m = None if in_fence else _HEADING.match(line)
        if m:
            level, heading = len(m.group(1)), m.group(2).strip()
            if level == 1 and title is None:
                title = heading
            sections.append((level, heading, [line]))
        else:
            sections[-1][2].append(line)
    if title is None:
        title = Path(doc.doc_id).stem.replace("-", " ").replace("_", " ").strip() or doc.doc_id

    chunks: list[Chunk] = []
    seen: dict[str, int] = {}
    for level, heading, body in sections:
        text = "\n".join(body).strip()
        anchor = _unique(slugify(heading), seen) if heading else ""
        if not "\n".join(body[1:] if heading else body).strip():
            continue  # a bare heading (its subsections carry the text), or nothing before the first
        for i, part in enumerate(_split_long(text, max_chars)):
            if i and heading:
                part = f"{'#' * level} {heading}\n\n{part}"
            cid = f"{doc.doc_id}#{anchor}" + (f"~{i + 1}" if i else "")
            chunks.append(
                Chunk(
                    id=cid,
                    doc_id=doc.doc_id,
                    title=title,
                    section=heading,
                    anchor=anchor,
                    text=part,
                    source_type=doc.source_type,
                    product_id=doc.product_id,
                )
            )
    return chunks


def chunk_documents(docs: list[Document], max_chars: int = MAX_CHARS) -> list[Chunk]:
    return [c for d in docs for c in chunk_document(d, max_chars)]


def read_text(path: Path) -> tuple[str, bool]:
    """The file's text and whether bytes had to be replaced (not valid UTF-8)."""
    raw = path.read_bytes()
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        return raw.decode("utf-8"), False
    except UnicodeDecodeError:
        return raw.decode("utf-8", errors="replace"), True


def load_corpus(
    corpus_dir: str | Path, source_type: str = "policy", prefix: str = ""
) -> tuple[list[Document], CorpusReport]:
    """Every Markdown/text file under `corpus_dir` as a Document (doc id = prefix + relative path)."""
    root = Path(corpus_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"corpus directory not found: {root}")
    report = CorpusReport()
    docs: list[Document] = []
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in CORPUS_SUFFIXES):
        rel = prefix + path.relative_to(root).as_posix()
        if any(part.startswith(".") for part in path.relative_to(root).parts):
            continue
        text, replaced = read_text(path)
        if replaced:
            report.decoded_with_replacement.append(rel)
            msg = f"{rel}: not valid UTF-8, undecodable bytes replaced with U+FFFD"
            warnings.warn(msg, UnicodeWarning, stacklevel=2)
            log.warning(msg)
        if not text.strip():
            report.skipped_empty.append(rel)
            log.warning("%s: empty file, skipped", rel)
            continue
        docs.append(Document(doc_id=rel, text=text, source_type=source_type))
    report.files = len(docs)
    return docs, report
