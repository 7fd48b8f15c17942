"""The App the tests' daemons and APIs serve: the production App and the test graphs."""

from dataclasses import replace

from personas.app import app as production
from tests.graphs import chaos_workflow, ledger_workflow, sleeper_workflow

app = replace(
    production,
    workflows=[*production.workflows, ledger_workflow(), chaos_workflow(), sleeper_workflow()],
)
