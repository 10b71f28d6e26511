"""Uplinks deliver committed events upstream. Each is a small `Uplink`; retries,
ordering, cursors and dead letters live once, in `forwarder`."""
