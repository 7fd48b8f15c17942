"""Clients for kie.ai, Shotstack and upload-post, webhook verification, and the sandbox."""
