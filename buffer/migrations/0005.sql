-- Schema 4 -> 5: telemetry memories, a row per tag. A state document held every tag's
-- memory (a device with 2,500 tags: about 500 kB, written again whenever one of them
-- moved); now a commit writes only the memories that changed. Opening the buffer moves
-- the memories out of older documents (buffer/states.py, normalize).
CREATE TABLE telemetry_memory (
    owner   TEXT NOT NULL,
    tag     TEXT NOT NULL,
    memory  TEXT NOT NULL,
    PRIMARY KEY (owner, tag)
);
