DROP INDEX runs_at_gates;
DROP INDEX runs_created;
