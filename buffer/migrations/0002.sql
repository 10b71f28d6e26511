-- Schema 1 -> 2: dead letters carry lane, answer, attempts and a replay status;
-- retention drop counts and persistent alarms get their tables.
ALTER TABLE dead_letters ADD COLUMN lane INTEGER NOT NULL DEFAULT 1;
ALTER TABLE dead_letters ADD COLUMN subject TEXT NOT NULL DEFAULT '';
ALTER TABLE dead_letters ADD COLUMN type TEXT NOT NULL DEFAULT '';
ALTER TABLE dead_letters ADD COLUMN answer TEXT;
ALTER TABLE dead_letters ADD COLUMN attempts INTEGER NOT NULL DEFAULT 1;
ALTER TABLE dead_letters ADD COLUMN status TEXT NOT NULL DEFAULT 'dead';
ALTER TABLE dead_letters ADD COLUMN replay_asked_at REAL;
ALTER TABLE dead_letters ADD COLUMN delivered_at REAL;
CREATE INDEX dead_letters_by_status ON dead_letters (uplink, status);
-- Recover lane/subject/type of old dead letters from their bodies where the JSON says.
UPDATE dead_letters SET
    type    = COALESCE(json_extract(body, '$.type'), ''),
    subject = COALESCE(json_extract(body, '$.subject'), ''),
    lane    = CASE WHEN json_extract(body, '$.type') LIKE '%.quality.hold%' THEN 0 ELSE 1 END;
CREATE TABLE drops (
    uplink  TEXT NOT NULL,
    class   TEXT NOT NULL,
    count   INTEGER NOT NULL,
    last_at REAL NOT NULL,
    PRIMARY KEY (uplink, class)
);
CREATE TABLE alarms (
    key       TEXT PRIMARY KEY,
    severity  TEXT NOT NULL,
    message   TEXT NOT NULL,
    raised_at REAL NOT NULL
);
