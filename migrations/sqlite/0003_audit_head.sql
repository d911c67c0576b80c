-- The head of the audit chain (last sequence number and its hash), written in the same transaction as every
-- append, so deleting the newest rows of the log is detected by `audit verify` like any other gap.
CREATE TABLE audit_head (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    seq INTEGER NOT NULL,
    hash BLOB NOT NULL
);
INSERT INTO audit_head (id, seq, hash)
SELECT 1, seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1;
