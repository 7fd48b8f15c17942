"""HITL gates: where a run pauses for a person's decision."""
