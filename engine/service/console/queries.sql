-- console_runs --
-- A page of runs, newest first, older than the cursor: optionally one status,
-- project and workflow, created before %(older_than)s ago, with %(brief)s (a
-- LIKE pattern) in the brief in any case, and only the stuck ones (the
-- condition of `stuck_runs`, which `runs list --stuck` uses: waiting or running)
SELECT run_id, project, status, workflow, created_at, updated_at, left(payload ->> 'brief', 500) AS brief,
       (EXTRACT(EPOCH FROM (NOW() - created_at)) / 60)::float8 AS minutes_running
FROM runs
WHERE (%(status)s::text IS NULL OR status = %(status)s::text)
  AND (%(project)s::text IS NULL OR project = %(project)s::text)
  AND (%(workflow)s::text IS NULL OR workflow = %(workflow)s::text)
  AND (%(older_than)s::interval IS NULL OR created_at < NOW() - %(older_than)s::interval)
  AND (%(brief)s::text IS NULL OR payload ->> 'brief' ILIKE %(brief)s::text)
  AND (NOT %(stuck)s::boolean
       OR status LIKE %(pending_like)s OR status IN (%(running)s, %(waiting_provider)s))
  AND (%(before_at)s::timestamptz IS NULL
       OR (created_at, run_id) < (%(before_at)s::timestamptz, %(before_id)s::text))
ORDER BY created_at DESC, run_id DESC
LIMIT %(limit)s;

-- console_status_counts --
-- How many runs of each status `console_runs` would find with any status: one
-- grouped count (unfiltered, a pass over runs_status_created or the table)
SELECT status, count(*)::int AS n
FROM runs
WHERE (%(project)s::text IS NULL OR project = %(project)s::text)
  AND (%(workflow)s::text IS NULL OR workflow = %(workflow)s::text)
  AND (%(older_than)s::interval IS NULL OR created_at < NOW() - %(older_than)s::interval)
  AND (%(brief)s::text IS NULL OR payload ->> 'brief' ILIKE %(brief)s::text)
  AND (NOT %(stuck)s::boolean
       OR status LIKE %(pending_like)s OR status IN (%(running)s, %(waiting_provider)s))
GROUP BY status;

-- console_inbox_count --
-- How many runs wait at one of the App's gates (%(pending)s: their statuses), for
-- the navigation on every page: an index-only scan of runs_status_created
SELECT count(*)::int AS n FROM runs WHERE status = ANY(%(pending)s::text[]);

-- console_selection --
-- The runs of a selection (ticked on the runs page) as they are now, newest first
SELECT run_id, project, status, workflow, created_at FROM runs
WHERE run_id = ANY(%(run_ids)s::text[])
ORDER BY created_at DESC, run_id DESC;

-- console_failed_jobs --
-- How many of a failed run's provider jobs failed and are not yet marked retried:
-- the jobs a retry submits anew (`retry_run` marks them)
SELECT count(*)::int AS n FROM artifacts
WHERE run_id = %(run_id)s AND status = 'failed' AND NOT metadata ? 'retried_at';


-- console_webhook_events --
-- The newest %(limit)s provider deliveries tied to a run, oldest first, with how
-- many there are in all. A payload comes along only when it is trusted and at
-- most %(max_bytes)s bytes: anyone may send a delivery naming a run's job, and
-- the page links the raw bytes instead.
SELECT * FROM (
    SELECT id, provider, signature_status, job_id, delivery_id, received_at, processed_at,
           signature_status IN ('valid', 'verified_by_fetch') AS trusted,
           octet_length(coalesce(raw_body, convert_to(payload::text, 'UTF8'))) AS size,
           CASE WHEN signature_status IN ('valid', 'verified_by_fetch')
                 AND octet_length(payload::text) <= %(max_bytes)s THEN payload END AS payload,
           count(*) OVER () AS total
    FROM webhook_events WHERE run_id = %(run_id)s
    ORDER BY id DESC
    LIMIT %(limit)s
) newest ORDER BY id;

-- console_approval --
-- One approval (the notice after sending it)
SELECT id, run_id, gate, decision, approver, created_at
FROM hitl_approvals WHERE id = %(id)s;

-- console_notifications --
-- The run's notifications, oldest first, one row per delivery (a channel each; a
-- notification not yet handed to the channels, or with none, has one row without)
SELECT a.id, a.status, a.metadata, a.created_at, d.channel, d.attempts, d.next_attempt_at,
       d.delivered_at, d.gave_up_at, d.last_error
FROM artifacts a LEFT JOIN notification_deliveries d ON d.artifact_id = a.id
WHERE a.run_id = %(run_id)s AND a.type = 'notification'
ORDER BY a.created_at, a.id, d.channel;

-- console_limit --
-- The limit a parked run waits at, as its page shows it: the numbers (a project's
-- are every project's, 'project:*'), the places taken (a provider's slots held, a
-- project's runs executing), the runs parked for one (from runs_limit_waits,
-- hence the literal)
WITH wanted AS (
    SELECT %(limit)s::text AS name, starts_with(%(limit)s, 'project:') AS is_project
)
SELECT w.name, l.concurrent, l.paused_until, l.paused_by,
    CASE WHEN w.is_project THEN (SELECT count(*)::int FROM runs
                                 WHERE status = 'running' AND 'project:' || project = w.name)
         ELSE orchestrator_slots_held(w.name) END AS held,
    (SELECT count(*) FROM runs
     WHERE status = 'waiting_limit' AND wake_at IS NULL AND waiting_for ->> 'limit' = w.name)
        AS parked
FROM wanted w
LEFT JOIN flow_limits l ON l.name = CASE WHEN w.is_project THEN 'project:*' ELSE w.name END;
