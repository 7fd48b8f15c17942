-- A run's trace continues across pauses and restarts: its first execution
-- stores its span here as a W3C traceparent, and every later execution's span
-- is a child of it. NULL until then, and for runs executed with telemetry off.
ALTER TABLE runs ADD COLUMN trace_context JSONB;
