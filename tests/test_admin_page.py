"""The admin page in headless Chromium against a real server (scripted model): an admin changes the
greeting, previews it, saves it, a new chat in the widget shows it, and a rollback brings back the old one.

Screenshots go to var/test-artifacts/admin_page/.
"""

import shutil
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session

from bot.llm.scripted import ScriptedBackend
from bot.prompts import PROMPTS_DIR
from shopdesk.settings import Settings
from shopdesk.staff import create_staff

pytestmark = pytest.mark.slow
ARTIFACTS = Path(__file__).resolve().parent.parent / "var" / "test-artifacts" / "admin_page"
JAMES = "james_li_5688"
PASSWORD = "correct horse battery"
WAIT = 30_000
ORIGINAL = "How can I help?"
NEW = "Ahoy! What can I do for you today?"


@pytest.fixture
def backend() -> ScriptedBackend:
    return ScriptedBackend()


@pytest.fixture
def live_settings(store_db, tmp_path: Path) -> Settings:  # type: ignore[no-untyped-def]
    prompts = tmp_path / "prompts"
    shutil.copytree(PROMPTS_DIR, prompts)
    with Session(store_db) as db:
        create_staff(db, "root", "Root", "admin", PASSWORD)
    return Settings(llm_backend="scripted", database_url=str(store_db.url), prompts_dir=prompts)


def shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def new_chat_greeting(browser: Any, base: str) -> str:
    """A new visitor (fresh browser context) signs in on the storefront and opens the widget."""
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(base + "/")
        page.wait_for_selector("#signin option:nth-child(2)", state="attached")
        page.evaluate("id => shopdeskDemo.signIn(id)", JAMES)
        page.click(".sd-launcher")
        page.wait_for_selector(".sd-greeting .sd-bubble", timeout=WAIT)
        first = page.eval_on_selector(".sd-log .sd-bot", "n => n.classList.contains('sd-greeting')")
        assert first, "the greeting is the first bot bubble"
        return page.inner_text(".sd-greeting .sd-bubble")
    finally:
        context.close()


def test_admin_edits_the_greeting_previews_saves_and_rolls_back(page, browser, live_server, live_settings):
    assert new_chat_greeting(browser, live_server).endswith(ORIGINAL)

    page.goto(live_server + "/admin")
    page.fill("#login-user", "root")
    page.fill("#login-pass", PASSWORD)
    page.keyboard.press("Enter")  # the form submits from the keyboard
    page.wait_for_selector("#prompt-list button[data-prompt='greeting']", timeout=WAIT)
    page.click("#prompt-list button[data-prompt='greeting']")
    page.wait_for_selector("#history tbody tr")
    text = page.input_value("#prompt-text")
    assert ORIGINAL in text

    # A broken edit is refused with a clear message.
    page.fill("#prompt-text", text.replace("{{ store_name }}", "{{ store }}"))
    page.click("#btn-save")
    page.wait_for_selector("#prompt-messages .bad")
    messages = page.inner_text("#prompt-messages")
    assert (
        "Not saved" in messages
        and "{{ store_name }} is not used" in messages
        and "unknown variable {{ store }}" in messages
    )
    shot(page, "refused")

    page.fill("#prompt-text", text.replace(ORIGINAL, NEW))
    page.click("#btn-preview")
    page.wait_for_selector("#preview-greeting", timeout=WAIT)
    assert page.inner_text("#preview-greeting").endswith(NEW)
    assert page.inner_text("#preview-reply")  # one real turn ran on the scripted model
    shot(page, "preview")

    page.click("#btn-save")
    page.wait_for_function("document.querySelector('#prompt-messages').textContent.includes('Saved as v2')")
    assert (live_settings.prompts_dir / "greeting.md").read_text().count(NEW) == 1
    assert new_chat_greeting(browser, live_server).endswith(NEW)

    rollback = page.locator("#history button[data-rollback='1']")
    rollback.focus()
    page.keyboard.press("Enter")  # first press arms the button ...
    assert "Confirm" in rollback.inner_text()
    page.keyboard.press("Enter")  # ... the second rolls back
    page.wait_for_function("document.querySelector('#prompt-messages').textContent.includes('Rolled back')")
    assert ORIGINAL in page.input_value("#prompt-text") and NEW not in page.input_value("#prompt-text")
    assert page.locator("#history tbody tr").count() == 3
    shot(page, "rolled-back")
    assert new_chat_greeting(browser, live_server).endswith(ORIGINAL)

    # The other tabs render real data without errors (page errors fail the test).
    page.click("#tab-analytics")
    page.wait_for_selector("#an-cards .card")
    page.click("#tab-kb")
    page.wait_for_selector("#kb-list tbody tr")
    page.click("#tab-abtests")
    page.wait_for_selector("#ab-prompt option", state="attached")
