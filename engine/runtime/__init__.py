"""The durable core: claims a run, executes its graph under a lease, and records every
step, pause and transition in PostgreSQL. Imports no web, CLI or template library
(an import-linter contract)."""
