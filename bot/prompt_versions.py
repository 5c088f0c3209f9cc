"""Prompt versions in the database, the file in prompts/ kept equal to the newest one.

Saving is optimistic: the editor sends the version it started from; if someone saved since, the save
is refused with what changed (VersionConflict) and nothing is written. A file changed on disk by hand
(or by a deploy) is recorded as a version of its own the next time anyone looks, so history has no
holes and a rollback can always go back to it. A rollback is a save of an old text: history only grows.
"""

import difflib
import threading

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from bot.prompts import PromptError, PromptStore, parse_prompt, validate_prompt
from commerce.models import PromptVersion
from shopdesk.files import write_atomically
from shopdesk.metrics import PROMPT_CONFLICTS, PROMPT_SAVES

# Saves in this process take turns (the database's unique key still guards other processes).
_LOCK = threading.RLock()


class PromptInvalid(ValueError):
    def __init__(self, errors: list[str]):
        super().__init__("; ".join(errors))
        self.errors = errors


class VersionConflict(Exception):
    """The base version is not the newest: someone saved in between."""

    def __init__(self, base: PromptVersion | None, current: PromptVersion, mine: str):
        super().__init__(f"version {current.version} was saved after the version you edited")
        self.base = base
        self.current = current
        self.diff = diff_text(base.text if base else "", current.text, _label(base), _label(current))
        self.your_diff = diff_text(current.text, mine, _label(current), "your edit")


def _label(v: PromptVersion | None) -> str:
    return f"v{v.version}" if v else "v?"


def diff_text(a: str, b: str, a_label: str = "a", b_label: str = "b") -> str:
    """Unified diff, line by line, as the admin page shows it."""
    return "".join(
        difflib.unified_diff(a.splitlines(keepends=True), b.splitlines(keepends=True), a_label, b_label, n=3)
    )


def _latest(db: Session, name: str) -> PromptVersion | None:
    return db.exec(
        select(PromptVersion).where(PromptVersion.name == name).order_by(col(PromptVersion.version).desc())
    ).first()


def get_version(db: Session, name: str, version: int) -> PromptVersion | None:
    return db.exec(
        select(PromptVersion).where(PromptVersion.name == name, PromptVersion.version == version)
    ).first()


def history(db: Session, name: str) -> list[PromptVersion]:
    return list(
        db.exec(
            select(PromptVersion)
            .where(PromptVersion.name == name)
            .order_by(col(PromptVersion.version).desc())
        ).all()
    )


def current(db: Session, store: PromptStore, name: str) -> PromptVersion:
    """The newest version, first recording the file as one if it differs (hand edit, deploy, first use)."""
    path = store.path(name)
    if not path.exists():
        raise PromptError(f"no prompt {name!r}")
    with _LOCK:
        # The database first, then the file: a save writes the file before it commits, so a file
        # newer than the row read here is a save in flight, and its commit wins the unique key below.
        latest = _latest(db, name)
        text = path.read_text(encoding="utf-8")
        if latest is not None and latest.text == text:
            return latest
        return _record_file(db, name, text, latest)


def _record_file(db: Session, name: str, text: str, latest: PromptVersion | None) -> PromptVersion:
    row = PromptVersion(
        name=name,
        version=(latest.version + 1) if latest else 1,
        text=text,
        source="file",
        note="read from prompts/" if latest is None else "changed on disk outside the admin page",
    )
    db.add(row)
    try:
        db.commit()
    except IntegrityError:  # another request recorded it at the same moment
        db.rollback()
        fresh = _latest(db, name)
        assert fresh is not None
        return fresh
    db.refresh(row)
    return row


def provided_variables(db: Session, name: str) -> tuple[str, ...]:
    """The variables the code passes to this prompt: the first version's header (the shipped file)."""
    first = db.exec(
        select(PromptVersion).where(PromptVersion.name == name).order_by(col(PromptVersion.version))
    ).first()
    if first is None:
        return ()
    return parse_prompt(first.text, name).variables


def save(
    db: Session,
    store: PromptStore,
    name: str,
    text: str,
    base_version: int,
    author_id: int | None,
    source: str = "save",
    note: str | None = None,
) -> PromptVersion:
    """Validate, check the base, store the new version, rewrite the file: all or nothing."""
    with _LOCK:
        return _save(db, store, name, text, base_version, author_id, source, note)


def _save(
    db: Session,
    store: PromptStore,
    name: str,
    text: str,
    base_version: int,
    author_id: int | None,
    source: str,
    note: str | None,
) -> PromptVersion:
    latest = current(db, store, name)
    result = validate_prompt(text, name, provided_variables(db, name))
    if not result.ok:
        raise PromptInvalid(result.errors)
    if base_version != latest.version:
        PROMPT_CONFLICTS.inc()
        raise VersionConflict(get_version(db, name, base_version), latest, text)
    if text == latest.text:
        raise PromptInvalid([f"nothing to save: the text is the same as v{latest.version}"])
    row = PromptVersion(
        name=name, version=latest.version + 1, text=text, source=source, note=note, author_id=author_id
    )
    db.add(row)
    try:
        db.flush()  # the unique (name, version) turns a simultaneous save into a conflict, before any write
    except IntegrityError:
        db.rollback()
        newest = current(db, store, name)
        PROMPT_CONFLICTS.inc()
        raise VersionConflict(get_version(db, name, base_version), newest, text) from None
    write_atomically(store.path(name), text)
    db.commit()
    PROMPT_SAVES.labels(source).inc()
    db.refresh(row)
    return row


def rollback(
    db: Session, store: PromptStore, name: str, to_version: int, base_version: int, author_id: int | None
) -> PromptVersion:
    old = get_version(db, name, to_version)
    if old is None:
        raise PromptError(f"prompt {name!r} has no version {to_version}")
    return save(db, store, name, old.text, base_version, author_id, "rollback", f"rollback to v{to_version}")
