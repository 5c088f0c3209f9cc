"""No card numbers, emails or street addresses in logs or in the audit trail."""

import logging

from shopdesk.redact import install_log_redaction, redact, redact_value


def test_redact_masks_pii_and_keeps_ids():
    text = "Card 4111 1111 1111 1111, mail ann.lee@example.com, ship to 215 River Road; order #W2611340 zip 10083"
    out = redact(text)
    assert "4111" not in out and "ann.lee" not in out and "215 River Road" not in out
    assert "#W2611340" in out and "10083" in out
    assert redact_value({"a": ["x@y.io"], "n": 3}) == {"a": ["[email]"], "n": 3}


def test_every_log_record_is_redacted(caplog):
    install_log_redaction()
    with caplog.at_level(logging.INFO):
        logging.getLogger("bot.agent").info(
            "shopper %s paid with %s", "bo@example.org", "5500-0000-0000-0004"
        )
    assert "bo@example.org" not in caplog.text and "5500" not in caplog.text
    assert "[email]" in caplog.text and "[card]" in caplog.text


def test_formatters_that_read_args_keep_working(caplog):
    install_log_redaction()
    with caplog.at_level(logging.INFO):
        logging.getLogger("bot.access").info(
            '%s - "%s %s HTTP/%s" %d', "127.0.0.1:1", "GET", "/q?e=a@b.co", "1.1", 200
        )
    record = caplog.records[-1]
    assert isinstance(record.args, tuple) and record.args[2] == "/q?e=[email]" and record.args[4] == 200


def test_session_tokens_in_urls_are_redacted() -> None:
    from shopdesk.redact import redact

    line = 'WebSocket /ws/chat?token=eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJjb252IjoiMjAxMGQx.sdalDhK-cow3gR3c4jd8j7n5x" [accepted]'
    assert redact(line) == 'WebSocket /ws/chat?token=[token]" [accepted]'
