-- Schedules (docs/time.md#schedules): a cron expression in a timezone that starts
-- runs of one workflow with one stored input. Exactly one run per fire time: the
-- unique index on runs (schedule_id, schedule_fire_time), which every insert of a
-- scheduled run meets with ON CONFLICT DO NOTHING. Additive: it only creates its
-- own table and adds two columns to runs, whatever 0011 added.
CREATE TABLE schedules (
    schedule_id      TEXT PRIMARY KEY,
    cron             TEXT NOT NULL,
    timezone         TEXT NOT NULL,
    project          TEXT NOT NULL,
    workflow         TEXT NOT NULL,
    payload          JSONB NOT NULL,
    overlap          TEXT NOT NULL CHECK (overlap IN ('skip', 'allow', 'buffer_one')),
    catchup          INTERVAL NOT NULL,
    paused           BOOLEAN NOT NULL DEFAULT false,
    -- the first fire time not yet dealt with (started, skipped or missed)
    next_fire_at     TIMESTAMPTZ NOT NULL,
    -- overlap buffer_one: the one fire time held until the schedule's live runs end
    buffered_fire_at TIMESTAMPTZ,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    updated_at       TIMESTAMPTZ NOT NULL DEFAULT NOW()
);
-- What the daemons' firing pass reads: schedules due, and those holding a start.
CREATE INDEX schedules_due ON schedules (next_fire_at) WHERE NOT paused;
CREATE INDEX schedules_buffered ON schedules (buffered_fire_at)
    WHERE buffered_fire_at IS NOT NULL AND NOT paused;

-- No foreign key: a deleted schedule's runs keep saying which schedule started them.
ALTER TABLE runs ADD COLUMN schedule_id TEXT, ADD COLUMN schedule_fire_time TIMESTAMPTZ;
CREATE UNIQUE INDEX runs_schedule_fire ON runs (schedule_id, schedule_fire_time)
    WHERE schedule_id IS NOT NULL;

-- Wake the daemons for a new or resumed schedule: it may fire before their next poll.
CREATE FUNCTION orchestrator_notify_schedule() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('orchestrator_schedules_v1', NEW.schedule_id);
    RETURN NULL;
END $$;
CREATE TRIGGER schedules_notify AFTER INSERT OR UPDATE OF paused ON schedules
    FOR EACH ROW WHEN (NOT NEW.paused) EXECUTE FUNCTION orchestrator_notify_schedule();
