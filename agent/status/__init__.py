"""The local status endpoint: a technician's page, JSON, Prometheus metrics, probes.

board (what is shown), page (HTML), metrics (Prometheus), auth (off-loopback
logins), clock (time synchronisation), server (the HTTP endpoint).
"""
