"""Developer tools run from a source checkout (`python -m tools.NAME`); not shipped."""
