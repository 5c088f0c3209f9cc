"""Staff accounts (support agents and admins): created here, from the CLI or the demo setup; passwords
are only ever stored as argon2id hashes."""

import json
import secrets
from dataclasses import dataclass

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from commerce.models import StaffUser, utcnow
from shopdesk.security import STAFF_ROLES, StaffClaims, hash_password, verify_password
from shopdesk.settings import Settings

MIN_PASSWORD_LENGTH = 10
# The demo store's people: Alex works the console, the admin edits prompts and reads analytics.
DEMO_STAFF = (("alex", "Alex", "agent"), ("admin", "Admin", "admin"))


class StaffError(ValueError):
    pass


@dataclass(frozen=True)
class DemoLogin:
    username: str
    password: str
    role: str


def create_staff(db: Session, username: str, display_name: str, role: str, password: str) -> StaffUser:
    username = username.strip().lower()
    if role not in STAFF_ROLES:
        raise StaffError(f"role must be one of {', '.join(STAFF_ROLES)}")
    if not username or len(username) > 64 or not username.replace("_", "").replace(".", "").isalnum():
        raise StaffError("a username is 1-64 letters, digits, dots or underscores")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise StaffError(f"a password has at least {MIN_PASSWORD_LENGTH} characters")
    if db.exec(select(StaffUser.id).where(StaffUser.username == username)).first() is not None:
        raise StaffError(f"the username {username!r} is taken")
    user = StaffUser(
        username=username,
        display_name=display_name.strip() or username,
        role=role,
        password_hash=hash_password(password),
    )
    db.add(user)
    db.commit()
    db.refresh(user)
    return user


def authenticate(db: Session, username: str, password: str) -> StaffClaims | None:
    user = db.exec(select(StaffUser).where(StaffUser.username == username.strip().lower())).first()
    ok = verify_password(password, user.password_hash if user else None)
    if not ok or user is None or not user.active:
        return None
    return StaffClaims(staff_id=user.id or 0, role=user.role, name=user.display_name)


def touch(db: Session, staff_id: int) -> None:
    """Presence: the console's socket marks its agent as seen."""
    user = db.get(StaffUser, staff_id)
    if user is not None:
        user.last_seen_at = utcnow()
        db.add(user)
        db.commit()


def list_staff(db: Session) -> list[StaffUser]:
    return list(db.exec(select(StaffUser).order_by(col(StaffUser.id))).all())


def ensure_demo_staff(engine: Engine, settings: Settings) -> list[DemoLogin]:
    """The demo store's agent and admin, each with a random password kept in var/demo-staff.json
    (mode 0600): nobody ships with a default password. Idempotent."""
    path = settings.var_dir / "demo-staff.json"
    known: dict[str, dict[str, str]] = json.loads(path.read_text()) if path.exists() else {}
    logins: list[DemoLogin] = []
    with Session(engine) as db:
        for username, name, role in DEMO_STAFF:
            user = db.exec(select(StaffUser).where(StaffUser.username == username)).first()
            entry = known.get(username)
            if user is not None and entry and verify_password(entry["password"], user.password_hash):
                logins.append(DemoLogin(username, entry["password"], user.role))
                continue
            password = secrets.token_urlsafe(12)
            if user is None:
                create_staff(db, username, name, role, password)
            else:  # the file was lost: give the demo account a new password
                user.password_hash = hash_password(password)
                db.add(user)
                db.commit()
            known[username] = {"password": password, "role": role}
            logins.append(DemoLogin(username, password, role))
    settings.var_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(known, indent=2))
    tmp.chmod(0o600)
    tmp.replace(path)
    return logins
