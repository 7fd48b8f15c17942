-- insert_run --
-- Create a queued run (the NOTIFY trigger wakes the daemons), or one that waits
-- for its timer until %(wake_at)s (a delayed start); nothing when the project
-- already has a run with this idempotency key (migration 0014)
INSERT INTO runs (run_id, project, status, payload, workflow, priority, wake_at, waiting_for,
                  idempotency_key, request_digest, webhook_url)
VALUES (%(run_id)s, %(project)s, %(status)s, %(payload)s, %(workflow)s, %(priority)s,
        %(wake_at)s, %(waiting_for)s, %(idempotency_key)s, %(request_digest)s, %(webhook_url)s)
ON CONFLICT (project, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
RETURNING *;

-- run_by_key --
-- The run a project's idempotency key created
SELECT * FROM runs WHERE project = %(project)s AND idempotency_key = %(idempotency_key)s;

-- claim_runs --
-- Take up to %(limit)s runs that have work: queued, abandoned by a dead worker,
-- approved at their gate, or woken by a provider event, their timer or their
-- limit; return what each resumes with (the approval, or the provider events,
-- now processed). Only runs of a workflow this worker has, at the graph version
-- they started on (a run records its version at its first claim). With a project
-- limit, a run that would have its project run more than that at once is not set
-- running (migration 0019): a resume waits where it is, a new run is parked for
-- room in its project.
WITH no_flush_wait AS (
    -- The claim commits without waiting for the WAL flush: were the server to
    -- crash before the flush, the runs would simply be claimed again, and the
    -- first fenced write of each run commits synchronously, flushing it first.
    SELECT set_config('synchronous_commit', 'off', true)
), mine AS (
    SELECT * FROM unnest(%(workflows)s::text[], %(versions)s::text[]) AS w(name, version)
), project_cap AS (
    -- How many runs of one project may execute at once, if that is limited.
    SELECT concurrent AS cap FROM flow_limits WHERE name = 'project:*' AND concurrent IS NOT NULL
), started AS (
    -- Runs that may have started work waiting, found from what gives them work
    -- rather than by walking every live run (migration 0007): an unconsumed
    -- approval, an expired lease, a due timer, or a provider's timer or event (all runs
    -- waiting for a provider: their number is that of provider jobs in flight,
    -- where unprocessed events, stale ones included, only ever grow). Whether
    -- they still have work is checked below, on the row the claim locks.
    SELECT run_id FROM hitl_approvals WHERE consumed_at IS NULL
    UNION ALL
    SELECT run_id FROM runs WHERE status = 'waiting_provider'
    UNION ALL
    -- Timers that are due, from their index (migration 0011): the runs still
    -- sleeping are never read.
    SELECT run_id FROM runs WHERE status = 'waiting_timer' AND wake_at <= NOW()
    UNION ALL
    -- Runs parked at a limit that are due (handed a slot or room, or their
    -- provider's pause over), from runs_limit_due (migration 0019): runs still
    -- parked, however many, are never read.
    SELECT run_id FROM runs WHERE status = 'waiting_limit' AND wake_at <= NOW()
    UNION ALL
    SELECT run_id FROM runs WHERE status = 'running' AND lease_expires_at < NOW()
), resumable AS (
    -- Work already started (resumes, takeovers of a dead worker's runs), which
    -- goes before new runs. Each kind locks up to the limit; the best are taken.
    SELECT r.run_id, r.priority, r.created_at
    FROM runs r
    JOIN mine ON mine.name = r.workflow
             AND (r.graph_version IS NULL OR r.graph_version = mine.version)
    WHERE r.run_id IN (SELECT run_id FROM started)
      AND (
            (r.status = %(running)s AND r.lease_expires_at < NOW())
         OR (r.status = %(waiting_timer)s AND r.wake_at <= NOW())
         OR (r.status = %(waiting_limit)s AND r.wake_at <= NOW())
         OR (r.status = %(waiting_provider)s AND (r.wake_at <= NOW() OR EXISTS (
                SELECT 1 FROM webhook_events e
                WHERE e.run_id = r.run_id AND e.processed_at IS NULL
                  AND (e.job_id = r.waiting_for ->> 'job_id'
                       OR (e.callback_key = r.waiting_for ->> 'adopting'
                           AND e.job_id IS NOT NULL))
                  AND e.signature_status IN ('valid', 'verified_by_fetch'))))
         OR (r.status LIKE %(pending_like)s AND EXISTS (
                SELECT 1 FROM hitl_approvals a
                WHERE a.run_id = r.run_id AND a.consumed_at IS NULL
                  AND %(pending_prefix)s || a.gate = r.status
                  AND a.pause_id IS NOT DISTINCT FROM (r.waiting_for ->> 'pause_id')::bigint))
      )
      -- No resume of a project at its limit: it would only fill the claim and be
      -- left. A takeover adds no run executing.
      AND (r.status = %(running)s OR NOT EXISTS (SELECT 1 FROM project_cap)
           OR (SELECT count(*) FROM runs x WHERE x.status = 'running' AND x.project = r.project)
              < (SELECT cap FROM project_cap))
    ORDER BY r.priority DESC, r.created_at
    LIMIT %(limit)s
    FOR UPDATE OF r SKIP LOCKED
), fresh AS (
    -- New runs, in the order of their index runs_queued (migration 0007),
    -- hence the literal: a partial index serves only a constant.
    SELECT r.run_id, r.priority, r.created_at
    FROM runs r
    JOIN mine ON mine.name = r.workflow
             AND (r.graph_version IS NULL OR r.graph_version = mine.version)
    WHERE r.status = 'queued'
    ORDER BY r.priority DESC, r.created_at
    LIMIT %(limit)s
    FOR UPDATE OF r SKIP LOCKED
), taken AS (
    SELECT run_id FROM (
        SELECT *, false AS is_new FROM resumable
        UNION ALL
        SELECT *, true AS is_new FROM fresh
    ) due
    ORDER BY priority DESC, is_new, created_at
    LIMIT %(limit)s
), claimed AS (
    UPDATE runs SET
        status = %(running)s,
        lease_owner = %(worker_id)s,
        lease_expires_at = NOW() + %(lease_ttl)s,
        lease_epoch = runs.lease_epoch + 1,
        -- A delayed start, or a run parked for room in its project, waits for
        -- nothing once claimed (it resumes with nothing).
        waiting_for = CASE WHEN runs.waiting_for ? 'not_before'
                             OR starts_with(runs.waiting_for ->> 'limit', 'project:') THEN NULL
                           ELSE runs.waiting_for END,
        graph_version = COALESCE(runs.graph_version,
                                 (SELECT version FROM mine WHERE name = runs.workflow)),
        updated_at = NOW()
    FROM taken
    WHERE runs.run_id = taken.run_id
    RETURNING runs.run_id, runs.project, runs.workflow, runs.payload, runs.lease_epoch,
        runs.waiting_for, runs.trace_context, runs.status
), events AS (
    -- Events about the job a run waits for are hints (the persona asks the
    -- provider for the job's state), so they are spent here: a worker dying now
    -- costs a wait for wake_at, no more. Events about a job the run is not (yet)
    -- waiting for stay, and wake it when it does. A run waiting to adopt the job
    -- of a cut-off submit (`adopting` its key, migration 0015) is woken by the
    -- callback carrying that key, and leaves it unspent: it then waits on the job.
    UPDATE webhook_events e SET processed_at = NOW()
    FROM claimed
    WHERE e.run_id = claimed.run_id AND e.processed_at IS NULL
      AND e.job_id = claimed.waiting_for ->> 'job_id'
      AND e.signature_status IN ('valid', 'verified_by_fetch')
    RETURNING e.run_id, e.id, e.provider, e.job_id, e.payload
)
SELECT c.run_id, c.project, c.workflow, c.payload, c.lease_epoch, c.trace_context,
    CASE
        -- Only the approval that answers the very pause the run waits at
        -- (migration 0008): one answering an earlier pause is voided, never handed out.
        WHEN c.waiting_for ? 'gate' THEN (
            SELECT row_to_json(a) FROM hitl_approvals a
            WHERE a.run_id = c.run_id AND a.consumed_at IS NULL
              AND a.gate = c.waiting_for ->> 'gate'
              AND a.pause_id IS NOT DISTINCT FROM (c.waiting_for ->> 'pause_id')::bigint
            ORDER BY a.id LIMIT 1)
        WHEN c.waiting_for ? 'provider' THEN json_build_object('events', COALESCE((
            SELECT json_agg(json_build_object(
                'id', ev.id, 'provider', ev.provider, 'job_id', ev.job_id, 'payload', ev.payload)
                ORDER BY ev.id)
            FROM events ev WHERE ev.run_id = c.run_id), '[]'::json))
        -- A sleep is resumed with the time it woke; a delayed start
        -- (`not_before`) has nothing to resume and begins from its payload.
        WHEN c.waiting_for ? 'timer' THEN json_build_object(
            'timer', c.waiting_for ->> 'timer', 'woke_at', NOW())
        -- A step parked at a provider's limit: it asks again (and holds its slot now).
        WHEN c.waiting_for ? 'limit' THEN json_build_object(
            'limit', c.waiting_for ->> 'limit', 'woke_at', NOW())
    END AS resume,
    -- The run's latest checkpoint, in the row shape of LangGraph's own read
    -- (`AsyncPostgresSaver.SELECT_SQL`), so that the first read of the
    -- execution costs no round trip: the worker holds the run from now on, so
    -- nothing else can write a newer one.
    ck.thread_id, ck.checkpoint, ck.checkpoint_ns, ck.checkpoint_id, ck.parent_checkpoint_id,
    ck.metadata, ck.channel_values, ck.pending_writes
FROM claimed c
CROSS JOIN no_flush_wait
LEFT JOIN LATERAL (
    SELECT thread_id, checkpoint, checkpoint_ns, checkpoint_id, parent_checkpoint_id, metadata,
        (SELECT array_agg(array[bl.channel::bytea, bl.type::bytea, bl.blob])
         FROM jsonb_each_text(checkpoint -> 'channel_versions')
         JOIN checkpoint_blobs bl
           ON bl.thread_id = checkpoints.thread_id
          AND bl.checkpoint_ns = checkpoints.checkpoint_ns
          AND bl.channel = jsonb_each_text.key
          AND bl.version = jsonb_each_text.value) AS channel_values,
        (SELECT array_agg(array[cw.task_id::text::bytea, cw.channel::bytea, cw.type::bytea,
                                cw.blob, convert_to(cw.task_path, 'UTF8'), cw.idx::text::bytea])
         FROM checkpoint_writes cw
         WHERE cw.thread_id = checkpoints.thread_id
           AND cw.checkpoint_ns = checkpoints.checkpoint_ns
           AND cw.checkpoint_id = checkpoints.checkpoint_id) AS pending_writes
    FROM checkpoints
    WHERE checkpoints.thread_id = c.run_id AND checkpoints.checkpoint_ns = ''
    ORDER BY checkpoints.checkpoint_id DESC
    LIMIT 1
) ck ON true
-- A new run of a project at its limit is parked instead (migration 0019): no claim.
WHERE c.status = %(running)s;

-- take_slot --
-- A slot of limit %(limit)s for job %(key)s of the run, if one is free (migration
-- 0019): whether the run holds one now. In a transaction fenced by its lease.
SELECT orchestrator_take_slot(%(limit)s, %(run_id)s, %(key)s) AS taken;

-- release_slot --
-- Give a job's slot back (fenced, as take_slot); the trigger hands it on to the
-- next run parked for it
DELETE FROM flow_slots WHERE limit_name = %(limit)s AND run_id = %(run_id)s AND key = %(key)s;

-- take_request --
-- Whether a request to limit %(limit)s's provider may go now (0, counted), else
-- the seconds to wait
SELECT orchestrator_take_request(%(limit)s) AS wait;

-- pause_requests --
-- A 429 to come back in %(seconds)s: no daemon sends that provider a request
-- before then (a longer pause already set stays, with who was told)
INSERT INTO flow_limits (name, paused_until, paused_by)
VALUES (%(limit)s, clock_timestamp() + make_interval(secs => %(seconds)s), %(worker_id)s)
ON CONFLICT (name) DO UPDATE SET
    paused_until = greatest(flow_limits.paused_until, EXCLUDED.paused_until),
    paused_by = CASE WHEN flow_limits.paused_until >= EXCLUDED.paused_until
                     THEN flow_limits.paused_by ELSE EXCLUDED.paused_by END,
    updated_at = NOW();

-- set_limits --
-- A daemon's limits, as its App and settings give them: the rows it names set as
-- it names them, every other row's limits lifted (its pause, if any, stays)
WITH wanted AS (
    SELECT * FROM unnest(%(names)s::text[], %(concurrent)s::int[], %(requests)s::int[],
                         %(per)s::interval[]) AS w(name, concurrent, requests, per)
), lifted AS (
    UPDATE flow_limits SET concurrent = NULL, requests = NULL, per = NULL, updated_at = NOW()
    WHERE name NOT IN (SELECT name FROM wanted)
      AND (concurrent IS NOT NULL OR requests IS NOT NULL)
)
INSERT INTO flow_limits (name, concurrent, requests, per)
SELECT name, concurrent, requests, per FROM wanted
ON CONFLICT (name) DO UPDATE SET
    concurrent = EXCLUDED.concurrent, requests = EXCLUDED.requests, per = EXCLUDED.per,
    updated_at = NOW()
WHERE (flow_limits.concurrent, flow_limits.requests, flow_limits.per)
      IS DISTINCT FROM (EXCLUDED.concurrent, EXCLUDED.requests, EXCLUDED.per);

-- grant_parked --
-- Hand every provider's free slots, and every project's room, to the runs parked
-- for them (after set_limits: a limit raised or lifted)
SELECT orchestrator_grant_slots(name) FROM flow_limits
WHERE starts_with(name, 'provider:')
UNION ALL
SELECT orchestrator_grant_room(project) FROM (
    SELECT DISTINCT substr(waiting_for ->> 'limit', length('project:') + 1) AS project
    FROM runs
    WHERE status = 'waiting_limit' AND wake_at IS NULL
      AND starts_with(waiting_for ->> 'limit', 'project:')
) parked;

-- fence --
-- Renew the lease, or fail the transaction if the worker lost the run
SELECT orchestrator_fence(%(run_id)s, %(epoch)s, %(lease_ttl)s);

-- put --
-- Tasks' writes and checkpoints (oldest first) with the newest one's readable
-- mirror, fenced by the lease (migration 0006): the rows' fields as one JSON
-- document, their blobs as arrays. Parameters go in binary (%(…)b): a
-- text-format bytea array costs an escape per byte on the way out and a parse
-- on the way in.
SELECT orchestrator_put(
    %(run_id)b, %(epoch)b, %(lease_ttl)b, %(consume)b, %(approval_id)b, %(thread_id)b,
    %(rows)b, %(write_blobs)b, %(blob_values)b, %(state)b::jsonb, %(step)b, %(flush)b);

-- put_nested --
-- `put` with a subgraph's checkpoints (a namespace other than ''): they go in
-- beside the call, which gets the run's own only, so that a subgraph's state
-- never replaces the run's in the mirror. One statement still: a lost lease
-- fails the call, and with it these inserts.
WITH nested_blobs AS (
    INSERT INTO checkpoint_blobs (thread_id, checkpoint_ns, channel, version, type, blob)
    SELECT %(thread_id)b, r ->> 0, r ->> 1, r ->> 2, r ->> 3, (%(nested_blob_values)b::bytea[])[n]
    FROM jsonb_array_elements(%(nested)b::jsonb -> 'blobs') WITH ORDINALITY AS e(r, n)
    ON CONFLICT (thread_id, checkpoint_ns, channel, version) DO NOTHING
), nested_checkpoints AS (
    INSERT INTO checkpoints (thread_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id,
                             checkpoint, metadata)
    SELECT %(thread_id)b, r ->> 0, r ->> 1, r ->> 2, r -> 3, r -> 4
    FROM jsonb_array_elements(%(nested)b::jsonb -> 'checkpoints') AS e(r)
    ON CONFLICT (thread_id, checkpoint_ns, checkpoint_id) DO UPDATE SET
        checkpoint = EXCLUDED.checkpoint, metadata = EXCLUDED.metadata
)
SELECT orchestrator_put(
    %(run_id)b, %(epoch)b, %(lease_ttl)b, %(consume)b, %(approval_id)b, %(thread_id)b,
    %(rows)b, %(write_blobs)b, %(blob_values)b, %(state)b::jsonb, %(step)b, %(flush)b);

-- delete_checkpoints --
-- A run's checkpoints (the saver's adelete_thread, inside its fenced transaction)
DELETE FROM checkpoints WHERE thread_id = %(run_id)s;

-- delete_checkpoint_blobs --
-- A run's channel values (as delete_checkpoints)
DELETE FROM checkpoint_blobs WHERE thread_id = %(run_id)s;

-- delete_checkpoint_writes --
-- A run's pending writes (as delete_checkpoints)
DELETE FROM checkpoint_writes WHERE thread_id = %(run_id)s;

-- pause_run --
-- The graph stopped at an interrupt: record what it waits for and let go of it.
-- The pause is numbered by the epoch that paused (`pause_id`, migration 0008):
-- an approval answers that pause and no other.
-- A provider's webhook that beat the job id into the database is adopted now.
-- (Here and in finish_run and fail_run: the trace the run's first execution began.)
WITH adopted AS (
    UPDATE webhook_events SET run_id = %(run_id)s
    WHERE run_id IS NULL AND processed_at IS NULL
      AND provider = %(waiting_for)s ->> 'provider' AND job_id = %(waiting_for)s ->> 'job_id'
)
UPDATE runs SET
    status = %(status)s, wake_at = %(wake_at)s,
    waiting_for = %(waiting_for)s::jsonb || jsonb_build_object('pause_id', runs.lease_epoch),
    lease_owner = NULL, lease_expires_at = NULL, updated_at = NOW(),
    trace_context = COALESCE(runs.trace_context, %(trace_context)s)
WHERE run_id = %(run_id)s AND lease_epoch = %(epoch)s AND status = %(running)s;

-- finish_run --
-- The graph reached its end
UPDATE runs SET
    status = %(status)s, result = %(result)s, error = NULL,
    lease_owner = NULL, lease_expires_at = NULL, waiting_for = NULL, updated_at = NOW(),
    trace_context = COALESCE(runs.trace_context, %(trace_context)s)
WHERE run_id = %(run_id)s AND lease_epoch = %(epoch)s AND status = %(running)s;

-- fail_run --
-- Retries are exhausted
UPDATE runs SET
    status = %(status)s, error = %(error)s, attempt = %(attempt)s,
    lease_owner = NULL, lease_expires_at = NULL, updated_at = NOW(),
    trace_context = COALESCE(runs.trace_context, %(trace_context)s)
WHERE run_id = %(run_id)s AND lease_epoch = %(epoch)s AND status = %(running)s;

-- requeue_run --
-- Give a run back unfinished (shutdown): any worker may claim it at once
UPDATE runs SET
    status = %(queued)s, lease_owner = NULL, lease_expires_at = NULL, updated_at = NOW()
WHERE run_id = %(run_id)s AND lease_epoch = %(epoch)s AND status = %(running)s;

-- heartbeat --
-- Extend the leases of the runs this worker still holds, and say it is alive: its
-- workers row (migration 0021) with what it runs and how many runs it holds, live
-- for %(live_for)s more. Returns the runs kept. The first beat (%(starting)s) begins
-- the row anew and removes the rows of workers gone for longer than %(gone_kept)s.
WITH seen AS (
    INSERT INTO workers AS w (worker_id, host, pid, version, workflows, concurrency,
                              runs_held, live_until)
    VALUES (%(worker_id)s, %(host)s, %(pid)s, %(version)s, %(workflows)s, %(concurrency)s,
            cardinality(%(run_ids)s::text[]), NOW() + %(live_for)s)
    ON CONFLICT (worker_id) DO UPDATE SET
        host = EXCLUDED.host, pid = EXCLUDED.pid, version = EXCLUDED.version,
        workflows = EXCLUDED.workflows, concurrency = EXCLUDED.concurrency,
        runs_held = EXCLUDED.runs_held, last_seen = NOW(), live_until = EXCLUDED.live_until,
        started_at = CASE WHEN %(starting)s THEN NOW() ELSE w.started_at END
), forgotten AS (
    DELETE FROM workers
    WHERE %(starting)s AND live_until < NOW() - %(gone_kept)s AND worker_id <> %(worker_id)s
)
UPDATE runs SET lease_expires_at = NOW() + %(lease_ttl)s
FROM unnest(%(run_ids)s::text[], %(epochs)s::bigint[]) AS held(run_id, epoch)
WHERE runs.run_id = held.run_id AND runs.lease_epoch = held.epoch
  AND runs.status = %(running)s
RETURNING runs.run_id;

-- forget_worker --
-- A worker stopping cleanly takes its row away (migration 0021)
DELETE FROM workers WHERE worker_id = %(worker_id)s AND pid = %(pid)s;

-- list_workers --
-- Every worker's row, the live ones first, each newest seen first, with the
-- database's time (what "seen 3 s ago" is counted from)
SELECT worker_id, host, pid, version, workflows, concurrency, runs_held, started_at,
       last_seen, live_until, live_until > NOW() AS live, NOW() AS now
FROM workers
ORDER BY live_until > NOW() DESC, last_seen DESC, worker_id;

-- unrunnable_kinds --
-- Live runs that no live worker can take (migration 0021), by workflow and graph
-- version (none: not begun), with how many there are of each
SELECT workflow, graph_version, runs FROM (
    SELECT workflow, graph_version, count(*) AS runs FROM runs
    WHERE status NOT IN ('published', 'failed', 'cancelled')
    GROUP BY workflow, graph_version
) kinds
WHERE NOT orchestrator_worker_runs(workflow, graph_version)
ORDER BY workflow, graph_version NULLS FIRST;

-- unrunnable_runs --
-- The oldest %(limit)s live runs that no live worker can take
SELECT run_id, project, status, workflow, graph_version, created_at FROM runs
WHERE status NOT IN ('published', 'failed', 'cancelled')
  AND NOT orchestrator_worker_runs(workflow, graph_version)
ORDER BY created_at, run_id
LIMIT %(limit)s;

-- unrunnable_among --
-- Which of runs %(run_ids)s no live worker can take
SELECT run_id, workflow, graph_version FROM runs
WHERE run_id = ANY(%(run_ids)s::text[]) AND status NOT IN ('published', 'failed', 'cancelled')
  AND NOT orchestrator_worker_runs(workflow, graph_version);

-- record_artifact --
-- Store a persona's output once per idempotency key
INSERT INTO artifacts (run_id, type, provider, persona, url, metadata, idempotency_key, status,
                       provider_job_id)
VALUES (%(run_id)s, %(type)s, %(provider)s, %(persona)s, %(url)s, %(metadata)s,
        %(idempotency_key)s, %(status)s, %(provider_job_id)s)
ON CONFLICT (idempotency_key) DO UPDATE SET
    url = EXCLUDED.url, metadata = EXCLUDED.metadata, status = EXCLUDED.status,
    provider_job_id = COALESCE(EXCLUDED.provider_job_id, artifacts.provider_job_id)
RETURNING *;

-- get_artifact --
-- An artifact by its idempotency key (what a re-executed step already did)
SELECT * FROM artifacts WHERE idempotency_key = %(idempotency_key)s;

-- get_run --
-- One run by id
SELECT * FROM runs WHERE run_id = %(run_id)s;

-- get_checkpoint --
-- The readable mirror of a run's latest state
SELECT state, updated_at, checkpoint_id, step
FROM orchestration_checkpoints WHERE run_id = %(run_id)s;

-- list_artifacts --
-- A run's artifacts in the order they were made
SELECT id, type, provider, persona, url, metadata, status, idempotency_key, provider_job_id,
    created_at
FROM artifacts WHERE run_id = %(run_id)s ORDER BY created_at ASC, id ASC;

-- list_runs --
-- Newest first, optionally filtered by status and project
SELECT * FROM runs
WHERE (%(status)s::text IS NULL OR status = %(status)s)
  AND (%(project)s::text IS NULL OR project = %(project)s)
ORDER BY created_at DESC
LIMIT %(limit)s;

-- insert_approval --
-- Approve or reject a gate: the trigger refuses it unless the run waits there,
-- at pause %(pause_id)s when that is given, with no other approval waiting
INSERT INTO hitl_approvals (run_id, gate, approver, approver_ip, decision, comment, payload,
                            pause_id)
VALUES (%(run_id)s, %(gate)s, %(approver)s, %(approver_ip)s, %(decision)s, %(comment)s,
        %(payload)s, %(pause_id)s)
RETURNING *;

-- run_approvals --
-- Who decided what at run %(run_id)s's gates: its newest %(limit)s approvals and
-- rejections (a person's, or the system's at a deadline), newest first
SELECT id, run_id, gate, decision, approver, approver_ip, comment, payload, pause_id,
       created_at, consumed_at, voided_at, void_reason
FROM hitl_approvals WHERE run_id = %(run_id)s
ORDER BY created_at DESC, id DESC
LIMIT %(limit)s;

-- matching_runs --
-- The runs a bulk operation would change, oldest first: by status, project and
-- age (each NULL: any; %(live)s: only runs that have not ended), at most %(limit)s
SELECT run_id FROM runs
WHERE (%(status)s::text IS NULL OR status = %(status)s)
  AND (NOT %(live)s OR status NOT IN ('published', 'failed', 'cancelled'))
  AND (%(project)s::text IS NULL OR project = %(project)s)
  AND (%(older_than)s::interval IS NULL OR created_at < NOW() - %(older_than)s::interval)
ORDER BY created_at, run_id
LIMIT %(limit)s;

-- cancel_run --
-- Stop live runs; the epoch bump fences out a worker still executing one
UPDATE runs SET
    status = %(cancelled)s, lease_epoch = lease_epoch + 1,
    lease_owner = NULL, lease_expires_at = NULL, wake_at = NULL, updated_at = NOW()
WHERE run_id = ANY(%(run_ids)s::text[]) AND status NOT IN ('published', 'failed', 'cancelled')
RETURNING *;

-- retry_run --
-- Put failed runs back in the queue; each resumes from its last checkpoint. Their
-- failed artifacts (a provider job that failed, or that the provider lost) are
-- stamped `retried_at`: the step that made one submits a new job rather than
-- asking about the dead one again. Returns each run and how many of its were stamped.
WITH retried AS (
    UPDATE runs SET
        status = %(queued)s, error = NULL, attempt = 0, updated_at = NOW()
    WHERE run_id = ANY(%(run_ids)s::text[]) AND status = %(failed)s
    RETURNING *
), reopened AS (
    UPDATE artifacts SET metadata = metadata || jsonb_build_object('retried_at', NOW())
    WHERE run_id IN (SELECT run_id FROM retried) AND status = 'failed'
      AND NOT metadata ? 'retried_at'
    RETURNING run_id
)
SELECT retried.*,
    (SELECT count(*) FROM reopened WHERE reopened.run_id = retried.run_id) AS reopened_jobs
FROM retried;

-- history_page --
-- A page of run %(run_id)s's checkpoints in its own namespace, newest first: the
-- newest %(limit)s older than checkpoint %(before)s (none: from the newest), each
-- with the tasks whose writes made it (stored on its parent: a few, by path), and
-- how many checkpoints older than %(before)s the run has in all. Checkpoint ids
-- are uuid6: they sort by time.
SELECT c.checkpoint_id, c.parent_checkpoint_id,
    CASE WHEN c.metadata ->> 'step' ~ '^-?[0-9]{1,9}$' THEN (c.metadata ->> 'step')::int END AS step,
    c.metadata ->> 'source' AS source, c.checkpoint ->> 'ts' AS ts,
    c.checkpoint -> 'updated_channels' AS updated,
    ARRAY(SELECT DISTINCT w.task_path FROM checkpoint_writes w
          WHERE w.thread_id = c.thread_id AND w.checkpoint_ns = ''
            AND w.checkpoint_id = c.parent_checkpoint_id AND w.task_path <> ''
          ORDER BY w.task_path LIMIT 20) AS tasks,
    (SELECT count(*) FROM checkpoints o
     WHERE o.thread_id = %(run_id)s AND o.checkpoint_ns = ''
       AND (%(before)s::text IS NULL OR o.checkpoint_id < %(before)s::text)) AS total
FROM checkpoints c
WHERE c.thread_id = %(run_id)s AND c.checkpoint_ns = ''
  AND (%(before)s::text IS NULL OR c.checkpoint_id < %(before)s::text)
ORDER BY c.checkpoint_id DESC
LIMIT %(limit)s;

-- history_writes --
-- What tasks wrote at checkpoints %(checkpoint_ids)s of run %(run_id)s: their
-- writes to the state and their interrupts (not LangGraph's other channels), the
-- first %(shown)s of each checkpoint with how many writes to the state it has; a
-- value only when it is at most %(max_bytes)s bytes
SELECT checkpoint_id, task_path, channel, type, size, total,
    CASE WHEN size <= %(max_bytes)s THEN blob END AS blob
FROM (
    SELECT checkpoint_id, task_path, channel, type, blob, octet_length(blob) AS size,
        row_number() OVER (PARTITION BY checkpoint_id ORDER BY task_path, task_id, idx) AS n,
        count(*) FILTER (WHERE channel <> %(interrupt)s) OVER (PARTITION BY checkpoint_id)
            AS total
    FROM checkpoint_writes
    WHERE thread_id = %(run_id)s AND checkpoint_ns = ''
      AND checkpoint_id = ANY(%(checkpoint_ids)s::text[])
      AND (channel = %(interrupt)s
           OR (left(channel, 7) <> 'branch:' AND left(channel, 2) <> '__'))
) numbered
WHERE n <= %(shown)s
ORDER BY checkpoint_id, n;

-- finished_tasks --
-- The tasks of run %(run_id)s that have finished at least once, by path: those whose
-- writes made one of its checkpoints (stored on that checkpoint's parent, as
-- history_page reads them), in its own namespace
SELECT DISTINCT w.task_path FROM checkpoints c
JOIN checkpoint_writes w ON w.thread_id = c.thread_id AND w.checkpoint_ns = ''
                        AND w.checkpoint_id = c.parent_checkpoint_id
WHERE c.thread_id = %(run_id)s AND c.checkpoint_ns = '' AND w.task_path <> '';

-- fork_source --
-- The run a fork is made from, locked against a claim (which skips locked runs)
-- and retention until the fork's transaction ends: its checkpoints stay as read
SELECT run_id, status FROM runs WHERE run_id = %(run_id)s FOR SHARE;

-- fork_point --
-- The checkpoint of run %(run_id)s a fork starts from: %(checkpoint_id)s, or its latest
SELECT checkpoint_id, CASE WHEN metadata ->> 'step' ~ '^-?[0-9]{1,9}$' THEN (metadata ->> 'step')::int END AS step
FROM checkpoints
WHERE thread_id = %(run_id)s AND checkpoint_ns = ''
  AND (%(checkpoint_id)s::text IS NULL OR checkpoint_id = %(checkpoint_id)s::text)
ORDER BY checkpoint_id DESC
LIMIT 1;

-- insert_fork --
-- A queued run continuing from checkpoint %(checkpoint_id)s of run %(source)s: its
-- project, workflow, graph version (the checkpoints are that graph's), payload and priority
INSERT INTO runs (run_id, project, status, payload, workflow, graph_version, priority,
                  forked_from, forked_from_checkpoint)
SELECT %(run_id)s, project, %(queued)s, payload, workflow, graph_version, priority,
    run_id, %(checkpoint_id)s
FROM runs WHERE run_id = %(source)s
RETURNING *;

-- copy_thread --
-- Copy run %(source)s's checkpoint %(checkpoint_id)s and its ancestors (its own
-- namespace) to thread %(fork)s, with the blobs they name and their pending
-- writes; of the fork point's own writes only those of no task other than a
-- resume, so that the step after it runs again (docs/design.md, "History and forks").
-- UNION, not UNION ALL: a cycle of parents (only plain SQL could make one) ends.
WITH RECURSIVE chain AS (
    SELECT checkpoint_id, parent_checkpoint_id FROM checkpoints
    WHERE thread_id = %(source)s AND checkpoint_ns = '' AND checkpoint_id = %(checkpoint_id)s
    UNION
    SELECT c.checkpoint_id, c.parent_checkpoint_id
    FROM checkpoints c JOIN chain ON c.checkpoint_id = chain.parent_checkpoint_id
    WHERE c.thread_id = %(source)s AND c.checkpoint_ns = ''
), copied AS (
    INSERT INTO checkpoints (thread_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id,
                             checkpoint, metadata)
    SELECT %(fork)s, '', c.checkpoint_id, c.parent_checkpoint_id, c.checkpoint, c.metadata
    FROM checkpoints c
    WHERE c.thread_id = %(source)s AND c.checkpoint_ns = ''
      AND c.checkpoint_id IN (SELECT checkpoint_id FROM chain)
    RETURNING checkpoint
), blobs AS (
    INSERT INTO checkpoint_blobs (thread_id, checkpoint_ns, channel, version, type, blob)
    SELECT %(fork)s, '', b.channel, b.version, b.type, b.blob
    FROM checkpoint_blobs b
    WHERE b.thread_id = %(source)s AND b.checkpoint_ns = ''
      AND (b.channel, b.version) IN (
          SELECT v.key, v.value FROM copied, jsonb_each_text(copied.checkpoint -> 'channel_versions') v)
), writes AS (
    INSERT INTO checkpoint_writes (thread_id, checkpoint_ns, checkpoint_id, task_id, task_path,
                                   idx, channel, type, blob)
    SELECT %(fork)s, '', w.checkpoint_id, w.task_id, w.task_path, w.idx, w.channel, w.type, w.blob
    FROM checkpoint_writes w
    WHERE w.thread_id = %(source)s AND w.checkpoint_ns = ''
      AND w.checkpoint_id IN (SELECT checkpoint_id FROM chain)
      AND (w.checkpoint_id <> %(checkpoint_id)s
           OR (w.task_id = %(null_task)s AND w.channel <> %(resume)s))
)
SELECT count(*) AS checkpoints FROM copied;

-- insert_fork_mirror --
-- The fork's readable state: that of the checkpoint it starts from
INSERT INTO orchestration_checkpoints (run_id, state, updated_at, checkpoint_id, step)
VALUES (%(run_id)s, %(state)s::jsonb, NOW(), %(checkpoint_id)s, %(step)s);

-- insert_webhook_event --
-- Store a provider's delivery once per delivery id, and a validly signed body
-- once whatever delivery id it comes with (migration 0010), tied to the run
-- whose artifact names the job, or whose artifact's idempotency key the callback
-- URL carried (migration 0015); returns nothing for a replayed delivery
INSERT INTO webhook_events (provider, signature_status, delivery_id, headers, payload, raw_body,
                            job_id, body_sha256, callback_key, run_id)
VALUES (%(provider)s, %(signature_status)s, %(delivery_id)s, %(headers)s, %(payload)s,
        %(raw_body)s, %(job_id)s, %(body_sha256)s, %(callback_key)s,
        COALESCE(
            (SELECT run_id FROM artifacts
             WHERE provider = %(provider)s AND provider_job_id = %(job_id)s LIMIT 1),
            (SELECT run_id FROM artifacts
             WHERE provider = %(provider)s AND idempotency_key = %(callback_key)s)))
ON CONFLICT DO NOTHING
RETURNING id, run_id, signature_status;

-- webhook_job_known --
-- Whether a live run has an artifact naming this provider job, or one still
-- submitting under the idempotency key the callback URL carried: only then is a
-- callback worth verifying with a request that carries our key
SELECT EXISTS (
    SELECT 1 FROM artifacts a JOIN runs r ON r.run_id = a.run_id
    WHERE a.provider = %(provider)s
      AND (a.provider_job_id = %(job_id)s
           OR (a.idempotency_key = %(callback_key)s AND a.provider_job_id IS NULL))
      AND r.status NOT IN ('published', 'failed', 'cancelled')
) AS known;

-- callback_job --
-- The job a verified callback about this run's idempotency key names: the
-- provider accepted a submit whose answer we never recorded (migration 0015)
SELECT job_id FROM webhook_events
WHERE provider = %(provider)s AND callback_key = %(callback_key)s AND run_id = %(run_id)s
  AND job_id IS NOT NULL AND signature_status IN ('valid', 'verified_by_fetch')
ORDER BY id LIMIT 1;

-- webhook_event_raw --
-- A slice of a delivery's bytes as stored (the raw body, else the payload's
-- text), and their whole length, for one event of one run
SELECT substring(body FROM %(offset)s + 1 FOR %(length)s) AS chunk, octet_length(body) AS size
FROM (SELECT coalesce(raw_body, convert_to(payload::text, 'UTF8')) AS body
      FROM webhook_events WHERE id = %(event_id)s AND run_id = %(run_id)s) e;

-- notify_event --
-- Wake the daemons for a run (delivered when the transaction commits)
SELECT pg_notify('orchestrator_events_v1', %(run_id)s);

-- next_timer --
-- Seconds until the earliest timer or gate deadline not yet due, by the
-- server's clock (the first entry past NOW() of runs_timers and of
-- runs_gate_deadlines, hence the literals)
SELECT EXTRACT(EPOCH FROM LEAST(
    (SELECT min(wake_at) FROM runs WHERE status = 'waiting_timer' AND wake_at > NOW()),
    (SELECT min(wake_at) FROM runs WHERE status LIKE 'pending\_%' AND wake_at > NOW())
) - NOW())::float8 AS seconds;

-- time_out_gates --
-- The system's answer at every gate whose deadline has passed (migration 0013),
-- found from runs_gate_deadlines (hence the literal, and no parameters: a `%`
-- here is LIKE's). The approval trigger drops the answer for a gate a person
-- or another daemon answered first; the claim then takes the run up as for any
-- approval. The earliest first, a batch at a time.
INSERT INTO hitl_approvals (run_id, gate, approver, decision, comment, payload, pause_id)
SELECT r.run_id, r.waiting_for ->> 'gate', 'system',
    CASE WHEN r.waiting_for #>> '{deadline,then}' = 'approve' THEN 'approved' ELSE 'rejected' END,
    COALESCE(r.waiting_for #>> '{deadline,comment}',
             format('timed out: nobody answered at the %s gate by %s, so the system chose to %s',
                    r.waiting_for ->> 'gate', r.waiting_for #>> '{deadline,at}',
                    orchestrator_deadline_action(r.waiting_for #>> '{deadline,then}'))),
    jsonb_build_object('timed_out', r.waiting_for -> 'deadline'),
    (r.waiting_for ->> 'pause_id')::bigint
FROM runs r
WHERE r.status LIKE 'pending\_%' AND r.wake_at <= NOW() AND r.waiting_for ? 'deadline'
ORDER BY r.wake_at
LIMIT 100;

-- schema_version --
-- The newest migration applied
SELECT max(version) AS version FROM orchestrator_migrations;

-- stuck_runs --
-- The seed's "runs that appear stuck", widened to every gate and provider wait:
-- live, not queued, and created longer ago than %(older_than)s
SELECT run_id, project, status, created_at,
       (EXTRACT(EPOCH FROM (NOW() - created_at)) / 60)::float8 AS minutes_running
FROM runs
WHERE (status LIKE %(pending_like)s OR status IN (%(running)s, %(waiting_provider)s))
  AND created_at < NOW() - %(older_than)s
ORDER BY created_at ASC
LIMIT %(limit)s;

-- run_counts --
-- Runs by status, and how many of each have work a worker could claim now (the
-- claim's conditions, for every workflow): the gauges' numbers
SELECT status, count(*) AS runs,
    count(*) FILTER (WHERE status NOT IN ('published', 'failed', 'cancelled') AND (
            status = %(queued)s
         OR (status = %(running)s AND lease_expires_at < NOW())
         OR (status = %(waiting_timer)s AND wake_at <= NOW())
         OR (status = %(waiting_limit)s AND wake_at <= NOW())
         OR (status = %(waiting_provider)s AND (wake_at <= NOW() OR EXISTS (
                SELECT 1 FROM webhook_events e
                WHERE e.run_id = r.run_id AND e.processed_at IS NULL
                  AND e.job_id = r.waiting_for ->> 'job_id'
                  AND e.signature_status IN ('valid', 'verified_by_fetch'))))
         OR (status LIKE %(pending_like)s AND EXISTS (
                SELECT 1 FROM hitl_approvals a
                WHERE a.run_id = r.run_id AND a.consumed_at IS NULL
                  AND %(pending_prefix)s || a.gate = r.status
                  AND a.pause_id IS NOT DISTINCT FROM (r.waiting_for ->> 'pause_id')::bigint))))
        AS due
FROM runs r
GROUP BY status;

-- foreign_versions --
-- Live runs that this worker leaves alone: their workflow or graph version is not its own
SELECT workflow, graph_version, count(*) AS runs
FROM runs r
WHERE status NOT IN ('published', 'failed', 'cancelled')
  AND NOT EXISTS (
    SELECT 1 FROM unnest(%(workflows)s::text[], %(versions)s::text[]) AS w(name, version)
    WHERE w.name = r.workflow AND (r.graph_version IS NULL OR r.graph_version = w.version))
GROUP BY workflow, graph_version
ORDER BY workflow, graph_version;

-- finished_before --
-- Finished runs last changed before %(before)s, a batch at a time in run_id order
SELECT run_id FROM runs
WHERE status IN ('published', 'failed', 'cancelled') AND updated_at < %(before)s
  AND run_id > %(after)s
ORDER BY run_id
LIMIT %(limit)s;

-- delete_runs --
-- Remove runs with everything that belongs to them (their webhook events stay, unlinked)
DELETE FROM runs WHERE run_id = ANY(%(run_ids)s);

-- prune_webhook_events --
-- Up to %(limit)s deliveries received before %(before)s that no live run needs:
-- unlinked (a stranger's, or their run was deleted) or of a run that finished
-- before then too
DELETE FROM webhook_events WHERE id IN (
    SELECT e.id FROM webhook_events e LEFT JOIN runs r ON r.run_id = e.run_id
    WHERE e.received_at < %(before)s
      AND (r.run_id IS NULL
           OR (r.status IN ('published', 'failed', 'cancelled') AND r.updated_at < %(before)s))
    ORDER BY e.received_at
    LIMIT %(limit)s
);

-- clock --
-- The database's time: every daemon and command reads the same clock
SELECT now() AS now;

-- insert_schedule --
-- A new schedule (the NOTIFY trigger wakes the daemons: it may fire before their poll)
INSERT INTO schedules (schedule_id, cron, timezone, project, workflow, payload, overlap, catchup,
    next_fire_at)
VALUES (%(schedule_id)s, %(cron)s, %(timezone)s, %(project)s, %(workflow)s, %(payload)s,
    %(overlap)s, %(catchup)s, %(next_fire_at)s)
RETURNING *;

-- list_schedules --
-- Every schedule, oldest first
SELECT * FROM schedules ORDER BY created_at, schedule_id;

-- get_schedule --
-- One schedule by id
SELECT * FROM schedules WHERE schedule_id = %(schedule_id)s;

-- pause_schedule --
-- Stop firing; a start held by buffer_one is dropped with the pause
UPDATE schedules SET paused = true, buffered_fire_at = NULL, updated_at = now()
WHERE schedule_id = %(schedule_id)s
RETURNING *;

-- resume_schedule --
-- Fire again from %(next_fire_at)s (the first fire time after now): the times that
-- passed while paused are not made up. Resuming a schedule that runs changes nothing.
UPDATE schedules
SET next_fire_at = CASE WHEN paused THEN %(next_fire_at)s ELSE next_fire_at END,
    paused = false, updated_at = now()
WHERE schedule_id = %(schedule_id)s
RETURNING *;

-- delete_schedule --
-- Remove a schedule; the runs it started stay, still naming it
DELETE FROM schedules WHERE schedule_id = %(schedule_id)s RETURNING schedule_id;

-- schedules_due_at --
-- When the next firing pass is due: the earliest fire time of a running schedule,
-- or now when one holds a start (buffer_one) that a run's end may release
SELECT now() AS now,
    (SELECT min(next_fire_at) FROM schedules WHERE NOT paused) AS next_fire_at,
    EXISTS (SELECT 1 FROM schedules WHERE buffered_fire_at IS NOT NULL AND NOT paused)
        AS buffered;

-- lock_due_schedules --
-- The schedules with a fire time due at %(now)s (default: the database's now) or a
-- held start, each locked by one firing pass (the others skip it), with the number
-- of its runs that have not ended (its overlap policy's count). A daemon that stops
-- mid-pass without dying (SIGSTOP, a partition) loses its session after 10 s idle in
-- the transaction, and with it the locks, rather than holding the schedules forever.
SELECT s.*, COALESCE(%(now)s::timestamptz, now()) AS now,
    (SELECT count(*) FROM runs r
     WHERE r.schedule_id = s.schedule_id AND r.status <> ALL(%(terminal)s)) AS live
FROM schedules s,
    (SELECT set_config('idle_in_transaction_session_timeout', '10s', true)) AS stop_guard
WHERE NOT s.paused
  AND (s.next_fire_at <= COALESCE(%(now)s::timestamptz, now()) OR s.buffered_fire_at IS NOT NULL)
ORDER BY s.next_fire_at
LIMIT %(limit)s
FOR UPDATE OF s SKIP LOCKED;

-- insert_scheduled_runs --
-- Queue a schedule's runs, one per fire time: a fire time that has its run already
-- (another daemon's pass, a backfill) gets none. Returns the runs inserted.
INSERT INTO runs (run_id, project, status, payload, workflow, schedule_id, schedule_fire_time)
SELECT f.run_id, %(project)s, %(status)s, %(payload)s, %(workflow)s, %(schedule_id)s, f.fire_time
FROM unnest(%(run_ids)s::text[], %(fire_times)s::timestamptz[]) AS f(run_id, fire_time)
ON CONFLICT (schedule_id, schedule_fire_time) WHERE schedule_id IS NOT NULL DO NOTHING
RETURNING run_id, schedule_fire_time;

-- advance_schedule --
-- After a firing pass: the first fire time not dealt with, and the start held, if
-- any. A schedule that fires no more (%(next_fire_at)s is null) is paused.
UPDATE schedules
SET next_fire_at = COALESCE(%(next_fire_at)s::timestamptz, next_fire_at),
    paused = %(next_fire_at)s::timestamptz IS NULL,
    buffered_fire_at = %(buffered_fire_at)s, updated_at = now()
WHERE schedule_id = %(schedule_id)s;

-- route_notifications --
-- Hand up to %(limit)s notifications that are due to the channels %(channels)s (the
-- ones this daemon has): one delivery each, in one statement, so a daemon dying here
-- leaves them in the outbox for the next. A reminder whose run no longer waits at
-- that pause is skipped; with no channel, a notification is only recorded.
WITH due AS (
    DELETE FROM notification_outbox
    WHERE artifact_id IN (
        SELECT artifact_id FROM notification_outbox
        WHERE due_at <= NOW()
        ORDER BY due_at
        LIMIT %(limit)s
        FOR UPDATE SKIP LOCKED)
    RETURNING artifact_id, due_at
), events AS (
    SELECT due.artifact_id, due.due_at,
        a.metadata ->> 'event' = 'reminder'
        AND (r.status IS DISTINCT FROM 'pending_' || (a.metadata ->> 'gate')
             OR r.waiting_for -> 'pause_id' IS DISTINCT FROM a.metadata -> 'pause_id') AS moot,
        -- The run's own webhook (migration 0018) hears of its gates and of its end,
        -- when this daemon can sign for it (%(run_webhooks)s).
        %(run_webhooks)s AND r.webhook_url IS NOT NULL
        AND a.metadata ->> 'event' IN ('gate', 'published', 'failed', 'cancelled') AS to_run
    FROM due JOIN artifacts a ON a.id = due.artifact_id JOIN runs r ON r.run_id = a.run_id
), routed AS (
    INSERT INTO notification_deliveries (artifact_id, channel, due_at, next_attempt_at)
    SELECT e.artifact_id, c.channel, e.due_at, NOW()
    FROM events e CROSS JOIN unnest(%(channels)s::text[]) AS c(channel)
    WHERE NOT e.moot
    UNION ALL
    SELECT e.artifact_id, 'run-webhook', e.due_at, NOW() FROM events e WHERE e.to_run
)
UPDATE artifacts a SET status = CASE
        WHEN e.moot THEN 'skipped'
        WHEN cardinality(%(channels)s::text[]) = 0 AND NOT e.to_run THEN 'recorded'
        ELSE 'sending'
    END
FROM events e
WHERE a.id = e.artifact_id
RETURNING a.id, a.run_id, a.status, a.metadata ->> 'event' AS event;

-- next_notification_due --
-- Seconds until the earliest notification not yet due (a reminder), by the server's clock
SELECT EXTRACT(EPOCH FROM min(due_at) - NOW())::float8 AS seconds FROM notification_outbox;

-- claim_deliveries --
-- Take up to %(limit)s deliveries owed on %(channel)s: each attempt is counted as it
-- starts, and the delivery is this sender's for %(lease)s (a sender that dies
-- mid-attempt leaves it to the next claim after that). `expired`: already
-- %(max_attempts)s attempts (the last one's sender died) or older than %(max_age)s:
-- given up, not sent, and not counted as an attempt.
WITH owed AS (
    SELECT id, attempts >= %(max_attempts)s OR due_at < NOW() - %(max_age)s AS expired
    FROM notification_deliveries
    WHERE channel = %(channel)s AND delivered_at IS NULL AND gave_up_at IS NULL
      AND next_attempt_at <= NOW()
    ORDER BY next_attempt_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
UPDATE notification_deliveries d
SET attempts = d.attempts + (NOT owed.expired)::int, last_attempt_at = NOW(),
    next_attempt_at = NOW() + %(lease)s
FROM owed, artifacts a, runs r
WHERE d.id = owed.id AND a.id = d.artifact_id AND r.run_id = a.run_id
RETURNING d.id, d.channel, d.attempts, d.due_at, a.id AS artifact_id, a.idempotency_key,
    a.run_id, r.project, r.webhook_url, a.metadata, owed.expired;

-- delivery_sent --
-- The channel took it (right after the send: a sender dying before this line
-- delivers it again, under the same id)
UPDATE notification_deliveries SET delivered_at = NOW()
WHERE id = %(id)s AND delivered_at IS NULL;

-- delivery_failed --
-- An attempt failed with %(error)s (NULL: none was made): try again after the
-- backoff (%(backoff)s doubling per attempt, at most %(backoff_max)s), or give up
-- when %(give_up)s, after %(max_attempts)s attempts, or once older than %(max_age)s
UPDATE notification_deliveries SET
    last_error = coalesce(%(error)s, last_error),
    gave_up_at = CASE WHEN %(give_up)s OR attempts >= %(max_attempts)s
                           OR due_at < NOW() - %(max_age)s THEN NOW() END,
    next_attempt_at = NOW() + least(%(backoff_max)s::interval,
                                    %(backoff)s::interval * power(2, least(attempts - 1, 30)))
WHERE id = %(id)s AND delivered_at IS NULL AND gave_up_at IS NULL
RETURNING attempts, gave_up_at IS NOT NULL AS gave_up, next_attempt_at;

-- abandon_deliveries --
-- Give up deliveries older than %(max_age)s on channels this daemon does not have
-- (%(channels)s): a channel taken out of every daemon's settings is owed nothing for ever
UPDATE notification_deliveries d SET gave_up_at = NOW()
FROM artifacts a
WHERE a.id = d.artifact_id AND d.delivered_at IS NULL AND d.gave_up_at IS NULL
  AND d.channel <> ALL(%(channels)s::text[]) AND d.next_attempt_at <= NOW()
  AND d.due_at < NOW() - %(max_age)s
RETURNING d.channel, d.attempts, a.run_id, a.metadata ->> 'event' AS event;

-- inbox --
-- Runs waiting at a gate, longest waiting first, each with the approval sent
-- for it that no worker has taken up yet (if any)
SELECT r.run_id, r.project, r.status, r.workflow, r.created_at, r.updated_at, r.payload, r.wake_at,
       r.waiting_for, sent.id AS sent_id, sent.decision AS sent_decision,
       sent.approver AS sent_by, sent.created_at AS sent_at,
       count(*) OVER () AS waiting_total
FROM runs r
LEFT JOIN LATERAL (
    SELECT a.id, a.decision, a.approver, a.created_at FROM hitl_approvals a
    WHERE a.run_id = r.run_id AND a.consumed_at IS NULL
    ORDER BY a.id LIMIT 1
) sent ON TRUE
WHERE r.status LIKE %(pending_like)s
ORDER BY r.updated_at ASC, r.run_id
LIMIT %(limit)s;
