-- Runs left in 'waiting_timer' stay as they are: code older than 0011 claims
-- no such run, and migrating up again wakes them where they were.
DROP INDEX runs_timers;
