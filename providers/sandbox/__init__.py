"""A loopback imitation of kie.ai, Shotstack and upload-post for offline runs and tests."""

from providers.sandbox.server import SandboxConfig, create_app, serve

__all__ = ["SandboxConfig", "create_app", "serve"]
