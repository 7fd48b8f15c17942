DROP INDEX runs_claimable;
CREATE INDEX runs_claimable ON runs (priority DESC, created_at)
    WHERE status NOT IN ('published', 'failed', 'cancelled');
