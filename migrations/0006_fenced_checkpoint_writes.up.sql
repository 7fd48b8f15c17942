-- A run's checkpoint writes are one statement each: the saver calls
-- orchestrator_put(), which (1) checks and renews the worker's lease at its
-- epoch (failing with OR001 if it lost the run), (2) on the first write after a
-- resume spends the resume (the run waits for nothing; its approval will not
-- be handed out again), (3) writes LangGraph's rows as LangGraph's own saver
-- would: tasks' writes, and checkpoints with the blobs of the channels that
-- changed, and (4) mirrors the newest checkpoint's readable state into
-- `orchestration_checkpoints`. One statement is one round trip with no
-- BEGIN/COMMIT of its own, and it commits or fails as a whole.

CREATE FUNCTION orchestrator_hold(
    p_run_id TEXT, p_epoch BIGINT, p_ttl INTERVAL, p_consume BOOLEAN, p_approval_id BIGINT
) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM orchestrator_fence(p_run_id, p_epoch, p_ttl);
    IF p_consume THEN
        UPDATE hitl_approvals SET consumed_at = NOW()
        WHERE id = p_approval_id AND consumed_at IS NULL;
        UPDATE runs SET waiting_for = NULL WHERE run_id = p_run_id;
    END IF;
END $$;

-- The rows' fields come as one JSON document, `p_rows`, of three arrays of
-- arrays (one per row, fields in the order below); their blobs come as
-- `p_write_blobs` and `p_blob_values`, element i belonging to row i. (As one
-- document, the client encodes the fields in one pass: one array per field
-- cost psycopg more to encode than the statement cost the server to run.)
-- A write with `replace` (to one of LangGraph's special channels) replaces the
-- row at its index; the others never do. Checkpoints come in order, oldest
-- first; the newest is the one mirrored (`p_state`, `p_step`). Without
-- `p_flush` the transaction commits without waiting for the WAL flush (the
-- saver asks for that when it sends a task's writes alone: see
-- engine/saver.py).
--   writes:      [ns, checkpoint_id, task_id, task_path, idx, channel, type, replace]
--   checkpoints: [ns, checkpoint_id, parent_id, checkpoint, metadata]
--   blobs:       [ns, channel, version, type]
CREATE FUNCTION orchestrator_put(
    p_run_id TEXT, p_epoch BIGINT, p_ttl INTERVAL, p_consume BOOLEAN, p_approval_id BIGINT,
    p_thread_id TEXT, p_rows JSONB, p_write_blobs BYTEA[], p_blob_values BYTEA[],
    p_state JSONB, p_step INT, p_flush BOOLEAN
) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM orchestrator_hold(p_run_id, p_epoch, p_ttl, p_consume, p_approval_id);
    IF NOT p_flush THEN
        PERFORM set_config('synchronous_commit', 'off', true);
    END IF;
    IF jsonb_array_length(p_rows -> 'writes') > 0 THEN
        WITH w AS (
            SELECT r ->> 0 AS ns, r ->> 1 AS checkpoint_id, r ->> 2 AS task_id,
                r ->> 3 AS task_path, (r ->> 4)::int AS idx, r ->> 5 AS channel,
                r ->> 6 AS type, p_write_blobs[n] AS blob, (r ->> 7)::boolean AS replace
            FROM jsonb_array_elements(p_rows -> 'writes') WITH ORDINALITY AS e(r, n)
        ), replaced AS (
            INSERT INTO checkpoint_writes (thread_id, checkpoint_ns, checkpoint_id, task_id,
                                           task_path, idx, channel, type, blob)
            SELECT p_thread_id, ns, checkpoint_id, task_id, task_path, idx, channel, type, blob
            FROM w WHERE replace
            ON CONFLICT (thread_id, checkpoint_ns, checkpoint_id, task_id, idx) DO UPDATE SET
                channel = EXCLUDED.channel, type = EXCLUDED.type, blob = EXCLUDED.blob
        )
        INSERT INTO checkpoint_writes (thread_id, checkpoint_ns, checkpoint_id, task_id,
                                       task_path, idx, channel, type, blob)
        SELECT p_thread_id, ns, checkpoint_id, task_id, task_path, idx, channel, type, blob
        FROM w WHERE NOT replace
        ON CONFLICT (thread_id, checkpoint_ns, checkpoint_id, task_id, idx) DO NOTHING;
    END IF;
    IF jsonb_array_length(p_rows -> 'checkpoints') = 0 THEN
        RETURN;
    END IF;
    INSERT INTO checkpoint_blobs (thread_id, checkpoint_ns, channel, version, type, blob)
    SELECT p_thread_id, r ->> 0, r ->> 1, r ->> 2, r ->> 3, p_blob_values[n]
    FROM jsonb_array_elements(p_rows -> 'blobs') WITH ORDINALITY AS e(r, n)
    ON CONFLICT (thread_id, checkpoint_ns, channel, version) DO NOTHING;
    INSERT INTO checkpoints (thread_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id,
                             checkpoint, metadata)
    SELECT p_thread_id, r ->> 0, r ->> 1, r ->> 2, r -> 3, r -> 4
    FROM jsonb_array_elements(p_rows -> 'checkpoints') AS e(r)
    ON CONFLICT (thread_id, checkpoint_ns, checkpoint_id) DO UPDATE SET
        checkpoint = EXCLUDED.checkpoint, metadata = EXCLUDED.metadata;
    INSERT INTO orchestration_checkpoints (run_id, state, updated_at, checkpoint_id, step)
    VALUES (p_run_id, p_state, NOW(), p_rows -> 'checkpoints' -> -1 ->> 1, p_step)
    ON CONFLICT (run_id) DO UPDATE SET
        state = EXCLUDED.state, updated_at = EXCLUDED.updated_at,
        checkpoint_id = EXCLUDED.checkpoint_id, step = EXCLUDED.step;
END $$;
