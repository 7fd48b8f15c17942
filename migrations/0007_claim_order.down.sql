DROP INDEX runs_queued;
