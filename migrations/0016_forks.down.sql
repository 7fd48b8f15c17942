-- Forks become ordinary runs: their threads stay, only the record of their source goes.
ALTER TABLE runs DROP COLUMN forked_from_checkpoint, DROP COLUMN forked_from;
