"""Operating on the buffer by hand: `floorlink buffer ...`.

While the agent runs, the commands reach it through a Unix socket in its state
directory (the agent stays the single writer); when it is stopped, they open
the buffer file directly. Replays and exports are written to an audit log.
"""
