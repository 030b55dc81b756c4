"""The fault-tolerance suite, by concern (tests/faults/suite.py is its command line)."""
