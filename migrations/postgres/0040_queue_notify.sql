-- A finished command wakes workers only when its project still has pending commands: that
-- is the only work its freed slot can unblock. Every NOTIFY holds PostgreSQL's global notify
-- lock through its transaction's commit, so needless ones serialize unrelated finishes.
CREATE OR REPLACE FUNCTION rdev_notify_work() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status = 'pending' THEN
        PERFORM pg_notify('rdev_work', '');
    ELSIF TG_OP = 'UPDATE' AND OLD.status = 'running' AND NEW.status <> 'running'
          AND EXISTS (SELECT 1 FROM commands
                      WHERE project_id = NEW.project_id AND status = 'pending') THEN
        PERFORM pg_notify('rdev_work', '');
    END IF;
    RETURN NULL;
END $$;
