"""Benchmarks: one command, real PostgreSQL, the daemon as a real subprocess."""
