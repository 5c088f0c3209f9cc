"""Chat sessions: a new conversation bound to an identity, and the signed token that carries it.

The widget's REST call and the scenario runner open sessions the same way, so an evaluation signs in
exactly as a shopper does.
"""

import uuid

from sqlmodel import Session

from commerce.models import Conversation, Customer
from shopdesk.security import SessionClaims, issue_token
from shopdesk.settings import Settings


def start_session(db: Session, settings: Settings, customer: Customer | None) -> tuple[Conversation, str]:
    """A committed conversation for `customer` (None: a guest who must verify) and its token."""
    conv = Conversation(
        id=str(uuid.uuid4()),
        customer_id=customer.id if customer else None,
        identity="customer" if customer else "guest",
    )
    db.add(conv)
    db.commit()
    token = issue_token(SessionClaims(conversation_id=conv.id, customer_id=conv.customer_id), settings)
    return conv, token
