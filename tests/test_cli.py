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


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_chat_mistakes_are_one_line_errors_not_tracebacks(store_db, monkeypatch, tmp_path):  # type: ignore[no-untyped-def]
    settings = Settings(llm_backend="scripted", database_url=str(store_db.url))
    monkeypatch.setattr(cli, "get_settings", lambda: settings)
    runner = CliRunner()
    cases = [
        (["chat", "--customer", "nobody_1"], "no customer 'nobody_1'"),
        (["chat", "--url", f"http://127.0.0.1:{_free_port()}"], "cannot chat with"),
        (["chat", "--url", "notaurl"], "cannot chat with"),
        (["chat", "--backend", "bogus"], "bogus"),
        (
            ["eval", "forecast", "--csv", str(tmp_path), "--horizon", "7", "--freq", "D"],
            "not a readable file",
        ),
        (["eval", "recsys", "--interactions", str(tmp_path / "x.csv"), "--seed", "-1"], "seed"),
    ]
    for args, said in cases:
        result = runner.invoke(cli.app, args, input="\n")
        assert result.exit_code == 2, (args, result.output, result.exception)
        assert said in result.output and "Traceback" not in result.output, (args, result.output)
