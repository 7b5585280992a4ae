"""Placeholder: the batching handler is being written."""

class NATTelemetryHandler:
    pass
