"""docs/statuses.md describes every status a run can have: the engine's (`Status`), a
`pending_<gate>` for each gate the production App asks at, and every status the SQL
(the migrations' triggers and indexes, the engine's queries) names; and it describes
none that does not exist."""

import re

from engine.db.status import PENDING_PREFIX, Status, pending
from personas.app import app
from personas.publisher import RECONCILE_GATE
from tests.conftest import ROOT
from tests.unit.test_doc_links import anchors

DOC = ROOT / "docs" / "statuses.md"
SQL = [*sorted((ROOT / "migrations").glob("*.up.sql")), *sorted(ROOT.glob("engine/**/*.sql"))]
# A status compared with or listed in SQL: `status = 'x'`, `NEW.status <> 'x'`,
# `r.status IS DISTINCT FROM 'pending_' || gate`, `status NOT IN ('x', 'y')`
# (`\b` leaves out `signature_status` and `current_status`).
SQL_STATUS = re.compile(
    r"\b(?:\w+\.)?status\s*(?:=|<>|IS DISTINCT FROM|(?:NOT\s+)?IN)\s*\(?((?:\s*'\w+'\s*,?)+)",
    re.I,
)
GATE_SECTION = "pending_gate"  # the anchor of `## pending_<gate>`


def sql_statuses() -> set[str]:
    return {
        status
        for path in SQL
        for listed in SQL_STATUS.findall(path.read_text())
        for status in re.findall(r"'(\w+)'", listed)
    }


def gates() -> list[str]:
    """The gates the production App declares, and the one its publisher asks at
    without declaring it."""
    return [*app.gate_names(), RECONCILE_GATE]


def test_every_status_has_its_section() -> None:
    sections = anchors(DOC)
    missing = [status for status in [*Status, GATE_SECTION] if status not in sections]
    assert missing == [], f"docs/statuses.md has no section for {missing}"


def test_every_gate_of_the_production_app_has_its_row() -> None:
    rows = set(re.findall(r"^\| `(pending_\w+)` \|", DOC.read_text(), re.M))
    assert rows == {pending(gate) for gate in gates()}


def test_every_status_the_sql_names_is_described() -> None:
    named = sql_statuses()
    assert Status.WAITING_PROVIDER in named and PENDING_PREFIX in named  # the scan reads
    sections = anchors(DOC)
    undescribed = [
        status
        for status in named
        if (GATE_SECTION if status == PENDING_PREFIX else status) not in sections
    ]
    assert undescribed == [], f"the SQL names {undescribed}; docs/statuses.md does not"


def test_the_page_describes_no_status_that_does_not_exist() -> None:
    headings = re.findall(r"^## `([^`]+)`", DOC.read_text(), re.M)
    assert sorted(headings) == sorted([*Status, f"{PENDING_PREFIX}<gate>"])
