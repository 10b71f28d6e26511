-- Schema 2 -> 3: the shift's history (state segments and produced parts per asset), for
-- the status page's timeline, OEE and Pareto. Written with the events that make it.
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
    micro      INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX history_by_asset ON history (asset, kind, start);
