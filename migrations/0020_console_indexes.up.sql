-- The console's pages with 100,000 runs (bench/console.py): the runs list, newest
-- first, read an index instead of sorting the table (72 ms -> under 10), and the
-- inbox reads the runs waiting at gates, longest waiting first, without a scan
-- of every run. `created_at` never changes; `updated_at` changes only with the
-- status, which indexes already hold: no update that was HOT stops being HOT.
CREATE INDEX runs_created ON runs (created_at DESC, run_id DESC);
CREATE INDEX runs_at_gates ON runs (updated_at, run_id) WHERE status LIKE 'pending\_%';
