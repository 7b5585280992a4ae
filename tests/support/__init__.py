"""Code the tests share, imported by name (``from support.helpers import event``).

* ``helpers``: events, ``ids``, ``assert_balanced``, ``wait_until``,
  ``subprocess_env``, ``REPO_ROOT``;
* ``endpoints``: ``Reply``, ``FakeEndpoint``, ``LoopbackEndpoint``, ``BlackHole``;
* ``collector``: envelopes and HTTP clients for the collector's tests;
* ``otlp_receiver``: a real OTLP/HTTP logs receiver.

A package for the same reason as ``tests/stress``: importable by its own name
without shadowing ``tests/conftest.py``, which holds the fixtures.
"""
