-- The schema of an empty database after `orchestrator migrate` to the newest
-- migration, with the LangGraph checkpoint tables that it sets up too: pg_dump
-- --schema-only --no-owner --no-privileges, less the lines that differ between
-- pg_dump versions (tools/schema.py). Generated: do not edit. Change a migration,
-- then run `make schema`; tests/deploy/test_packaging.py checks that the two agree.

--
-- Name: orchestrator_check_approval(); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.orchestrator_check_approval() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
DECLARE
    current_status TEXT;
    waiting        JSONB;
    due            TIMESTAMPTZ;
    pause          BIGINT;
    earlier        hitl_approvals;
    last_answer    hitl_approvals;
    by_system      BOOLEAN := NEW.approver = 'system' AND coalesce(NEW.payload ? 'timed_out', false);
BEGIN
    -- NO KEY UPDATE: concurrent approvals of the run wait here for each other
    -- (FOR SHARE let them all through together); the foreign-key check's
    -- KEY SHARE does not conflict with it.
    SELECT status, waiting_for, wake_at INTO current_status, waiting, due
    FROM runs WHERE run_id = NEW.run_id FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'approval refused: run % does not exist (gate %)', NEW.run_id, NEW.gate
            USING ERRCODE = 'check_violation';
    END IF;
    pause := (waiting ->> 'pause_id')::bigint;
    IF by_system THEN
        NEW.pause_id := coalesce(NEW.pause_id, pause);
        IF current_status IS DISTINCT FROM 'pending_' || NEW.gate
           OR NOT coalesce(waiting ? 'deadline', false) OR due IS NULL OR due > NOW()
           OR NEW.pause_id IS DISTINCT FROM pause
           OR EXISTS (SELECT 1 FROM hitl_approvals
                      WHERE run_id = NEW.run_id AND consumed_at IS NULL) THEN
            RETURN NULL;
        END IF;
        NEW.consumed_at := NULL;
        NEW.voided_at := NULL;
        NEW.void_reason := NULL;
        RETURN NEW;
    END IF;
    IF current_status = 'pending_' || NEW.gate AND coalesce(waiting ? 'deadline', false)
       AND due <= NOW() AND (NEW.pause_id IS NULL OR NEW.pause_id = pause) THEN
        RAISE EXCEPTION 'approval refused: gate % of run % timed out at % (nobody answered by its deadline; the system will %)',
            NEW.gate, NEW.run_id, waiting #>> '{deadline,at}',
            orchestrator_deadline_action(waiting #>> '{deadline,then}')
            USING ERRCODE = 'check_violation';
    END IF;
    IF current_status IS DISTINCT FROM 'pending_' || NEW.gate
       OR NEW.pause_id IS DISTINCT FROM pause AND NEW.pause_id IS NOT NULL THEN
        -- Too late for this question: say so when its answer was the system's.
        SELECT * INTO last_answer FROM hitl_approvals
        WHERE run_id = NEW.run_id ORDER BY created_at DESC, id DESC LIMIT 1;
        IF FOUND AND last_answer.gate = NEW.gate AND last_answer.approver = 'system'
           AND coalesce(last_answer.payload ? 'timed_out', false)
           AND (NEW.pause_id IS NULL OR NEW.pause_id = last_answer.pause_id) THEN
            RAISE EXCEPTION 'approval refused: gate % of run % timed out at % (nobody answered by its deadline; the system chose to %)',
                NEW.gate, NEW.run_id, last_answer.payload #>> '{timed_out,at}',
                orchestrator_deadline_action(last_answer.payload #>> '{timed_out,then}')
                USING ERRCODE = 'check_violation';
        END IF;
    END IF;
    IF current_status IS DISTINCT FROM 'pending_' || NEW.gate THEN
        RAISE EXCEPTION 'approval refused: run % is not waiting at gate % (status is %)',
            NEW.run_id, NEW.gate, current_status
            USING ERRCODE = 'check_violation';
    END IF;
    IF NEW.pause_id IS NULL THEN
        NEW.pause_id := pause;
    ELSIF NEW.pause_id IS DISTINCT FROM pause THEN
        RAISE EXCEPTION 'approval refused: run % at gate % waits at pause %, not at pause % (that question was already answered or withdrawn)',
            NEW.run_id, NEW.gate, coalesce(pause::text, '(unnumbered)'), NEW.pause_id
            USING ERRCODE = 'check_violation';
    END IF;
    SELECT * INTO earlier FROM hitl_approvals
    WHERE run_id = NEW.run_id AND consumed_at IS NULL
    ORDER BY id LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'approval refused: run % already has approval % (% by %) waiting at gate %',
            NEW.run_id, earlier.id, earlier.decision, coalesce(earlier.approver, 'an unnamed approver'),
            NEW.gate
            USING ERRCODE = 'check_violation';
    END IF;
    NEW.consumed_at := NULL;
    NEW.voided_at := NULL;
    NEW.void_reason := NULL;
    RETURN NEW;
END $$;

--
-- Name: orchestrator_deadline_action(text); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.orchestrator_deadline_action(action text) RETURNS text
    LANGUAGE sql IMMUTABLE
    AS $$
    SELECT CASE action
        WHEN 'approve' THEN 'approve it'
        WHEN 'fail' THEN 'fail the run'
        WHEN 'escalate' THEN 'escalate it'
        ELSE 'reject it'
    END
$$;

--
-- Name: orchestrator_fence(text, bigint, interval); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.orchestrator_fence(p_run_id text, p_epoch bigint, p_ttl interval) RETURNS void
    LANGUAGE plpgsql
    AS $$
BEGIN
    UPDATE runs SET lease_expires_at = NOW() + p_ttl
    WHERE run_id = p_run_id AND lease_epoch = p_epoch AND status = 'running';
    IF NOT FOUND THEN
        RAISE EXCEPTION 'lease lost: run % is no longer held at epoch %', p_run_id, p_epoch
            USING ERRCODE = 'OR001';
    END IF;
END $$;

--
-- Name: orchestrator_grant_room(text); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.orchestrator_grant_room(p_project text) RETURNS integer
    LANGUAGE plpgsql
    AS $$
DECLARE
    room TEXT := 'project:' || p_project;
    cap INT;
    granted INT;
BEGIN
    PERFORM pg_advisory_xact_lock_shared(hashtext('orchestrator_project_limit'), hashtext(p_project));
    SELECT concurrent INTO cap FROM flow_limits WHERE name = 'project:*';
    WITH chosen AS (
        SELECT run_id FROM runs
        WHERE status = 'waiting_limit' AND wake_at IS NULL AND waiting_for ->> 'limit' = room
        ORDER BY priority DESC, created_at
        LIMIT CASE WHEN cap IS NOT NULL THEN greatest(0, cap
            - (SELECT count(*) FROM runs WHERE status = 'running' AND project = p_project)
            - (SELECT count(*) FROM runs WHERE status = 'waiting_limit' AND wake_at IS NOT NULL
                 AND waiting_for ->> 'limit' = room)) END
        FOR UPDATE SKIP LOCKED
    ), woken AS (
        UPDATE runs SET wake_at = NOW() FROM chosen WHERE runs.run_id = chosen.run_id
        RETURNING runs.run_id
    )
    SELECT count(pg_notify('orchestrator_runs_v1', run_id)) INTO granted FROM woken;
    RETURN granted;
END $$;

--
-- Name: orchestrator_grant_slots(text); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.orchestrator_grant_slots(p_limit text) RETURNS integer
    LANGUAGE plpgsql
    AS $$
DECLARE
    cap INT;
    granted INT;
BEGIN
    SELECT concurrent INTO cap FROM flow_limits WHERE name = p_limit FOR UPDATE;
    WITH chosen AS (
        SELECT run_id, waiting_for ->> 'key' AS key FROM runs
        WHERE status = 'waiting_limit' AND wake_at IS NULL AND waiting_for ->> 'limit' = p_limit
        ORDER BY priority DESC, created_at
        LIMIT CASE WHEN cap IS NOT NULL THEN greatest(cap - orchestrator_slots_held(p_limit), 0) END
        FOR UPDATE SKIP LOCKED
    ), slots AS (
        INSERT INTO flow_slots (limit_name, run_id, key)
        SELECT p_limit, run_id, key FROM chosen WHERE cap IS NOT NULL
        ON CONFLICT DO NOTHING
    ), woken AS (
        UPDATE runs SET wake_at = NOW() FROM chosen WHERE runs.run_id = chosen.run_id
        RETURNING runs.run_id
    )
    SELECT count(pg_notify('orchestrator_runs_v1', run_id)) INTO granted FROM woken;
    RETURN granted;
END $$;

--
-- Name: orchestrator_hold(text, bigint, interval, boolean, bigint); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.orchestrator_hold(p_run_id text, p_epoch bigint, p_ttl interval, p_consume boolean, p_approval_id bigint) RETURNS void
    LANGUAGE plpgsql
    AS $$
BEGIN
    PERFORM orchestrator_fence(p_run_id, p_epoch, p_ttl);
    IF p_consume THEN
        UPDATE hitl_approvals SET consumed_at = NOW()
        WHERE id = p_approval_id AND consumed_at IS NULL;
        UPDATE runs SET waiting_for = NULL WHERE run_id = p_run_id;
    END IF;
END $$;

--
-- Name: orchestrator_notify_approval(); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.orchestrator_notify_approval() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    PERFORM pg_notify('orchestrator_approvals_v1', NEW.run_id);
    RETURN NULL;
END $$;

--
-- Name: orchestrator_notify_run(); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.orchestrator_notify_run() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    PERFORM pg_notify('orchestrator_runs_v1', NEW.run_id);
    RETURN NULL;
END $$;

--
-- Name: orchestrator_notify_run_change(); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.orchestrator_notify_run_change() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
DECLARE
    who      TEXT := format('Run %s (%s)', NEW.run_id, NEW.project);
    gate     TEXT;
    pause    TEXT;
    deadline JSONB;
    details  JSONB;
    reminder JSONB;
    n        INT := 0;
    due      TIMESTAMPTZ;
BEGIN
    IF NEW.status LIKE 'pending\_%' THEN
        gate := substr(NEW.status, length('pending_') + 1);
        pause := coalesce(NEW.waiting_for ->> 'pause_id', NEW.lease_epoch::text);
        deadline := NEW.waiting_for -> 'deadline';
        details := jsonb_build_object('gate', gate, 'pause_id', NEW.waiting_for -> 'pause_id',
                                      'deadline', deadline);
        PERFORM orchestrator_record_notification(NEW, 'gate', 'gate:' || pause, NOW(),
            format('%s waits for a decision at gate %s', who, gate)
                || coalesce(' (deadline ' || (deadline ->> 'at') || ')', '') || '.',
            details);
        IF jsonb_typeof(deadline -> 'reminders') = 'array' THEN
            FOR reminder IN SELECT value FROM jsonb_array_elements(deadline -> 'reminders') LOOP
                n := n + 1;
                BEGIN
                    due := (reminder #>> '{}')::timestamptz;
                EXCEPTION WHEN data_exception THEN
                    RAISE WARNING 'notification left out: run % at gate %: reminder % (%) is not a time',
                        NEW.run_id, gate, n, reminder;
                    CONTINUE;
                END;
                PERFORM orchestrator_record_notification(NEW, 'reminder',
                    format('reminder:%s:%s', pause, n), due,
                    format('Reminder: %s still waits for a decision at gate %s', who, gate)
                        || coalesce(' (deadline ' || (deadline ->> 'at') || ')', '') || '.',
                    details || jsonb_build_object('reminder', n));
            END LOOP;
        END IF;
    ELSIF NEW.status = 'failed' THEN
        PERFORM orchestrator_record_notification(NEW, 'failed', 'failed:' || NEW.lease_epoch,
            NOW(),
            format('%s failed: %s', who,
                   coalesce(left(NEW.error ->> 'message', 300), 'no error recorded')),
            '{}'::jsonb);
    ELSIF NEW.status = 'published' THEN
        PERFORM orchestrator_record_notification(NEW, 'published',
            'published:' || NEW.lease_epoch, NOW(), format('%s published.', who), '{}'::jsonb);
    ELSIF NEW.status = 'cancelled' THEN
        PERFORM orchestrator_record_notification(NEW, 'cancelled',
            'cancelled:' || NEW.lease_epoch, NOW(), format('%s was cancelled.', who), '{}'::jsonb);
    END IF;
    RETURN NULL;
END $$;

--
-- Name: orchestrator_notify_schedule(); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.orchestrator_notify_schedule() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    PERFORM pg_notify('orchestrator_schedules_v1', NEW.schedule_id);
    RETURN NULL;
END $$;

--
-- Name: orchestrator_notify_timeout(); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.orchestrator_notify_timeout() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
DECLARE
    run runs;
BEGIN
    SELECT * INTO run FROM runs WHERE run_id = NEW.run_id;
    PERFORM orchestrator_record_notification(run, 'timeout',
        'timeout:' || coalesce(NEW.pause_id::text, 'approval-' || NEW.id), NOW(),
        format('Run %s (%s): nobody decided at gate %s', run.run_id, run.project, NEW.gate)
            || coalesce(' by ' || (NEW.payload #>> '{timed_out,at}'), '')
            || format('; the gate %s it', NEW.decision)
            || coalesce(' (then: ' || (NEW.payload #>> '{timed_out,then}') || ')', '') || '.',
        jsonb_build_object('gate', NEW.gate, 'pause_id', NEW.pause_id, 'decision', NEW.decision,
                           'timed_out', NEW.payload -> 'timed_out'));
    RETURN NULL;
END $$;

--
-- Name: orchestrator_park_at_limit(); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.orchestrator_park_at_limit() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
DECLARE
    wanted TEXT := NEW.waiting_for ->> 'limit';
    cap INT;
BEGIN
    IF NEW.wake_at IS NOT NULL OR NEW.waiting_for ->> 'key' IS NULL THEN
        RETURN NEW;  -- a pause with a time of its own, or room in a project (below)
    END IF;
    SELECT concurrent INTO cap FROM flow_limits WHERE name = wanted FOR UPDATE;
    IF cap IS NOT NULL AND orchestrator_slots_held(wanted) >= cap THEN
        RETURN NEW;
    END IF;
    IF cap IS NOT NULL THEN
        INSERT INTO flow_slots (limit_name, run_id, key)
        VALUES (wanted, NEW.run_id, NEW.waiting_for ->> 'key') ON CONFLICT DO NOTHING;
    END IF;
    NEW.wake_at := NOW();
    PERFORM pg_notify('orchestrator_runs_v1', NEW.run_id);
    RETURN NEW;
END $$;

--
-- Name: orchestrator_project_limit(); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.orchestrator_project_limit() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
DECLARE
    cap INT;
    room TEXT := 'project:' || NEW.project;
    is_new BOOLEAN := (OLD.status = 'queued' AND OLD.waiting_for IS NULL)
                      OR coalesce(OLD.waiting_for ->> 'limit' = room, false);
BEGIN
    SELECT concurrent INTO cap FROM flow_limits WHERE name = 'project:*';
    IF cap IS NULL THEN
        RETURN NEW;
    END IF;
    IF NOT pg_try_advisory_xact_lock(hashtext('orchestrator_project_limit'), hashtext(NEW.project))
    THEN
        RETURN NULL;
    END IF;
    -- (A statement of its own: the count is read with the lock held.)
    IF orchestrator_project_taken(NEW.project, NEW.run_id, NOT is_new) < cap THEN
        RETURN NEW;
    END IF;
    IF NOT is_new THEN
        RETURN NULL;  -- a resume (an approval, an event, a timer) waits where it is
    END IF;
    NEW.status := 'waiting_limit';
    NEW.waiting_for := jsonb_build_object('limit', room);
    NEW.wake_at := NULL;
    NEW.lease_owner := NULL;
    NEW.lease_expires_at := NULL;
    NEW.lease_epoch := OLD.lease_epoch;
    NEW.graph_version := OLD.graph_version;
    -- The claim that took it has a slot to spare: the daemons claim again.
    PERFORM pg_notify('orchestrator_runs_v1', NEW.run_id);
    RETURN NEW;
END $$;

--
-- Name: orchestrator_project_room(); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.orchestrator_project_room() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM runs WHERE status = 'waiting_limit' AND wake_at IS NULL
               AND waiting_for ->> 'limit' = 'project:' || NEW.project) THEN
        PERFORM orchestrator_grant_room(NEW.project);
    END IF;
    RETURN NULL;
END $$;

--
-- Name: orchestrator_project_taken(text, text, boolean); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.orchestrator_project_taken(p_project text, p_run_id text, p_started boolean) RETURNS bigint
    LANGUAGE sql STABLE
    AS $$
    SELECT (SELECT count(*) FROM runs WHERE status = 'running' AND project = p_project)
         + CASE WHEN p_started THEN 0 ELSE (
               SELECT count(*) FROM runs WHERE status = 'waiting_limit' AND wake_at IS NOT NULL
                 AND waiting_for ->> 'limit' = 'project:' || p_project AND run_id <> p_run_id)
           END
$$;

--
-- Name: orchestrator_put(text, bigint, interval, boolean, bigint, text, jsonb, bytea[], bytea[], jsonb, integer, boolean); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.orchestrator_put(p_run_id text, p_epoch bigint, p_ttl interval, p_consume boolean, p_approval_id bigint, p_thread_id text, p_rows jsonb, p_write_blobs bytea[], p_blob_values bytea[], p_state jsonb, p_step integer, p_flush boolean) RETURNS void
    LANGUAGE plpgsql
    AS $$
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

--
-- Name: runs; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.runs (
    run_id text NOT NULL,
    project text NOT NULL,
    status text DEFAULT 'queued'::text NOT NULL,
    payload jsonb DEFAULT '{}'::jsonb NOT NULL,
    result jsonb,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    workflow text DEFAULT 'production'::text NOT NULL,
    graph_version text,
    error jsonb,
    attempt integer DEFAULT 0 NOT NULL,
    lease_owner text,
    lease_expires_at timestamp with time zone,
    lease_epoch bigint DEFAULT 0 NOT NULL,
    wake_at timestamp with time zone,
    waiting_for jsonb,
    priority integer DEFAULT 0 NOT NULL,
    trace_context jsonb,
    schedule_id text,
    schedule_fire_time timestamp with time zone,
    idempotency_key text,
    request_digest text,
    forked_from text,
    forked_from_checkpoint text,
    webhook_url text,
    CONSTRAINT runs_idempotency_key_length CHECK (((length(idempotency_key) >= 1) AND (length(idempotency_key) <= 200))),
    CONSTRAINT runs_project_slug CHECK ((project ~ '^[a-z0-9][a-z0-9_-]{0,62}$'::text)),
    CONSTRAINT runs_webhook_url_length CHECK ((length(webhook_url) <= 2048))
);

--
-- Name: orchestrator_record_notification(public.runs, text, text, timestamp with time zone, text, jsonb); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.orchestrator_record_notification(p_run public.runs, p_event text, p_key text, p_due timestamp with time zone, p_message text, p_details jsonb) RETURNS void
    LANGUAGE plpgsql
    AS $$
DECLARE
    made BIGINT;
BEGIN
    INSERT INTO artifacts (run_id, type, metadata, idempotency_key, status)
    VALUES (p_run.run_id, 'notification',
            jsonb_strip_nulls(jsonb_build_object(
                'event', p_event, 'project', p_run.project, 'due_at', p_due,
                'message', p_message, 'path', '/console/runs/' || p_run.run_id) || p_details),
            p_run.run_id || ':notification:' || p_key, 'pending')
    ON CONFLICT (idempotency_key) DO NOTHING
    RETURNING id INTO made;
    IF made IS NOT NULL THEN
        INSERT INTO notification_outbox (artifact_id, due_at) VALUES (made, p_due);
        PERFORM pg_notify('orchestrator_notifications_v1', '');
    END IF;
END $$;

--
-- Name: orchestrator_release_ended(); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.orchestrator_release_ended() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    DELETE FROM flow_slots WHERE run_id = NEW.run_id;
    RETURN NULL;
END $$;

--
-- Name: orchestrator_settle_notification(); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.orchestrator_settle_notification() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    PERFORM 1 FROM artifacts WHERE id = NEW.artifact_id FOR UPDATE;
    UPDATE artifacts a SET status = s.status
    FROM (SELECT CASE
                     WHEN bool_and(delivered_at IS NOT NULL) THEN 'delivered'
                     WHEN bool_and(delivered_at IS NOT NULL OR gave_up_at IS NOT NULL)
                         THEN 'undelivered'
                     ELSE 'sending'
                 END AS status
          FROM notification_deliveries WHERE artifact_id = NEW.artifact_id) s
    WHERE a.id = NEW.artifact_id AND a.status IS DISTINCT FROM s.status;
    RETURN NULL;
END $$;

--
-- Name: orchestrator_slots_held(text); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.orchestrator_slots_held(p_limit text) RETURNS integer
    LANGUAGE sql STABLE
    AS $$
    SELECT count(*)::int FROM flow_slots s JOIN runs r ON r.run_id = s.run_id
    WHERE s.limit_name = p_limit AND r.status NOT IN ('published', 'failed', 'cancelled')
$$;

--
-- Name: orchestrator_slots_released(); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.orchestrator_slots_released() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    -- In name order: two releases touching the same limits lock them alike.
    PERFORM orchestrator_grant_slots(limit_name)
    FROM (SELECT DISTINCT limit_name FROM released ORDER BY limit_name) freed;
    RETURN NULL;
END $$;

--
-- Name: orchestrator_take_request(text); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.orchestrator_take_request(p_limit text) RETURNS double precision
    LANGUAGE plpgsql
    AS $$
DECLARE
    found_limit flow_limits;
    at TIMESTAMPTZ;
    kept TIMESTAMPTZ[];
BEGIN
    SELECT * INTO found_limit FROM flow_limits WHERE name = p_limit;
    IF NOT FOUND OR (found_limit.requests IS NULL
                     AND coalesce(found_limit.paused_until <= clock_timestamp(), true)) THEN
        RETURN 0;  -- no window to keep, and no pause: no lock either
    END IF;
    SELECT * INTO found_limit FROM flow_limits WHERE name = p_limit FOR UPDATE;
    at := clock_timestamp();
    IF found_limit.paused_until > at THEN
        RETURN extract(epoch FROM found_limit.paused_until - at);
    END IF;
    IF found_limit.requests IS NULL THEN
        RETURN 0;
    END IF;
    kept := ARRAY(SELECT sent FROM unnest(found_limit.recent) sent
                  WHERE sent > at - found_limit.per ORDER BY sent);
    IF cardinality(kept) >= found_limit.requests THEN
        RETURN extract(epoch FROM
            kept[cardinality(kept) - found_limit.requests + 1] + found_limit.per - at);
    END IF;
    UPDATE flow_limits SET recent = kept || at WHERE name = p_limit;
    RETURN 0;
END $$;

--
-- Name: orchestrator_take_slot(text, text, text); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.orchestrator_take_slot(p_limit text, p_run_id text, p_key text) RETURNS boolean
    LANGUAGE plpgsql
    AS $$
DECLARE
    cap INT;
BEGIN
    IF EXISTS (SELECT 1 FROM flow_slots
               WHERE limit_name = p_limit AND run_id = p_run_id AND key = p_key) THEN
        RETURN true;
    END IF;
    SELECT concurrent INTO cap FROM flow_limits WHERE name = p_limit;
    IF cap IS NULL THEN
        RETURN true;  -- no limit of jobs in flight: no lock either
    END IF;
    SELECT concurrent INTO cap FROM flow_limits WHERE name = p_limit FOR UPDATE;
    IF cap IS NULL THEN
        RETURN true;
    END IF;
    IF orchestrator_slots_held(p_limit) >= cap THEN
        RETURN false;
    END IF;
    INSERT INTO flow_slots (limit_name, run_id, key) VALUES (p_limit, p_run_id, p_key);
    RETURN true;
END $$;

--
-- Name: orchestrator_void_approvals(); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.orchestrator_void_approvals() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    UPDATE hitl_approvals SET consumed_at = NOW(), voided_at = NOW(),
        void_reason = format('voided: run %s left pause %s unanswered (now %s)',
                             NEW.run_id, coalesce(pause_id::text, '(unnumbered)'), NEW.status)
    WHERE run_id = NEW.run_id AND consumed_at IS NULL
      AND (NEW.status NOT LIKE 'pending\_%'
           OR pause_id IS DISTINCT FROM (NEW.waiting_for ->> 'pause_id')::bigint);
    RETURN NULL;
END $$;

--
-- Name: orchestrator_worker_runs(text, text); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.orchestrator_worker_runs(p_workflow text, p_version text) RETURNS boolean
    LANGUAGE sql STABLE
    AS $$
    SELECT EXISTS (
        SELECT 1 FROM workers
        WHERE live_until > NOW() AND workflows ? p_workflow
          AND (p_version IS NULL OR workflows ->> p_workflow = p_version))
$$;

--
-- Name: api_tokens; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.api_tokens (
    id bigint NOT NULL,
    name text NOT NULL,
    role text NOT NULL,
    secret_hash text NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    revoked_at timestamp with time zone,
    CONSTRAINT api_tokens_name CHECK ((name ~ '^[A-Za-z0-9][A-Za-z0-9_.@-]{0,62}$'::text)),
    CONSTRAINT api_tokens_role CHECK ((role = ANY (ARRAY['viewer'::text, 'approver'::text, 'admin'::text])))
);

--
-- Name: api_tokens_id_seq; Type: SEQUENCE; Schema: public; Owner: -
--

CREATE SEQUENCE public.api_tokens_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;

--
-- Name: api_tokens_id_seq; Type: SEQUENCE OWNED BY; Schema: public; Owner: -
--

ALTER SEQUENCE public.api_tokens_id_seq OWNED BY public.api_tokens.id;

--
-- Name: artifacts; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.artifacts (
    id bigint NOT NULL,
    run_id text NOT NULL,
    type text NOT NULL,
    provider text,
    persona text,
    url text,
    metadata jsonb DEFAULT '{}'::jsonb NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    idempotency_key text,
    status text DEFAULT 'done'::text NOT NULL,
    provider_job_id text
);

--
-- Name: artifacts_id_seq; Type: SEQUENCE; Schema: public; Owner: -
--

CREATE SEQUENCE public.artifacts_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;

--
-- Name: artifacts_id_seq; Type: SEQUENCE OWNED BY; Schema: public; Owner: -
--

ALTER SEQUENCE public.artifacts_id_seq OWNED BY public.artifacts.id;

--
-- Name: checkpoint_blobs; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.checkpoint_blobs (
    thread_id text NOT NULL,
    checkpoint_ns text DEFAULT ''::text NOT NULL,
    channel text NOT NULL,
    version text NOT NULL,
    type text NOT NULL,
    blob bytea
);

--
-- Name: checkpoint_migrations; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.checkpoint_migrations (
    v integer NOT NULL
);

--
-- Name: checkpoint_writes; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.checkpoint_writes (
    thread_id text NOT NULL,
    checkpoint_ns text DEFAULT ''::text NOT NULL,
    checkpoint_id text NOT NULL,
    task_id text NOT NULL,
    idx integer NOT NULL,
    channel text NOT NULL,
    type text,
    blob bytea NOT NULL,
    task_path text DEFAULT ''::text NOT NULL
);

--
-- Name: checkpoints; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.checkpoints (
    thread_id text NOT NULL,
    checkpoint_ns text DEFAULT ''::text NOT NULL,
    checkpoint_id text NOT NULL,
    parent_checkpoint_id text,
    type text,
    checkpoint jsonb NOT NULL,
    metadata jsonb DEFAULT '{}'::jsonb NOT NULL
);

--
-- Name: console_sessions; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.console_sessions (
    id_hash text NOT NULL,
    name text NOT NULL,
    role text NOT NULL,
    token_id bigint,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    expires_at timestamp with time zone NOT NULL,
    revoked_at timestamp with time zone,
    CONSTRAINT console_sessions_role_check CHECK ((role = ANY (ARRAY['viewer'::text, 'approver'::text, 'admin'::text])))
);

--
-- Name: flow_limits; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.flow_limits (
    name text NOT NULL,
    concurrent integer,
    requests integer,
    per interval,
    recent timestamp with time zone[] DEFAULT '{}'::timestamp with time zone[] NOT NULL,
    paused_until timestamp with time zone,
    paused_by text,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT flow_limits_concurrent CHECK ((concurrent > 0)),
    CONSTRAINT flow_limits_per CHECK ((per > '00:00:00'::interval)),
    CONSTRAINT flow_limits_requests CHECK ((requests > 0)),
    CONSTRAINT flow_limits_window CHECK (((requests IS NULL) = (per IS NULL)))
);

--
-- Name: flow_slots; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.flow_slots (
    limit_name text NOT NULL,
    run_id text NOT NULL,
    key text NOT NULL,
    acquired_at timestamp with time zone DEFAULT now() NOT NULL
);

--
-- Name: hitl_approvals; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.hitl_approvals (
    id bigint NOT NULL,
    run_id text NOT NULL,
    gate text NOT NULL,
    approver text,
    approver_ip text,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    decision text DEFAULT 'approved'::text NOT NULL,
    comment text,
    payload jsonb,
    consumed_at timestamp with time zone,
    pause_id bigint,
    voided_at timestamp with time zone,
    void_reason text,
    CONSTRAINT hitl_approvals_decision_check CHECK ((decision = ANY (ARRAY['approved'::text, 'rejected'::text])))
);

--
-- Name: hitl_approvals_id_seq; Type: SEQUENCE; Schema: public; Owner: -
--

CREATE SEQUENCE public.hitl_approvals_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;

--
-- Name: hitl_approvals_id_seq; Type: SEQUENCE OWNED BY; Schema: public; Owner: -
--

ALTER SEQUENCE public.hitl_approvals_id_seq OWNED BY public.hitl_approvals.id;

--
-- Name: notification_deliveries; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.notification_deliveries (
    id bigint NOT NULL,
    artifact_id bigint NOT NULL,
    channel text NOT NULL,
    due_at timestamp with time zone NOT NULL,
    attempts integer DEFAULT 0 NOT NULL,
    next_attempt_at timestamp with time zone NOT NULL,
    last_attempt_at timestamp with time zone,
    delivered_at timestamp with time zone,
    last_error text,
    gave_up_at timestamp with time zone,
    created_at timestamp with time zone DEFAULT now() NOT NULL
);

--
-- Name: notification_deliveries_id_seq; Type: SEQUENCE; Schema: public; Owner: -
--

CREATE SEQUENCE public.notification_deliveries_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;

--
-- Name: notification_deliveries_id_seq; Type: SEQUENCE OWNED BY; Schema: public; Owner: -
--

ALTER SEQUENCE public.notification_deliveries_id_seq OWNED BY public.notification_deliveries.id;

--
-- Name: notification_outbox; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.notification_outbox (
    artifact_id bigint NOT NULL,
    due_at timestamp with time zone NOT NULL
);

--
-- Name: orchestration_checkpoints; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.orchestration_checkpoints (
    run_id text NOT NULL,
    state jsonb NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    checkpoint_id text,
    step integer
);

--
-- Name: orchestrator_migrations; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.orchestrator_migrations (
    version integer NOT NULL,
    name text NOT NULL,
    applied_at timestamp with time zone DEFAULT now() NOT NULL
);

--
-- Name: schedules; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.schedules (
    schedule_id text NOT NULL,
    cron text NOT NULL,
    timezone text NOT NULL,
    project text NOT NULL,
    workflow text NOT NULL,
    payload jsonb NOT NULL,
    overlap text NOT NULL,
    catchup interval NOT NULL,
    paused boolean DEFAULT false NOT NULL,
    next_fire_at timestamp with time zone NOT NULL,
    buffered_fire_at timestamp with time zone,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT schedules_overlap_check CHECK ((overlap = ANY (ARRAY['skip'::text, 'allow'::text, 'buffer_one'::text])))
);

--
-- Name: webhook_events; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.webhook_events (
    id bigint NOT NULL,
    provider text NOT NULL,
    signature_status text NOT NULL,
    received_at timestamp with time zone DEFAULT now() NOT NULL,
    delivery_id text,
    headers jsonb DEFAULT '{}'::jsonb NOT NULL,
    payload jsonb,
    processed_at timestamp with time zone,
    run_id text,
    raw_body bytea,
    job_id text,
    body_sha256 bytea,
    callback_key text,
    CONSTRAINT webhook_events_callback_key_length CHECK ((length(callback_key) <= 300)),
    CONSTRAINT webhook_events_signature_status_check CHECK ((signature_status = ANY (ARRAY['valid'::text, 'invalid'::text, 'unsigned'::text, 'verified_by_fetch'::text])))
);

--
-- Name: webhook_events_id_seq; Type: SEQUENCE; Schema: public; Owner: -
--

CREATE SEQUENCE public.webhook_events_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;

--
-- Name: webhook_events_id_seq; Type: SEQUENCE OWNED BY; Schema: public; Owner: -
--

ALTER SEQUENCE public.webhook_events_id_seq OWNED BY public.webhook_events.id;

--
-- Name: workers; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.workers (
    worker_id text NOT NULL,
    host text NOT NULL,
    pid integer NOT NULL,
    version text NOT NULL,
    workflows jsonb NOT NULL,
    concurrency integer NOT NULL,
    runs_held integer DEFAULT 0 NOT NULL,
    started_at timestamp with time zone DEFAULT now() NOT NULL,
    last_seen timestamp with time zone DEFAULT now() NOT NULL,
    live_until timestamp with time zone NOT NULL
);

--
-- Name: api_tokens id; Type: DEFAULT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.api_tokens ALTER COLUMN id SET DEFAULT nextval('public.api_tokens_id_seq'::regclass);

--
-- Name: artifacts id; Type: DEFAULT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.artifacts ALTER COLUMN id SET DEFAULT nextval('public.artifacts_id_seq'::regclass);

--
-- Name: hitl_approvals id; Type: DEFAULT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.hitl_approvals ALTER COLUMN id SET DEFAULT nextval('public.hitl_approvals_id_seq'::regclass);

--
-- Name: notification_deliveries id; Type: DEFAULT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.notification_deliveries ALTER COLUMN id SET DEFAULT nextval('public.notification_deliveries_id_seq'::regclass);

--
-- Name: webhook_events id; Type: DEFAULT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.webhook_events ALTER COLUMN id SET DEFAULT nextval('public.webhook_events_id_seq'::regclass);

--
-- Name: api_tokens api_tokens_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.api_tokens
    ADD CONSTRAINT api_tokens_pkey PRIMARY KEY (id);

--
-- Name: artifacts artifacts_idempotency_key_key; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.artifacts
    ADD CONSTRAINT artifacts_idempotency_key_key UNIQUE (idempotency_key);

--
-- Name: artifacts artifacts_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.artifacts
    ADD CONSTRAINT artifacts_pkey PRIMARY KEY (id);

--
-- Name: checkpoint_blobs checkpoint_blobs_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.checkpoint_blobs
    ADD CONSTRAINT checkpoint_blobs_pkey PRIMARY KEY (thread_id, checkpoint_ns, channel, version);

--
-- Name: checkpoint_migrations checkpoint_migrations_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.checkpoint_migrations
    ADD CONSTRAINT checkpoint_migrations_pkey PRIMARY KEY (v);

--
-- Name: checkpoint_writes checkpoint_writes_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.checkpoint_writes
    ADD CONSTRAINT checkpoint_writes_pkey PRIMARY KEY (thread_id, checkpoint_ns, checkpoint_id, task_id, idx);

--
-- Name: checkpoints checkpoints_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.checkpoints
    ADD CONSTRAINT checkpoints_pkey PRIMARY KEY (thread_id, checkpoint_ns, checkpoint_id);

--
-- Name: console_sessions console_sessions_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.console_sessions
    ADD CONSTRAINT console_sessions_pkey PRIMARY KEY (id_hash);

--
-- Name: flow_limits flow_limits_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.flow_limits
    ADD CONSTRAINT flow_limits_pkey PRIMARY KEY (name);

--
-- Name: flow_slots flow_slots_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.flow_slots
    ADD CONSTRAINT flow_slots_pkey PRIMARY KEY (limit_name, run_id, key);

--
-- Name: hitl_approvals hitl_approvals_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.hitl_approvals
    ADD CONSTRAINT hitl_approvals_pkey PRIMARY KEY (id);

--
-- Name: notification_deliveries notification_deliveries_artifact_id_channel_key; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.notification_deliveries
    ADD CONSTRAINT notification_deliveries_artifact_id_channel_key UNIQUE (artifact_id, channel);

--
-- Name: notification_deliveries notification_deliveries_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.notification_deliveries
    ADD CONSTRAINT notification_deliveries_pkey PRIMARY KEY (id);

--
-- Name: notification_outbox notification_outbox_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.notification_outbox
    ADD CONSTRAINT notification_outbox_pkey PRIMARY KEY (artifact_id);

--
-- Name: orchestration_checkpoints orchestration_checkpoints_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.orchestration_checkpoints
    ADD CONSTRAINT orchestration_checkpoints_pkey PRIMARY KEY (run_id);

--
-- Name: orchestrator_migrations orchestrator_migrations_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.orchestrator_migrations
    ADD CONSTRAINT orchestrator_migrations_pkey PRIMARY KEY (version);

--
-- Name: runs runs_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.runs
    ADD CONSTRAINT runs_pkey PRIMARY KEY (run_id);

--
-- Name: schedules schedules_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.schedules
    ADD CONSTRAINT schedules_pkey PRIMARY KEY (schedule_id);

--
-- Name: webhook_events webhook_events_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.webhook_events
    ADD CONSTRAINT webhook_events_pkey PRIMARY KEY (id);

--
-- Name: webhook_events webhook_events_provider_delivery_id_key; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.webhook_events
    ADD CONSTRAINT webhook_events_provider_delivery_id_key UNIQUE (provider, delivery_id);

--
-- Name: workers workers_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.workers
    ADD CONSTRAINT workers_pkey PRIMARY KEY (worker_id);

--
-- Name: api_tokens_live_name; Type: INDEX; Schema: public; Owner: -
--

CREATE UNIQUE INDEX api_tokens_live_name ON public.api_tokens USING btree (name) WHERE (revoked_at IS NULL);

--
-- Name: artifacts_provider_job; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX artifacts_provider_job ON public.artifacts USING btree (provider, provider_job_id) WHERE (provider_job_id IS NOT NULL);

--
-- Name: artifacts_run_created; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX artifacts_run_created ON public.artifacts USING btree (run_id, created_at);

--
-- Name: checkpoint_blobs_thread_id_idx; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX checkpoint_blobs_thread_id_idx ON public.checkpoint_blobs USING btree (thread_id);

--
-- Name: checkpoint_writes_thread_id_idx; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX checkpoint_writes_thread_id_idx ON public.checkpoint_writes USING btree (thread_id);

--
-- Name: checkpoints_thread_id_idx; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX checkpoints_thread_id_idx ON public.checkpoints USING btree (thread_id);

--
-- Name: console_sessions_expires; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX console_sessions_expires ON public.console_sessions USING btree (expires_at);

--
-- Name: flow_slots_run; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX flow_slots_run ON public.flow_slots USING btree (run_id);

--
-- Name: hitl_approvals_created; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX hitl_approvals_created ON public.hitl_approvals USING btree (created_at DESC);

--
-- Name: hitl_approvals_one_per_pause; Type: INDEX; Schema: public; Owner: -
--

CREATE UNIQUE INDEX hitl_approvals_one_per_pause ON public.hitl_approvals USING btree (run_id, pause_id);

--
-- Name: hitl_approvals_run; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX hitl_approvals_run ON public.hitl_approvals USING btree (run_id, created_at);

--
-- Name: hitl_approvals_unconsumed; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX hitl_approvals_unconsumed ON public.hitl_approvals USING btree (run_id, gate) WHERE (consumed_at IS NULL);

--
-- Name: notification_deliveries_owed; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX notification_deliveries_owed ON public.notification_deliveries USING btree (channel, next_attempt_at) WHERE ((delivered_at IS NULL) AND (gave_up_at IS NULL));

--
-- Name: notification_outbox_due; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX notification_outbox_due ON public.notification_outbox USING btree (due_at);

--
-- Name: runs_at_gates; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX runs_at_gates ON public.runs USING btree (updated_at, run_id) WHERE (status ~~ 'pending\_%'::text);

--
-- Name: runs_claimable; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX runs_claimable ON public.runs USING btree (priority DESC, created_at) WHERE (status <> ALL (ARRAY['published'::text, 'failed'::text, 'cancelled'::text]));

--
-- Name: runs_created; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX runs_created ON public.runs USING btree (created_at DESC, run_id DESC);

--
-- Name: runs_gate_deadlines; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX runs_gate_deadlines ON public.runs USING btree (wake_at) WHERE ((status ~~ 'pending\_%'::text) AND (wake_at IS NOT NULL));

--
-- Name: runs_idempotency; Type: INDEX; Schema: public; Owner: -
--

CREATE UNIQUE INDEX runs_idempotency ON public.runs USING btree (project, idempotency_key) WHERE (idempotency_key IS NOT NULL);

--
-- Name: runs_limit_due; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX runs_limit_due ON public.runs USING btree (wake_at) WHERE (status = 'waiting_limit'::text);

--
-- Name: runs_limit_waits; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX runs_limit_waits ON public.runs USING btree (((waiting_for ->> 'limit'::text)), priority DESC, created_at) WHERE ((status = 'waiting_limit'::text) AND (wake_at IS NULL));

--
-- Name: runs_project_created; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX runs_project_created ON public.runs USING btree (project, created_at DESC);

--
-- Name: runs_queued; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX runs_queued ON public.runs USING btree (priority DESC, created_at) WHERE (status = 'queued'::text);

--
-- Name: runs_running_by_project; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX runs_running_by_project ON public.runs USING btree (project) WHERE (status = 'running'::text);

--
-- Name: runs_schedule_fire; Type: INDEX; Schema: public; Owner: -
--

CREATE UNIQUE INDEX runs_schedule_fire ON public.runs USING btree (schedule_id, schedule_fire_time) WHERE (schedule_id IS NOT NULL);

--
-- Name: runs_status_created; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX runs_status_created ON public.runs USING btree (status, created_at);

--
-- Name: runs_timers; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX runs_timers ON public.runs USING btree (wake_at) WHERE (status = 'waiting_timer'::text);

--
-- Name: schedules_buffered; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX schedules_buffered ON public.schedules USING btree (buffered_fire_at) WHERE ((buffered_fire_at IS NOT NULL) AND (NOT paused));

--
-- Name: schedules_due; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX schedules_due ON public.schedules USING btree (next_fire_at) WHERE (NOT paused);

--
-- Name: webhook_events_callback_key; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX webhook_events_callback_key ON public.webhook_events USING btree (provider, callback_key) WHERE (callback_key IS NOT NULL);

--
-- Name: webhook_events_received; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX webhook_events_received ON public.webhook_events USING btree (received_at DESC);

--
-- Name: webhook_events_run; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX webhook_events_run ON public.webhook_events USING btree (run_id) WHERE (run_id IS NOT NULL);

--
-- Name: webhook_events_signed_body; Type: INDEX; Schema: public; Owner: -
--

CREATE UNIQUE INDEX webhook_events_signed_body ON public.webhook_events USING btree (provider, body_sha256) WHERE (body_sha256 IS NOT NULL);

--
-- Name: webhook_events_unprocessed; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX webhook_events_unprocessed ON public.webhook_events USING btree (run_id) WHERE (processed_at IS NULL);

--
-- Name: flow_slots flow_slots_released; Type: TRIGGER; Schema: public; Owner: -
--

CREATE TRIGGER flow_slots_released AFTER DELETE ON public.flow_slots REFERENCING OLD TABLE AS released FOR EACH STATEMENT EXECUTE FUNCTION public.orchestrator_slots_released();

--
-- Name: hitl_approvals hitl_approvals_check; Type: TRIGGER; Schema: public; Owner: -
--

CREATE TRIGGER hitl_approvals_check BEFORE INSERT ON public.hitl_approvals FOR EACH ROW EXECUTE FUNCTION public.orchestrator_check_approval();

--
-- Name: hitl_approvals hitl_approvals_notify; Type: TRIGGER; Schema: public; Owner: -
--

CREATE TRIGGER hitl_approvals_notify AFTER INSERT ON public.hitl_approvals FOR EACH ROW EXECUTE FUNCTION public.orchestrator_notify_approval();

--
-- Name: hitl_approvals hitl_approvals_notify_timeout; Type: TRIGGER; Schema: public; Owner: -
--

CREATE TRIGGER hitl_approvals_notify_timeout AFTER INSERT ON public.hitl_approvals FOR EACH ROW WHEN ((new.approver = 'system'::text)) EXECUTE FUNCTION public.orchestrator_notify_timeout();

--
-- Name: notification_deliveries notification_deliveries_settle; Type: TRIGGER; Schema: public; Owner: -
--

CREATE TRIGGER notification_deliveries_settle AFTER UPDATE OF delivered_at, gave_up_at ON public.notification_deliveries FOR EACH ROW WHEN (((old.delivered_at IS DISTINCT FROM new.delivered_at) OR (old.gave_up_at IS DISTINCT FROM new.gave_up_at))) EXECUTE FUNCTION public.orchestrator_settle_notification();

--
-- Name: runs runs_notify_insert; Type: TRIGGER; Schema: public; Owner: -
--

CREATE TRIGGER runs_notify_insert AFTER INSERT ON public.runs FOR EACH ROW WHEN (((new.status ~~ 'pending\_%'::text) OR (new.status = ANY (ARRAY['failed'::text, 'published'::text, 'cancelled'::text])))) EXECUTE FUNCTION public.orchestrator_notify_run_change();

--
-- Name: runs runs_notify_queued; Type: TRIGGER; Schema: public; Owner: -
--

CREATE TRIGGER runs_notify_queued AFTER INSERT OR UPDATE OF status ON public.runs FOR EACH ROW WHEN ((new.status = 'queued'::text)) EXECUTE FUNCTION public.orchestrator_notify_run();

--
-- Name: runs runs_notify_update; Type: TRIGGER; Schema: public; Owner: -
--

CREATE TRIGGER runs_notify_update AFTER UPDATE OF status, waiting_for ON public.runs FOR EACH ROW WHEN ((((new.status ~~ 'pending\_%'::text) OR (new.status = ANY (ARRAY['failed'::text, 'published'::text, 'cancelled'::text]))) AND ((old.status IS DISTINCT FROM new.status) OR ((old.waiting_for -> 'pause_id'::text) IS DISTINCT FROM (new.waiting_for -> 'pause_id'::text))))) EXECUTE FUNCTION public.orchestrator_notify_run_change();

--
-- Name: runs runs_park_at_limit; Type: TRIGGER; Schema: public; Owner: -
--

CREATE TRIGGER runs_park_at_limit BEFORE UPDATE OF status ON public.runs FOR EACH ROW WHEN (((new.status = 'waiting_limit'::text) AND (old.status IS DISTINCT FROM 'waiting_limit'::text))) EXECUTE FUNCTION public.orchestrator_park_at_limit();

--
-- Name: runs runs_project_limit; Type: TRIGGER; Schema: public; Owner: -
--

CREATE TRIGGER runs_project_limit BEFORE UPDATE OF status ON public.runs FOR EACH ROW WHEN (((new.status = 'running'::text) AND (old.status IS DISTINCT FROM 'running'::text))) EXECUTE FUNCTION public.orchestrator_project_limit();

--
-- Name: runs runs_project_room; Type: TRIGGER; Schema: public; Owner: -
--

CREATE TRIGGER runs_project_room AFTER UPDATE OF status ON public.runs FOR EACH ROW WHEN (((old.status = 'running'::text) AND (new.status <> 'running'::text))) EXECUTE FUNCTION public.orchestrator_project_room();

--
-- Name: runs runs_release_slots; Type: TRIGGER; Schema: public; Owner: -
--

CREATE TRIGGER runs_release_slots AFTER UPDATE OF status ON public.runs FOR EACH ROW WHEN (((new.status = ANY (ARRAY['published'::text, 'failed'::text, 'cancelled'::text])) AND (old.status IS DISTINCT FROM new.status))) EXECUTE FUNCTION public.orchestrator_release_ended();

--
-- Name: runs runs_void_approvals; Type: TRIGGER; Schema: public; Owner: -
--

CREATE TRIGGER runs_void_approvals AFTER UPDATE OF status, waiting_for ON public.runs FOR EACH ROW WHEN (((new.status <> 'running'::text) AND ((old.status IS DISTINCT FROM new.status) OR (old.waiting_for IS DISTINCT FROM new.waiting_for)))) EXECUTE FUNCTION public.orchestrator_void_approvals();

--
-- Name: schedules schedules_notify; Type: TRIGGER; Schema: public; Owner: -
--

CREATE TRIGGER schedules_notify AFTER INSERT OR UPDATE OF paused ON public.schedules FOR EACH ROW WHEN ((NOT new.paused)) EXECUTE FUNCTION public.orchestrator_notify_schedule();

--
-- Name: artifacts artifacts_run_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.artifacts
    ADD CONSTRAINT artifacts_run_id_fkey FOREIGN KEY (run_id) REFERENCES public.runs(run_id) ON DELETE CASCADE;

--
-- Name: console_sessions console_sessions_token_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.console_sessions
    ADD CONSTRAINT console_sessions_token_id_fkey FOREIGN KEY (token_id) REFERENCES public.api_tokens(id) ON DELETE CASCADE;

--
-- Name: flow_slots flow_slots_limit_name_fkey; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.flow_slots
    ADD CONSTRAINT flow_slots_limit_name_fkey FOREIGN KEY (limit_name) REFERENCES public.flow_limits(name) ON DELETE CASCADE;

--
-- Name: flow_slots flow_slots_run_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.flow_slots
    ADD CONSTRAINT flow_slots_run_id_fkey FOREIGN KEY (run_id) REFERENCES public.runs(run_id) ON DELETE CASCADE;

--
-- Name: hitl_approvals hitl_approvals_run_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.hitl_approvals
    ADD CONSTRAINT hitl_approvals_run_id_fkey FOREIGN KEY (run_id) REFERENCES public.runs(run_id) ON DELETE CASCADE;

--
-- Name: notification_deliveries notification_deliveries_artifact_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.notification_deliveries
    ADD CONSTRAINT notification_deliveries_artifact_id_fkey FOREIGN KEY (artifact_id) REFERENCES public.artifacts(id) ON DELETE CASCADE;

--
-- Name: notification_outbox notification_outbox_artifact_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.notification_outbox
    ADD CONSTRAINT notification_outbox_artifact_id_fkey FOREIGN KEY (artifact_id) REFERENCES public.artifacts(id) ON DELETE CASCADE;

--
-- Name: orchestration_checkpoints orchestration_checkpoints_run_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.orchestration_checkpoints
    ADD CONSTRAINT orchestration_checkpoints_run_id_fkey FOREIGN KEY (run_id) REFERENCES public.runs(run_id) ON DELETE CASCADE;

--
-- Name: webhook_events webhook_events_run_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.webhook_events
    ADD CONSTRAINT webhook_events_run_id_fkey FOREIGN KEY (run_id) REFERENCES public.runs(run_id) ON DELETE SET NULL;
