"""The terminal chat, in-process, on the scripted backend."""

from typer.testing import CliRunner

from shopdesk import cli
from shopdesk.settings import Settings


def test_chat_in_process_answers_from_the_store(store_db, monkeypatch):
    settings = Settings(llm_backend="scripted", database_url=str(store_db.url))
    monkeypatch.setattr(cli, "get_settings", lambda: settings)
    result = CliRunner().invoke(
        cli.app, ["chat", "--customer", "james_li_5688"], input="what did I order?\n\n"
    )
    assert result.exit_code == 0, result.output
    # The scripted model picks the first offered action (list_orders); the reply is the store's list.
    assert "You have 4 orders" in result.output and "#W2611340" in result.output


def test_seed_if_empty_keeps_an_existing_store(store_db, monkeypatch):
    settings = Settings(database_url=str(store_db.url))
    monkeypatch.setattr(cli, "get_settings", lambda: settings)
    result = CliRunner().invoke(cli.app, ["seed", "--if-empty"])
    assert result.exit_code == 0, result.output
    assert "already seeded" in result.output
