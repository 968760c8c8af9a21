"""A small real Parsl workflow, for `make demo` and for tests that need fresh runs."""
