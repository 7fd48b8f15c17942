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

-- Rows come as parallel arrays, one element per row. A write with `replace` (to
-- one of LangGraph's special channels) replaces the row at its index; the
-- others never do. Checkpoints come in order, oldest first; the newest is the
-- one mirrored (`p_state`, `p_step`). A statement with no checkpoint commits
-- without waiting for the WAL flush: a task's writes are made durable by the
-- synchronous commit of the checkpoint that follows them, and were the server
-- to crash before that, the task would run again, as after a worker crash
-- mid-task.
CREATE FUNCTION orchestrator_put(
    p_run_id TEXT, p_epoch BIGINT, p_ttl INTERVAL, p_consume BOOLEAN, p_approval_id BIGINT,
    p_thread_id TEXT,
    p_write_ns TEXT[], p_write_checkpoint_ids TEXT[], p_task_ids TEXT[], p_task_paths TEXT[],
    p_idx INT[], p_channels TEXT[], p_types TEXT[], p_blobs BYTEA[], p_replace BOOLEAN[],
    p_checkpoint_ns TEXT[], p_checkpoint_ids TEXT[], p_parent_ids TEXT[],
    p_checkpoints JSONB[], p_metadata JSONB[],
    p_blob_ns TEXT[], p_blob_channels TEXT[], p_blob_versions TEXT[], p_blob_types TEXT[],
    p_blob_values BYTEA[], p_state JSONB, p_step INT
) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM orchestrator_hold(p_run_id, p_epoch, p_ttl, p_consume, p_approval_id);
    IF cardinality(p_idx) > 0 THEN
        WITH w AS (
            SELECT * FROM unnest(p_write_ns, p_write_checkpoint_ids, p_task_ids, p_task_paths,
                                 p_idx, p_channels, p_types, p_blobs, p_replace)
                AS w(ns, checkpoint_id, task_id, task_path, idx, channel, type, blob, replace)
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
    IF cardinality(p_checkpoint_ids) = 0 THEN
        PERFORM set_config('synchronous_commit', 'off', true);
        RETURN;
    END IF;
    INSERT INTO checkpoint_blobs (thread_id, checkpoint_ns, channel, version, type, blob)
    SELECT p_thread_id, b.ns, b.channel, b.version, b.type, b.blob
    FROM unnest(p_blob_ns, p_blob_channels, p_blob_versions, p_blob_types, p_blob_values)
         AS b(ns, channel, version, type, blob)
    ON CONFLICT (thread_id, checkpoint_ns, channel, version) DO NOTHING;
    INSERT INTO checkpoints (thread_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id,
                             checkpoint, metadata)
    SELECT p_thread_id, c.ns, c.checkpoint_id, c.parent_id, c.checkpoint, c.metadata
    FROM unnest(p_checkpoint_ns, p_checkpoint_ids, p_parent_ids, p_checkpoints, p_metadata)
         AS c(ns, checkpoint_id, parent_id, checkpoint, metadata)
    ON CONFLICT (thread_id, checkpoint_ns, checkpoint_id) DO UPDATE SET
        checkpoint = EXCLUDED.checkpoint, metadata = EXCLUDED.metadata;
    INSERT INTO orchestration_checkpoints (run_id, state, updated_at, checkpoint_id, step)
    VALUES (p_run_id, p_state, NOW(), p_checkpoint_ids[cardinality(p_checkpoint_ids)], p_step)
    ON CONFLICT (run_id) DO UPDATE SET
        state = EXCLUDED.state, updated_at = EXCLUDED.updated_at,
        checkpoint_id = EXCLUDED.checkpoint_id, step = EXCLUDED.step;
END $$;
