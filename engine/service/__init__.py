"""Process wiring over HTTP: the API, the webhook ingress, health, the console, and
the signals and servers every service process shares."""
