"""Who may do what over HTTP: named identities, console sessions, and the request guard."""

# Addresses and Host names that are this machine: with no token, all the API serves.
LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})
