-- floorlink buffer, schema version 5 (a fresh buffer is created from this file;
-- an older one is brought here by buffer/migrations/NNNN.sql, after a backup).
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
-- The transactional outbox: position orders commits, lane picks priority.
CREATE TABLE events (
    position     INTEGER PRIMARY KEY AUTOINCREMENT,
    id           TEXT NOT NULL UNIQUE,
    lane         INTEGER NOT NULL,
    subject      TEXT NOT NULL,
    type         TEXT NOT NULL,
    body         TEXT NOT NULL,
    committed_at REAL NOT NULL
);
CREATE INDEX events_by_lane ON events (lane, position);
-- Derivation state per asset, written in the same transaction as its events.
CREATE TABLE asset_state (
    asset      TEXT PRIMARY KEY,
    state      TEXT NOT NULL,
    updated_at REAL NOT NULL
);
-- A state's telemetry memories (owner: the asset_state key), spread over up to 64 rows
-- by a hash of the tag: a commit writes only the rows holding a memory that changed.
-- `memories` is a JSON object, tag -> memory; buffer/states.py puts documents together.
CREATE TABLE telemetry_memory (
    owner    TEXT NOT NULL,
    bucket   INTEGER NOT NULL,
    memories TEXT NOT NULL,
    PRIMARY KEY (owner, bucket)
);
-- Per uplink and lane: every event at or below `position` is acknowledged (or dead-lettered).
CREATE TABLE cursors (
    uplink   TEXT NOT NULL,
    lane     INTEGER NOT NULL,
    position INTEGER NOT NULL,
    PRIMARY KEY (uplink, lane)
);
-- Events an uplink refused for good. status: dead -> queued (replay asked) -> delivered,
-- or back to dead with one more attempt.
CREATE TABLE dead_letters (
    uplink      TEXT NOT NULL,
    event_id    TEXT NOT NULL,
    position    INTEGER NOT NULL,
    reason      TEXT NOT NULL,
    at          REAL NOT NULL,
    body        TEXT NOT NULL,
    lane        INTEGER NOT NULL DEFAULT 1,
    subject     TEXT NOT NULL DEFAULT '',
    type        TEXT NOT NULL DEFAULT '',
    answer      TEXT,
    attempts    INTEGER NOT NULL DEFAULT 1,
    status      TEXT NOT NULL DEFAULT 'dead',
    replay_asked_at REAL,
    delivered_at    REAL,
    PRIMARY KEY (uplink, event_id)
);
CREATE INDEX dead_letters_by_status ON dead_letters (uplink, status);
-- What retention had to drop, per uplink that never got it and per class.
CREATE TABLE drops (
    uplink  TEXT NOT NULL,
    class   TEXT NOT NULL,
    count   INTEGER NOT NULL,
    last_at REAL NOT NULL,
    PRIMARY KEY (uplink, class)
);
-- Conditions a human must see; they stay until acknowledged (or, for fill levels, until cleared).
CREATE TABLE alarms (
    key       TEXT PRIMARY KEY,
    severity  TEXT NOT NULL,
    message   TEXT NOT NULL,
    raised_at REAL NOT NULL
);
-- The shift's history: `state` rows are an asset's state segments (end NULL while
-- open; `micro` marks a stop reported as a micro-stop), `parts` rows what a production
-- confirmation counted over [start, end], `downtime` rows the stops the line page lists
-- (`ref` the downtime id, `detail` JSON: the PLC's reason and the operators'). Written in the same transaction as the events
-- that make them (buffer/history.py); retention trims it after telemetry.
CREATE TABLE history (
    asset      TEXT NOT NULL,
    kind       TEXT NOT NULL,
    start      REAL NOT NULL,
    end        REAL,
    state      TEXT,
    reason     TEXT,
    work_order TEXT,
    good       INTEGER NOT NULL DEFAULT 0,
    scrap      INTEGER NOT NULL DEFAULT 0,
    micro      INTEGER NOT NULL DEFAULT 0,
    ref        TEXT,
    detail     TEXT
);
CREATE INDEX history_by_asset ON history (asset, kind, start);
CREATE INDEX history_by_ref ON history (ref) WHERE ref IS NOT NULL;
