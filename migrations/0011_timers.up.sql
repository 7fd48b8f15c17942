-- Durable timers (a graph's sleep, a run's delayed start): status
-- 'waiting_timer', due at wake_at. The claim finds the due ones from this
-- index, so runs still sleeping cost it nothing however many there are
-- (bench: claim_ms_10k_timers). The literal, as with runs_queued: a partial
-- index serves only a constant.
CREATE INDEX runs_timers ON runs (wake_at) WHERE status = 'waiting_timer';
