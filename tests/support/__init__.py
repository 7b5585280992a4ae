"""Test support code that test modules import (``from support.otlp_receiver import ...``).

A package for the same reason as ``tests/stress``: importable by its own name
without shadowing ``tests/conftest.py``.
"""
