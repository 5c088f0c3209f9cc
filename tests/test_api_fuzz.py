"""Every REST route against generated input (schemathesis, from the app's own OpenAPI schema): valid
and invalid bodies, paths and queries, as an admin, a shopper and nobody, on SQLite (the seeded demo
store) and PostgreSQL (an empty migrated schema, where text with NUL and numbers past INTEGER used to
fail in the query). Whatever comes in, the answer is never a 5xx and the server keeps serving.

The forecast routes run on the cheap models (`cheap_spec`): their input handling, not the model search.
"""

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from conftest import cheap_spec
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from sqlmodel import Session

from bot.llm.scripted import ScriptedBackend
from bot.prompts import PROMPTS_DIR
from commerce import demand
from retrieval.ingest import load_corpus
from retrieval.knowledge import POLICIES_DIR
from retrieval.search import Retriever
from server import create_app
from shopdesk.db import copy_sqlite_file, make_engine
from shopdesk.settings import Settings
from shopdesk.staff import create_staff

pytestmark = pytest.mark.slow
PASSWORD = "correct horse battery"
EXAMPLES = 25


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def api(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The app on one database, with an admin's and a shopper's token."""
    mp = pytest.MonkeyPatch()
    mp.setattr(demand, "store_spec", cheap_spec)
    if request.param == "sqlite":  # a copy: the fuzzing writes (sessions, votes, tests, pages)
        url = f"sqlite:///{tmp_path_factory.mktemp('fuzz-db') / 'store.db'}"
        copy_sqlite_file(request.getfixturevalue("_seeded")[2], Path(url.removeprefix("sqlite:///")))
        engine = make_engine(url)
        customer: str | None = "james_li_5688"
    else:
        engine = request.getfixturevalue("pg_engine")
        url = request.getfixturevalue("pg_url")
        customer = None  # an empty store: a guest
    with Session(engine) as db:
        create_staff(db, f"fuzz_{request.param}", "Fuzz", "admin", PASSWORD)
    # Private prompts, help pages and a small prebuilt index: the fuzzer saves prompts and uploads
    # pages, which must never land in the repository's prompts/ or knowledge/.
    root = tmp_path_factory.mktemp(f"fuzz_{request.param}")
    shutil.copytree(PROMPTS_DIR, root / "prompts")
    (root / "policies").mkdir()
    for name in ("refunds.md", "warranty.md"):
        shutil.copy(POLICIES_DIR / name, root / "policies" / name)
    docs, _ = load_corpus(root / "policies", source_type="policy", prefix="policies/")
    Retriever.from_documents(docs).save(root / "var" / "index")
    s = Settings(
        _env_file=None,  # type: ignore[call-arg]
        llm_backend="scripted",
        database_url=url,
        var_dir=root / "var",
        prompts_dir=root / "prompts",
        policies_dir=root / "policies",
    )
    app = create_app(s, backend=ScriptedBackend())
    with TestClient(app, raise_server_exceptions=False) as client:
        login = client.post(
            "/api/staff/login", json={"username": f"fuzz_{request.param}", "password": PASSWORD}
        )
        shopper = client.post("/api/session", json={"customer_id": customer}).json()["token"]
        assert client.get("/api/search", params={"q": "refund"}).status_code == 200  # loads the embedder
        assert app.state.settings.policies_dir == root / "policies" != POLICIES_DIR
        assert app.state.settings.prompts_dir == root / "prompts" != PROMPTS_DIR
        yield {
            "app": app,
            "client": client,
            "tokens": {"admin": login.json()["token"], "shopper": shopper, "nobody": None},
        }
    mp.undo()


def test_no_input_makes_a_server_error(api: dict[str, Any]) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", api["app"])
    checked = 0
    for result in schema.get_all_operations():
        operation = result.ok()

        @given(
            case=operation.as_strategy(generation_mode=GenerationMode.POSITIVE)
            | operation.as_strategy(generation_mode=GenerationMode.NEGATIVE)
        )
        @settings(
            max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck)
        )
        def no_server_error(case: Any) -> None:
            for who, token in api["tokens"].items():
                auth = {"Authorization": f"Bearer {token}"} if token else {}
                response = case.call(headers=auth, timeout=120)
                assert response.status_code < 500, (
                    f"as {who}: {case.method} {case.formatted_path} query={case.query} body={case.body!r}: "
                    f"{response.status_code} {response.text[:300]}"
                )

        no_server_error()
        checked += 1
    assert checked >= 40  # every route of the schema, not a handful
    assert api["client"].get("/healthz").status_code == 200
