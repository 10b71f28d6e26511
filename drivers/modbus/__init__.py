"""Modbus drivers: request planning, exact decoding, TCP transport."""
