-- Notifications (docs/time.md#notifications). A run reaching a gate, reminded before
-- its deadline, timing out there, failing or publishing is recorded as an artifact of
-- type 'notification' by the triggers below, in the transaction that changes the run
-- (pause_run, finish_run, fail_run, a system approval, plain SQL): nothing can change a
-- run without its notification, and a rolled-back change leaves none. Each new one
-- also gets a row in notification_outbox, due when the event is (a reminder: at its
-- time). A daemon takes the due ones and hands each to the channels it is configured
-- with, one notification_deliveries row per channel, in one transaction; it delivers
-- each at least once, retrying with backoff, and gives up after a number of attempts
-- or an age. The artifact's status follows: pending, then sending, then delivered or
-- undelivered; skipped (a reminder for a pause already over), recorded (no channel).
-- Additive: two tables and triggers of their own.

CREATE TABLE notification_outbox (
    artifact_id BIGINT PRIMARY KEY REFERENCES artifacts (id) ON DELETE CASCADE,
    due_at      TIMESTAMPTZ NOT NULL
);
CREATE INDEX notification_outbox_due ON notification_outbox (due_at);

CREATE TABLE notification_deliveries (
    id              BIGSERIAL PRIMARY KEY,
    artifact_id     BIGINT NOT NULL REFERENCES artifacts (id) ON DELETE CASCADE,
    -- a name without secrets: 'webhook', or an Apprise URL's scheme and Apprise's id of it
    channel         TEXT NOT NULL,
    due_at          TIMESTAMPTZ NOT NULL,
    attempts        INT NOT NULL DEFAULT 0,
    -- while an attempt is under way: when its sender counts as dead (its lease)
    next_attempt_at TIMESTAMPTZ NOT NULL,
    last_attempt_at TIMESTAMPTZ,
    delivered_at    TIMESTAMPTZ,
    last_error      TEXT,
    gave_up_at      TIMESTAMPTZ,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    UNIQUE (artifact_id, channel)
);
-- What each channel's sender claims: its deliveries still owed, by due time.
CREATE INDEX notification_deliveries_owed ON notification_deliveries (channel, next_attempt_at)
    WHERE delivered_at IS NULL AND gave_up_at IS NULL;

-- One notification, once per key (`<run_id>:notification:<key>`), with its outbox row.
CREATE FUNCTION orchestrator_record_notification(
    p_run runs, p_event TEXT, p_key TEXT, p_due TIMESTAMPTZ, p_message TEXT, p_details JSONB
) RETURNS void LANGUAGE plpgsql AS $$
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

-- A run paused at a gate (a new pause: its pause_id changed), with its reminders, or
-- failed, published or cancelled. A reminder that is not a time is left out with a warning: the
-- pause itself must go through.
CREATE FUNCTION orchestrator_notify_run_change() RETURNS trigger LANGUAGE plpgsql AS $$
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
CREATE TRIGGER runs_notify_insert AFTER INSERT ON runs
    FOR EACH ROW WHEN (NEW.status LIKE 'pending\_%' OR NEW.status IN ('failed', 'published', 'cancelled'))
    EXECUTE FUNCTION orchestrator_notify_run_change();
CREATE TRIGGER runs_notify_update AFTER UPDATE OF status, waiting_for ON runs
    FOR EACH ROW
    WHEN ((NEW.status LIKE 'pending\_%' OR NEW.status IN ('failed', 'published', 'cancelled'))
          AND (OLD.status IS DISTINCT FROM NEW.status
               OR OLD.waiting_for -> 'pause_id' IS DISTINCT FROM NEW.waiting_for -> 'pause_id'))
    EXECUTE FUNCTION orchestrator_notify_run_change();

-- The system's decision at a gate's deadline (an approval by 'system'): a timeout.
CREATE FUNCTION orchestrator_notify_timeout() RETURNS trigger LANGUAGE plpgsql AS $$
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
CREATE TRIGGER hitl_approvals_notify_timeout AFTER INSERT ON hitl_approvals
    FOR EACH ROW WHEN (NEW.approver = 'system') EXECUTE FUNCTION orchestrator_notify_timeout();

-- A notification's status follows its deliveries. The artifact's row is locked first:
-- two channels settling at once take turns, and the second sees the first's outcome.
CREATE FUNCTION orchestrator_settle_notification() RETURNS trigger LANGUAGE plpgsql AS $$
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
CREATE TRIGGER notification_deliveries_settle AFTER UPDATE OF delivered_at, gave_up_at
    ON notification_deliveries
    FOR EACH ROW
    WHEN (OLD.delivered_at IS DISTINCT FROM NEW.delivered_at
          OR OLD.gave_up_at IS DISTINCT FROM NEW.gave_up_at)
    EXECUTE FUNCTION orchestrator_settle_notification();
