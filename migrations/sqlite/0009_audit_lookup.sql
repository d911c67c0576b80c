-- A license's history and an actor's actions are read from the audit log by target and by actor (newest first),
-- so the console's detail pages and filters read an index instead of the whole log.
CREATE INDEX audit_target ON audit_log(target, seq) WHERE target IS NOT NULL;
CREATE INDEX audit_actor ON audit_log(actor, seq);
