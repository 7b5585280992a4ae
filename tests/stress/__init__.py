# A package, so that tests/stress/conftest.py is imported as "stress.conftest"
# and does not shadow tests/conftest.py, which test modules import as "conftest".
