-- The claim takes started work (resumes, takeovers) before new runs, so it
-- orders by (priority, status = 'queued', created_at). An index in that order
-- lets it stop after the runs it takes instead of sorting every queued run:
-- with 10,000 queued runs a claim took 13.6 ms, and 3.1 ms with this index.
DROP INDEX runs_claimable;
CREATE INDEX runs_claimable ON runs (priority DESC, (status = 'queued'), created_at)
    WHERE status NOT IN ('published', 'failed', 'cancelled');
