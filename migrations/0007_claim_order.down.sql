DROP INDEX runs_provider_timers;
DROP INDEX runs_queued;
