"""The App the benchmarks' services serve: the tests' App and the reference graph."""

from dataclasses import replace

from bench.reference import reference_workflow
from tests.app import app as tested

app = replace(tested, workflows=[*tested.workflows, reference_workflow()])
