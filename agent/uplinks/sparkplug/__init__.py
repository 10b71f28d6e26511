"""The Sparkplug B uplink (Sparkplug 3.0, an Edge Node): payloads, topics, sessions."""
