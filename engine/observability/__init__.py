"""What the engine tells its operators: JSON logs, OpenTelemetry metrics and traces,
and systemd's readiness and watchdog notifications."""
