-- A run's approvals by run: the console's run page and the cascade when
-- `prune --delete-runs` removes runs (the older index covers unconsumed ones only).
CREATE INDEX hitl_approvals_run ON hitl_approvals (run_id, created_at);
