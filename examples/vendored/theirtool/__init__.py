"""theirtool: a tool that ships its own copy of nat_telemetry (see ../vendor.py)."""

__version__ = "3.1.0"
