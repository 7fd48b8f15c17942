-- Limits that hold across every daemon (docs/flow-control.md#limits), kept here
-- rather than in any process, so that three daemons together stay within what
-- one provider or one project allows:
-- - a provider's jobs in flight (`concurrent` slots, held in flow_slots from
--   before a job is submitted until the step learns it ended);
-- - a provider's requests: at most `requests` in any window of `per`, and none
--   before `paused_until` (a 429 with a reset seen by any daemon);
-- - a project's runs executing at once (the row 'project:*', for every project):
--   a run the claim would set running beyond it is parked instead, and handed
--   room in turn when one of the project's runs stops executing.
-- Each daemon writes the rows its App and settings give at start.
CREATE TABLE flow_limits (
    name         TEXT PRIMARY KEY,  -- 'provider:<name>', or 'project:*'
    concurrent   INT CONSTRAINT flow_limits_concurrent CHECK (concurrent > 0),
    requests     INT CONSTRAINT flow_limits_requests CHECK (requests > 0),
    per          INTERVAL CONSTRAINT flow_limits_per CHECK (per > INTERVAL '0'),
    -- When the last requests were sent (at most `requests` of them): the window.
    recent       TIMESTAMPTZ[] NOT NULL DEFAULT '{}',
    paused_until TIMESTAMPTZ,
    paused_by    TEXT,  -- the worker that was answered 429
    updated_at   TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    CONSTRAINT flow_limits_window CHECK ((requests IS NULL) = (per IS NULL))
);

