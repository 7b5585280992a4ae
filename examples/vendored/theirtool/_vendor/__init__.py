"""Packages this tool ships with it.

``nat_telemetry/`` is copied here by ``examples/vendored/vendor.py``; a real
project commits the copy instead.
"""
