"""The scenario runner (`shopdesk eval chat`) and the dev suite in tests/scenarios/."""

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bot.scenarios import ScenarioError, ScenarioRunner, load_scenarios, make_runner
from shopdesk.settings import Settings

SUITE = Path(__file__).parent / "scenarios"
REQUIRED_TAGS = {
    "orders",
    "guest",
    "cancel",
    "returns",
    "exchanges",
    "delivery",
    "payment",
    "handoff",
    "offtopic",
    "injection",
    "chinese",
    "security",
}


def write(tmp_path: Path, text: str, name: str = "s.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def scripted_runner(store_settings: Settings, seeded_engine) -> Iterator[ScenarioRunner]:  # type: ignore[no-untyped-def]
    runner, cleanup = make_runner(
        store_settings, "scripted", template=Path(seeded_engine.url.database), concurrency=4
    )
    yield runner
    cleanup()


async def run(runner: ScenarioRunner, path: Path):  # type: ignore[no-untyped-def]
    return await runner.run(load_scenarios([path]))


# ---- loading ----------------------------------------------------------------------------------------


def test_bad_files_are_refused_with_the_file_and_scenario_named(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="s.yaml: scenario x: .*expct"):
        load_scenarios([write(tmp_path, "- id: x\n  turns:\n    - user: hi\n      expct: {}\n")])
    with pytest.raises(ScenarioError, match="not valid YAML"):
        load_scenarios([write(tmp_path, "- id: [unclosed\n")])
    with pytest.raises(ScenarioError, match="duplicate scenario id 'a'"):
        load_scenarios([write(tmp_path, "- {id: a, turns: [{user: hi}]}\n- {id: a, turns: [{user: yo}]}\n")])
    with pytest.raises(ScenarioError, match="no such file"):
        load_scenarios([tmp_path / "missing.yaml"])
    with pytest.raises(ScenarioError, match="turns"):
        load_scenarios([write(tmp_path, "- {id: empty, turns: []}\n")])


def test_the_dev_suite_is_large_and_covers_every_area() -> None:
    scenarios = load_scenarios([SUITE])
    assert len(scenarios) >= 60
    assert {tag for s in scenarios for tag in s.tags} >= REQUIRED_TAGS


# ---- running ----------------------------------------------------------------------------------------


async def test_a_failing_expectation_is_reported_with_its_turn(scripted_runner, tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
- id: wrong-status
  customer: james_li_5688
  tags: [orders]
  turns:
    - user: "where is #W4435622?"
      expect: {tools: [order_status], says_all: ["delivered"]}
    - user: "and #W2611340?"
      expect: {says_all: ["delivered"]}
- id: wrong-tool
  customer: james_li_5688
  turns:
    - user: "where is #W2611340?"
      expect: {tools: [list_orders]}
""",
    )
    report = await run(scripted_runner, path)
    by_id = {r.id: r for r in report.results}
    assert not by_id["wrong-status"].passed and by_id["wrong-status"].turn == 2
    assert "lacks 'delivered'" in by_id["wrong-status"].reason
    assert "expected tool list_orders" in by_id["wrong-tool"].reason
    summary = report.to_json()
    assert summary["passed"] == 0 and summary["pass_rate"] == 0.0
    assert {f["id"] for f in summary["failures"]} == {"wrong-status", "wrong-tool"}


async def test_end_state_is_checked_and_scenarios_are_isolated(scripted_runner, tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
- id: cancels
  customer: aarav_anderson_8794
  turns:
    - user: "cancel #W9300146, I don't need it"
      expect: {confirm: true}
    - user: "yes"
  end_state:
    - {order: "#W9300146", status: cancelled}
- id: still-pending-elsewhere
  customer: aarav_anderson_8794
  turns:
    - user: "where is #W9300146?"
      expect: {says_all: ["pending"]}
  end_state:
    - {order: "#W9300146", status: pending}
- id: wrong-end-state
  customer: aarav_anderson_8794
  turns:
    - user: "hello"
  end_state:
    - {order: "#W9300146", status: delivered}
""",
    )
    report = await run(scripted_runner, path)
    by_id = {r.id: r for r in report.results}
    assert by_id["cancels"].passed and by_id["still-pending-elsewhere"].passed
    assert not by_id["wrong-end-state"].passed
    assert by_id["wrong-end-state"].reason == "end_state: order #W9300146 is pending, expected delivered"


async def test_ungrounded_replies_are_reported_separately(scripted_runner, tmp_path: Path) -> None:
    # A model that invents facts: the guard replaces them, so the runner finds nothing ungrounded,
    # while the same text checked on its own is flagged.
    from bot import grounding

    invented = "Your order #W1111111 ships on 2026-12-01."
    assert grounding.check(invented, ["hi"]).unsupported == ["#W1111111", "2026-12-01"]
    path = write(
        tmp_path,
        f"""
- id: invents
  customer: james_li_5688
  turns:
    - user: "hi"
      scripted: [{{"action": "answer"}}, "{invented}", "{invented}"]
      expect: {{not_says: ["#W1111111"]}}
""",
    )
    report = await run(scripted_runner, path)
    assert report.results[0].passed and report.to_json()["ungrounded"] == []


async def test_unknown_customers_stop_the_run(scripted_runner, tmp_path: Path) -> None:
    path = write(tmp_path, "- {id: who, customer: nobody_1, turns: [{user: hi}]}\n")
    with pytest.raises(ScenarioError, match="unknown customer 'nobody_1'"):
        await run(scripted_runner, path)


async def test_the_dev_suite_passes_entirely_with_the_scripted_backend(scripted_runner) -> None:
    report = await scripted_runner.run(load_scenarios([SUITE]))
    summary = report.to_json()
    assert summary["failures"] == [] and summary["pass_rate"] == 1.0
    assert summary["ungrounded"] == []


@pytest.mark.slow
async def test_the_dev_suite_with_the_embedded_model(store_settings: Settings, seeded_engine) -> None:  # type: ignore[no-untyped-def]
    """SmolLM2-135M decides under the grammar and the router: >= 90 %, nothing ungrounded."""
    runner, cleanup = make_runner(store_settings, "local", template=Path(seeded_engine.url.database))
    try:
        report = await runner.run(load_scenarios([SUITE]))
    finally:
        cleanup()
    summary = report.to_json()
    assert summary["ungrounded"] == [], summary["ungrounded"]
    assert summary["pass_rate"] >= 0.9, summary["failures"]


# ---- the command --------------------------------------------------------------------------------


def test_eval_chat_command_prints_json_and_exits_zero_on_failures(
    tmp_path: Path, store_settings, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    from shopdesk import cli

    monkeypatch.setattr(cli, "get_settings", lambda: store_settings)
    path = write(
        tmp_path,
        """
- id: ok
  customer: james_li_5688
  tags: [orders]
  turns: [{user: "where is #W2611340?", expect: {says_all: ["processed"]}}]
- id: fails
  customer: james_li_5688
  tags: [orders, other]
  turns: [{user: "where is #W2611340?", expect: {says_all: ["delivered"]}}]
""",
    )
    result = CliRunner().invoke(cli.app, ["eval", "chat", str(path), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["total"] == 2 and summary["passed"] == 1 and summary["pass_rate"] == 0.5
    assert summary["by_tag"] == {"orders": {"total": 2, "passed": 1}, "other": {"total": 1, "passed": 0}}
    assert summary["failures"][0]["id"] == "fails" and summary["failures"][0]["turn"] == 1

    bad = write(tmp_path, "- {id: x}\n", "bad.yaml")
    result = CliRunner().invoke(cli.app, ["eval", "chat", str(bad)])
    assert result.exit_code == 2 and "bad.yaml" in result.output
