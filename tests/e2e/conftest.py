"""End-to-end tests: every test under tests/e2e (and any test using `label_studio`) is marked `e2e` (tests/conftest.py), and
they share one real Label Studio per test session (the `label_studio` and `backend` fixtures live in tests/conftest.py
so the fault and load suites reuse the same LS instead of starting their own)."""
