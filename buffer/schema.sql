-- floorlink buffer, schema version 1.
-- events: the transactional outbox; position orders commits, lane picks priority.
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    position     INTEGER PRIMARY KEY AUTOINCREMENT,
    id           TEXT NOT NULL UNIQUE,
    lane         INTEGER NOT NULL,
    subject      TEXT NOT NULL,
    type         TEXT NOT NULL,
    body         TEXT NOT NULL,
    committed_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_lane ON events (lane, position);
-- Derivation state per asset, written in the same transaction as its events.
CREATE TABLE IF NOT EXISTS asset_state (
    asset      TEXT PRIMARY KEY,
    state      TEXT NOT NULL,
    updated_at REAL NOT NULL
);
-- Per uplink and lane: every event at or below `position` is acknowledged (or dead-lettered).
CREATE TABLE IF NOT EXISTS cursors (
    uplink   TEXT NOT NULL,
    lane     INTEGER NOT NULL,
    position INTEGER NOT NULL,
    PRIMARY KEY (uplink, lane)
);
CREATE TABLE IF NOT EXISTS dead_letters (
    uplink   TEXT NOT NULL,
    event_id TEXT NOT NULL,
    position INTEGER NOT NULL,
    reason   TEXT NOT NULL,
    at       REAL NOT NULL,
    body     TEXT NOT NULL,
    PRIMARY KEY (uplink, event_id)
);
