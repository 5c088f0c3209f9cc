"""Keep card numbers, emails, street addresses and session tokens out of logs and the audit trail."""

import logging
import re

_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_CARD = re.compile(r"\b(?:\d[ -]?){12,18}\d\b")
_STREET = re.compile(
    r"\b\d{1,6}\s+(?:[A-Z][a-z]+\s){1,3}(?:Street|St|Avenue|Ave|Road|Rd|Drive|Dr|Lane|Ln|Boulevard|Blvd|"
    r"Way|Court|Ct|Place|Pl)\b\.?",
)

# Signed tokens (JWTs), e.g. in a WebSocket URL's query that the access log prints: a token is a login.
_TOKEN = re.compile(r"\beyJ[\w-]{5,}\.[\w-]{5,}\.[\w-]{5,}")

# A whole one-line US address ("445 maple drive, Suite 394, Fort Worth, TX 76165"), whatever the case
# of the street's words: a confirmation that reads an address back must not keep it in the audit.
_ADDRESS_LINE = re.compile(
    r"(?<![A-Za-z0-9#])\d{1,6}[A-Za-z]?\s+[A-Za-z][^,\n]{1,60},\s*(?:[^,\n]{1,40},\s*)?"
    r"[A-Za-z][A-Za-z .'-]{1,40},?\s+[A-Za-z]{2}[A-Za-z ]{0,20}\s+\d{5}(?:-\d{4})?(?![0-9])",
)
# Fields that hold a part of a postal address (tool arguments, order rows): masked whole, by name.
ADDRESS_KEYS = frozenset(
    {"street", "address", "address1", "address2", "city", "zip", "ship_address1", "ship_address2"}
    | {"ship_city", "ship_zip", "old_address1", "old_zip"}
)


def redact(text: str) -> str:
    text = _TOKEN.sub("[token]", text)
    text = _EMAIL.sub("[email]", text)
    text = _CARD.sub("[card]", text)
    text = _ADDRESS_LINE.sub("[address]", text)
    return _STREET.sub("[address]", text)


def redact_value(value: object) -> object:
    """Redact strings anywhere inside JSON-like data; address fields (by key) are masked whole."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {
            k: "[address]" if k in ADDRESS_KEYS and isinstance(v, str) and v else redact_value(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [redact_value(v) for v in value]
    return value


_installed = False


def install_log_redaction() -> None:
    """Redact every log record when it is created, whatever logger or handler later prints it."""
    global _installed
    if _installed:
        return
    make_record = logging.getLogRecordFactory()

    def redacting_factory(*args: object, **kwargs: object) -> logging.LogRecord:
        record = make_record(*args, **kwargs)
        # Redact the template and each argument in place: formatters that read `record.args`
        # (uvicorn's access log unpacks them) keep working.
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: redact(v) if isinstance(v, str) else v for k, v in record.args.items()}
        return record

    logging.setLogRecordFactory(redacting_factory)
    _installed = True
