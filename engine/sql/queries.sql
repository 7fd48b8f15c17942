-- insert_run --
-- Create a queued run (the NOTIFY trigger wakes the daemons)
INSERT INTO runs (run_id, project, status, payload, workflow, priority)
VALUES (%(run_id)s, %(project)s, %(status)s, %(payload)s, %(workflow)s, %(priority)s)
RETURNING *;

-- claim_runs --
-- Take up to %(limit)s runs that have work: queued, abandoned by a dead worker,
-- approved at their gate, or due for a provider poll
WITH due AS (
    SELECT r.run_id
    FROM runs r
    WHERE r.status NOT IN ('published', 'failed', 'cancelled')
      AND (
            r.status = %(queued)s
         OR (r.status = %(running)s AND r.lease_expires_at < NOW())
         OR (r.status = %(waiting_provider)s AND r.wake_at <= NOW())
         OR (r.status LIKE %(pending_like)s AND EXISTS (
                SELECT 1 FROM hitl_approvals a
                WHERE a.run_id = r.run_id AND a.consumed_at IS NULL
                  AND %(pending_prefix)s || a.gate = r.status))
      )
    ORDER BY r.priority DESC, r.created_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
UPDATE runs SET
    status = %(running)s,
    lease_owner = %(worker_id)s,
    lease_expires_at = NOW() + %(lease_ttl)s,
    lease_epoch = runs.lease_epoch + 1,
    updated_at = NOW()
FROM due
WHERE runs.run_id = due.run_id
RETURNING runs.run_id, runs.project, runs.workflow, runs.payload, runs.lease_epoch,
    runs.graph_version,
    (SELECT row_to_json(a) FROM hitl_approvals a
     WHERE a.run_id = runs.run_id AND a.consumed_at IS NULL
       AND a.gate = runs.waiting_for ->> 'gate'
     ORDER BY a.id LIMIT 1) AS approval,
    EXISTS (SELECT 1 FROM orchestration_checkpoints c WHERE c.run_id = runs.run_id)
        AS has_checkpoint;

-- fence --
-- Renew the lease, or fail the transaction if the worker lost the run
SELECT orchestrator_fence(%(run_id)s, %(epoch)s, %(lease_ttl)s);

-- consume_approval --
-- The approval has been handed to the graph: it will not be handed out again
WITH consumed AS (
    UPDATE hitl_approvals SET consumed_at = NOW()
    WHERE id = %(approval_id)s AND consumed_at IS NULL
    RETURNING run_id
)
UPDATE runs SET waiting_for = NULL FROM consumed WHERE runs.run_id = consumed.run_id;

-- upsert_checkpoint_view --
-- Mirror the latest LangGraph state as readable JSON (the seed's table)
INSERT INTO orchestration_checkpoints (run_id, state, updated_at, checkpoint_id, step)
VALUES (%(run_id)s, %(state)s, NOW(), %(checkpoint_id)s, %(step)s)
ON CONFLICT (run_id) DO UPDATE SET
    state = EXCLUDED.state, updated_at = EXCLUDED.updated_at,
    checkpoint_id = EXCLUDED.checkpoint_id, step = EXCLUDED.step;

-- pause_run --
-- The graph stopped at an interrupt: record what it waits for and let go of it
UPDATE runs SET
    status = %(status)s, waiting_for = %(waiting_for)s, wake_at = %(wake_at)s,
    graph_version = COALESCE(graph_version, %(graph_version)s),
    lease_owner = NULL, lease_expires_at = NULL, updated_at = NOW()
WHERE run_id = %(run_id)s AND lease_epoch = %(epoch)s AND status = %(running)s;

-- finish_run --
-- The graph reached its end
UPDATE runs SET
    status = %(status)s, result = %(result)s, error = NULL,
    graph_version = COALESCE(graph_version, %(graph_version)s),
    lease_owner = NULL, lease_expires_at = NULL, waiting_for = NULL, updated_at = NOW()
WHERE run_id = %(run_id)s AND lease_epoch = %(epoch)s AND status = %(running)s;

-- fail_run --
-- Retries are exhausted
UPDATE runs SET
    status = %(status)s, error = %(error)s, attempt = %(attempt)s,
    graph_version = COALESCE(graph_version, %(graph_version)s),
    lease_owner = NULL, lease_expires_at = NULL, updated_at = NOW()
WHERE run_id = %(run_id)s AND lease_epoch = %(epoch)s AND status = %(running)s;

-- requeue_run --
-- Give a run back unfinished (shutdown): any worker may claim it at once
UPDATE runs SET
    status = %(queued)s, lease_owner = NULL, lease_expires_at = NULL, updated_at = NOW()
WHERE run_id = %(run_id)s AND lease_epoch = %(epoch)s AND status = %(running)s;

-- heartbeat --
-- Extend the leases of the runs this worker still holds; returns the ones kept
UPDATE runs SET lease_expires_at = NOW() + %(lease_ttl)s
FROM unnest(%(run_ids)s::text[], %(epochs)s::bigint[]) AS held(run_id, epoch)
WHERE runs.run_id = held.run_id AND runs.lease_epoch = held.epoch
  AND runs.status = %(running)s
RETURNING runs.run_id;

-- record_artifact --
-- Store a persona's output once per idempotency key
INSERT INTO artifacts (run_id, type, provider, persona, url, metadata, idempotency_key, status)
VALUES (%(run_id)s, %(type)s, %(provider)s, %(persona)s, %(url)s, %(metadata)s,
        %(idempotency_key)s, %(status)s)
ON CONFLICT (idempotency_key) DO UPDATE SET
    url = EXCLUDED.url, metadata = EXCLUDED.metadata, status = EXCLUDED.status
RETURNING *;

-- get_run --
-- One run by id
SELECT * FROM runs WHERE run_id = %(run_id)s;

-- get_checkpoint --
-- The readable mirror of a run's latest state
SELECT state, updated_at, checkpoint_id, step
FROM orchestration_checkpoints WHERE run_id = %(run_id)s;

-- list_artifacts --
-- A run's artifacts in the order they were made
SELECT id, type, provider, persona, url, metadata, status, idempotency_key, created_at
FROM artifacts WHERE run_id = %(run_id)s ORDER BY created_at ASC, id ASC;

-- list_runs --
-- Newest first, optionally filtered by status and project
SELECT * FROM runs
WHERE (%(status)s::text IS NULL OR status = %(status)s)
  AND (%(project)s::text IS NULL OR project = %(project)s)
ORDER BY created_at DESC
LIMIT %(limit)s;

-- insert_approval --
-- Approve or reject a gate (the trigger refuses it unless the run waits there)
INSERT INTO hitl_approvals (run_id, gate, approver, approver_ip, decision, comment, payload)
VALUES (%(run_id)s, %(gate)s, %(approver)s, %(approver_ip)s, %(decision)s, %(comment)s,
        %(payload)s)
RETURNING *;

-- cancel_run --
-- Stop a live run; the epoch bump fences out a worker still executing it
UPDATE runs SET
    status = %(cancelled)s, lease_epoch = lease_epoch + 1,
    lease_owner = NULL, lease_expires_at = NULL, wake_at = NULL, updated_at = NOW()
WHERE run_id = %(run_id)s AND status NOT IN ('published', 'failed', 'cancelled')
RETURNING *;

-- retry_run --
-- Put a failed run back in the queue; it resumes from its last checkpoint
UPDATE runs SET
    status = %(queued)s, error = NULL, attempt = 0, updated_at = NOW()
WHERE run_id = %(run_id)s AND status = %(failed)s
RETURNING *;