-- A slot is one job of a run (its step's key) counted against a limit.
CREATE TABLE flow_slots (
    limit_name  TEXT NOT NULL REFERENCES flow_limits (name) ON DELETE CASCADE,
    run_id      TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    key         TEXT NOT NULL,
    acquired_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    PRIMARY KEY (limit_name, run_id, key)
);
CREATE INDEX flow_slots_run ON flow_slots (run_id);

-- Runs parked at a limit ('waiting_limit', no wake_at), in the order slots (or
-- room in a project) go to them: priority, then age. What frees goes to the
-- first here.
CREATE INDEX runs_limit_waits ON runs ((waiting_for ->> 'limit'), priority DESC, created_at)
    WHERE status = 'waiting_limit' AND wake_at IS NULL;
-- Parked runs that are due: handed a slot (wake_at is when), or at the end of a
-- pause of their provider's requests. The claim reads them from here, as it
-- reads due timers: runs still parked, however many, cost it nothing.
CREATE INDEX runs_limit_due ON runs (wake_at) WHERE status = 'waiting_limit';
-- A project's runs executing now: what its limit counts.
CREATE INDEX runs_running_by_project ON runs (project) WHERE status = 'running';

-- The slots of a limit that count: those of runs that have not ended. A slot
-- of an ended run is free whatever became of its release.
CREATE FUNCTION orchestrator_slots_held(p_limit TEXT) RETURNS INT LANGUAGE sql STABLE AS $$
    SELECT count(*)::int FROM flow_slots s JOIN runs r ON r.run_id = s.run_id
    WHERE s.limit_name = p_limit AND r.status NOT IN ('published', 'failed', 'cancelled')
$$;

-- Take a slot of `p_limit` for job `p_key` of a run, if one is free: true when
-- the run holds it now (or held it already, or there is no limit). The limit's
-- row lock serialises every daemon's takes and releases; the count, a later
-- statement, sees whatever the lock's previous holder committed.
CREATE FUNCTION orchestrator_take_slot(p_limit TEXT, p_run_id TEXT, p_key TEXT)
RETURNS BOOLEAN LANGUAGE plpgsql AS $$
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

-- Hand the free slots of `p_limit` to the runs parked for them, best first
-- (priority, then age): each gets its slot and wake_at = now, so the claim
-- resumes it; the daemons are woken. The number handed out.
CREATE FUNCTION orchestrator_grant_slots(p_limit TEXT) RETURNS INT LANGUAGE plpgsql AS $$
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

-- A released slot (the step's own release, a run that ended, a run deleted)
-- goes on to the next run parked for its limit, in the same transaction.
CREATE FUNCTION orchestrator_slots_released() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- In name order: two releases touching the same limits lock them alike.
    PERFORM orchestrator_grant_slots(limit_name)
    FROM (SELECT DISTINCT limit_name FROM released ORDER BY limit_name) freed;
    RETURN NULL;
END $$;
CREATE TRIGGER flow_slots_released AFTER DELETE ON flow_slots
    REFERENCING OLD TABLE AS released
    FOR EACH STATEMENT EXECUTE FUNCTION orchestrator_slots_released();

-- A run that ends lets go of its slots, whichever way it ended (finished,
-- failed, cancelled), and even if its step never released them.
CREATE FUNCTION orchestrator_release_ended() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM flow_slots WHERE run_id = NEW.run_id;
    RETURN NULL;
END $$;
CREATE TRIGGER runs_release_slots AFTER UPDATE OF status ON runs FOR EACH ROW
    WHEN (NEW.status IN ('published', 'failed', 'cancelled') AND OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION orchestrator_release_ended();

-- A run parking for a slot takes one that freed since its step asked (so no
-- release is missed between the ask and the park) and is due at once.
CREATE FUNCTION orchestrator_park_at_limit() RETURNS trigger LANGUAGE plpgsql AS $$
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
CREATE TRIGGER runs_park_at_limit BEFORE UPDATE OF status ON runs FOR EACH ROW
    WHEN (NEW.status = 'waiting_limit' AND OLD.status IS DISTINCT FROM 'waiting_limit')
    EXECUTE FUNCTION orchestrator_park_at_limit();

-- Whether a request may be sent to `p_limit`'s provider now: 0, and it is
-- counted; else the seconds to wait (the pause after a 429, or until the
-- oldest request of the window leaves it). The window is exact: at most
-- `requests` in any `per`, whatever number of daemons asks.
CREATE FUNCTION orchestrator_take_request(p_limit TEXT) RETURNS FLOAT8 LANGUAGE plpgsql AS $$
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

-- How many of a project's places are taken, as `p_run_id` sees them: its runs
-- executing and, unless `p_run_id` resumes started work (which goes first), the
-- room handed to parked runs and not yet taken up, which is theirs.
CREATE FUNCTION orchestrator_project_taken(p_project TEXT, p_run_id TEXT, p_started BOOLEAN)
RETURNS BIGINT LANGUAGE sql STABLE AS $$
    SELECT (SELECT count(*) FROM runs WHERE status = 'running' AND project = p_project)
         + CASE WHEN p_started THEN 0 ELSE (
               SELECT count(*) FROM runs WHERE status = 'waiting_limit' AND wake_at IS NOT NULL
                 AND waiting_for ->> 'limit' = 'project:' || p_project AND run_id <> p_run_id)
           END
$$;

-- A project at its limit: no more of its runs are set running. A run the claim
-- would set running beyond it stays as it was, for a later claim, or, new (from
-- the queue, or handed room that another run took first), is parked for room in
-- its project ('waiting_limit', `{"limit": "project:<name>"}`): out of the
-- queue, so that no claim walks past it again, and handed room in turn
-- (orchestrator_grant_room). The count sees the runs this very claim set
-- running before this one (a row-level BEFORE trigger does) and, once the
-- project's lock is held, what other claims committed. A claim never waits for
-- the lock: one that finds it taken (another claim is setting runs of the
-- project running now) leaves the run, as two claims waiting on each other's
-- projects would deadlock. Those handing out room share the lock and so wait
-- for such a claim: a run it parks is seen by the room they hand out.
CREATE FUNCTION orchestrator_project_limit() RETURNS trigger LANGUAGE plpgsql AS $$
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
CREATE TRIGGER runs_project_limit BEFORE UPDATE OF status ON runs FOR EACH ROW
    WHEN (NEW.status = 'running' AND OLD.status IS DISTINCT FROM 'running')
    EXECUTE FUNCTION orchestrator_project_limit();

-- Hand the room a project has to the runs parked for it, best first (priority,
-- then age): wake_at = now, so the claim takes them. The number handed. (Two at
-- once may hand out one too many, or a resume take the room first: the claim
-- then parks that run again.)
CREATE FUNCTION orchestrator_grant_room(p_project TEXT) RETURNS INT LANGUAGE plpgsql AS $$
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

-- A run that stops executing leaves room in its project.
CREATE FUNCTION orchestrator_project_room() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM runs WHERE status = 'waiting_limit' AND wake_at IS NULL
               AND waiting_for ->> 'limit' = 'project:' || NEW.project) THEN
        PERFORM orchestrator_grant_room(NEW.project);
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER runs_project_room AFTER UPDATE OF status ON runs FOR EACH ROW
    WHEN (OLD.status = 'running' AND NEW.status <> 'running')
    EXECUTE FUNCTION orchestrator_project_room();
