"""The hostile-tenant suite, by concern (tests/security/hostile.py is its command line)."""
