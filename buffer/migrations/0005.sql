-- Schema 4 -> 5: telemetry memories in rows of their own. A state document held every
-- tag's memory (a device with 2,500 tags: about 500 kB, written again whenever one of
-- them moved). Now the memories of a state are spread over up to 64 rows by a hash of
-- the tag (buffer/states.py), and a commit writes only the rows holding a memory that
-- changed. Opening the buffer moves the memories out of older documents.
CREATE TABLE telemetry_memory (
    owner    TEXT NOT NULL,
    bucket   INTEGER NOT NULL,
    memories TEXT NOT NULL,
    PRIMARY KEY (owner, bucket)
);
