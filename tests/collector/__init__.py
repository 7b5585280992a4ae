# A package, so that tests/collector/conftest.py does not shadow tests/conftest.py
# (which other test modules import as ``conftest``).
