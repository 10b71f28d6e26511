"""The shift at a glance: windows, figures (OEE, Pareto, parts per hour) and the
timeline, computed from the buffer's history for the status page."""
