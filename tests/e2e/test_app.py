"""The App boundary: what a product registers, how the engine finds it, and that the
engine itself names nothing of the product."""

import re
from pathlib import Path
from typing import Any

import pytest
from psycopg import AsyncConnection
from psycopg.rows import DictRow

from engine import App, Workflow
from engine.settings import Settings
from tests.conftest import ROOT, orchestrator
from tests.graphs import ledger_workflow
from tests.helpers import daemons, wait_for

Conn = AsyncConnection[DictRow]
ENGINE = ROOT / "engine"
# The product's packages, its workflow, personas, gates and providers: none is the engine's.
PRODUCT_NAMES = re.compile(
    r"\b(personas?\.|gates\.|providers\.|production|brendan|script_writer|publisher|"
    r"kie|shotstack|upload[-_]post|sandbox|pending_workflow|pending_publish|workflow_gate|"
    r"publish_gate)\b",
    re.IGNORECASE,
)


def test_the_engine_names_nothing_of_the_product() -> None:
    found = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in sorted(ENGINE.rglob("*"))
        if path.suffix in (".py", ".sql", ".html", ".js", ".css")
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if PRODUCT_NAMES.search(line)
    ]
    assert found == []


def test_an_app_needs_distinct_workflows_and_each_one_graph_or_build() -> None:
    ledger = ledger_workflow()
    with pytest.raises(ValueError, match="two workflows named 'ledger'"):
        App(workflows=[ledger, ledger])
    with pytest.raises(ValueError, match="at least one workflow"):
        App(workflows=[])
    with pytest.raises(ValueError, match="either graph or build"):
        Workflow(name="x", version="1")


async def test_a_built_workflow_owns_its_resources_until_the_app_closes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.owned import app

    marker = tmp_path / "resource"
    monkeypatch.setenv("ORCHESTRATOR_OWNED_RESOURCE_FILE", str(marker))
    config = app.configure(Settings(worker_id="w-1"))
    async with app.opened(config) as workflows:
        assert marker.read_text() == "open"
        output = await workflows["greeter"].compiled.ainvoke({})
        assert output == {"greeting": "hello from w-1"}
    assert marker.read_text() == "closed"


async def test_the_daemon_builds_the_apps_workflows_and_closes_them_on_stop(
    db_url: str, conn: Conn, tmp_path: Path
) -> None:
    owned = {"app": "tests.owned:app", "owned_resource_file": tmp_path / "resource"}
    created = orchestrator(db_url, "runs", "create", "--project", "demo", **owned)
    assert created.returncode == 0, created.stderr
    run_id = created.stdout.split()[-1]
    with daemons(db_url, tmp_path) as start:
        daemon = start("owner", **owned)
        rows: Any = await wait_for(
            conn,
            "SELECT status, result FROM runs WHERE run_id = %s",
            (run_id,),
            until=lambda r: r[0]["status"] == "published",
        )
        assert rows[0]["result"] == {"greeting": "hello from owner"}
        assert (tmp_path / "resource").read_text() == "open"
        assert daemon.terminate() == 0
    assert (tmp_path / "resource").read_text() == "closed"


@pytest.mark.parametrize(
    ("reference", "message"),
    [
        ("nowhere:app", "error: ORCHESTRATOR_APP: cannot load 'nowhere:app': No module named"),
        ("engine.settings:Settings", "is not an engine.App"),
        ("tests.owned", "is not 'module:attribute'"),
    ],
)
def test_a_bad_app_reference_is_one_line_and_exit_2(
    db_url: str, reference: str, message: str
) -> None:
    refused = orchestrator(db_url, "runs", "create", "--project", "demo", app=reference)
    assert refused.returncode == 2
    assert message in refused.stderr and len(refused.stderr.strip().splitlines()) == 1


def test_a_bad_value_of_an_apps_setting_is_one_line_and_exit_2(db_url: str) -> None:
    refused = orchestrator(db_url, "services", app="", shotstack_env="prod")
    assert refused.returncode == 2
    assert refused.stderr.startswith("error: setting ORCHESTRATOR_SHOTSTACK_ENV: String should")


def test_unset_the_installed_app_is_served(db_url: str) -> None:
    listed = orchestrator(db_url, "services", app="")
    assert listed.returncode == 0, listed.stderr
    assert re.search(r"sandbox\W+yes", listed.stdout)


def test_the_deprecated_workflows_setting_replaces_the_apps_workflows(db_url: str) -> None:
    legacy = {"workflows": '{"ledger": "tests.graphs:ledger_workflow"}', "app": ""}
    created = orchestrator(
        db_url, "runs", "create", "--project", "demo", "--workflow", "ledger", **legacy
    )
    assert created.returncode == 0, created.stderr
    refused = orchestrator(
        db_url, "runs", "create", "--project", "demo", "--workflow", "production", **legacy
    )
    assert refused.returncode == 2
    assert "--workflow: no workflow named 'production'" in refused.stderr


def test_a_workflow_that_cannot_be_built_stops_the_daemon_in_one_line(db_url: str) -> None:
    refused = orchestrator(db_url, "daemon", chat_model="nosuchprovider:some-model")
    assert refused.returncode == 2, refused.stderr
    assert refused.stderr.startswith("error: ORCHESTRATOR_CHAT_MODEL: 'nosuchprovider:some-model'")
    assert len(refused.stderr.strip().splitlines()) == 1
