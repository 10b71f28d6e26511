-- Schema 3 -> 4: stops as the line page lists them. A `downtime` row per downtime (its
-- id in `ref`; `detail` holds the PLC's reason and the operators' classifications, as
-- JSON), written with the events that make it; retention trims it with the history.
ALTER TABLE history ADD COLUMN ref TEXT;
ALTER TABLE history ADD COLUMN detail TEXT;
CREATE INDEX history_by_ref ON history (ref) WHERE ref IS NOT NULL;
