-- Forks (docs/design.md, "History and forks"): a run made from a checkpoint of another
-- run, with a copy of that run's LangGraph thread up to the checkpoint. The fork
-- records where it came from. No foreign key, as for schedules: a fork keeps
-- naming its source after retention deleted it. Additive: two nullable columns,
-- which older code never reads (a fork is an ordinary queued run to it).
ALTER TABLE runs ADD COLUMN forked_from TEXT, ADD COLUMN forked_from_checkpoint TEXT;
