"""The persona nodes and the production graph that wires them."""
