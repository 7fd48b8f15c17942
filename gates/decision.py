"""Moved: `ask` and `Decision` are the engine's (`from engine import ask`). Kept only
until personas/publisher.py imports them from there; then delete this module."""

from engine.waits import Decision, ask

__all__ = ["Decision", "ask"]
