"""Customer look-ups: identity checks (email, name + zip) and profile data, over a SQLModel Session."""

from sqlalchemy import func
from sqlmodel import Session, col, select

from commerce.models import Address, Customer, PaymentMethod


def get_customer(db: Session, customer_id: str) -> Customer | None:
    return db.get(Customer, customer_id.strip()) if customer_id else None


def find_by_email(db: Session, email: str) -> Customer | None:
    """The customer with this email (case-insensitive, surrounding spaces ignored)."""
    email = (email or "").strip().lower()
    if not email:
        return None
    return db.exec(select(Customer).where(func.lower(Customer.email) == email)).first()


def find_by_name_zip(db: Session, first_name: str, last_name: str, zip_code: str) -> Customer | None:
    """The customer with this first and last name (case-insensitive) whose default address has
    this zip code. None when nobody matches, or when several customers do (ambiguous: ask for
    the email instead)."""
    first = (first_name or "").strip().lower()
    last = (last_name or "").strip().lower()
    zip_code = (zip_code or "").strip()
    if not (first and last and zip_code):
        return None
    stmt = (
        select(Customer.id)
        .join(Address, col(Address.customer_id) == col(Customer.id))
        .where(
            func.lower(Customer.first_name) == first,
            func.lower(Customer.last_name) == last,
            col(Address.is_default).is_(True),
            Address.zip == zip_code,
        )
        .distinct()
        .limit(2)
    )
    found = db.exec(stmt).all()
    return db.get(Customer, found[0]) if len(found) == 1 else None


def default_address(db: Session, customer_id: str) -> Address | None:
    stmt = (
        select(Address)
        .where(Address.customer_id == customer_id, col(Address.is_default).is_(True))
        .order_by(col(Address.created_at).desc(), col(Address.id).desc())
    )
    return db.exec(stmt).first()


def payment_methods(db: Session, customer_id: str) -> list[PaymentMethod]:
    """The customer's payment methods, oldest first."""
    stmt = (
        select(PaymentMethod)
        .where(PaymentMethod.customer_id == customer_id)
        .order_by(col(PaymentMethod.added_at), col(PaymentMethod.id))
    )
    return list(db.exec(stmt))
