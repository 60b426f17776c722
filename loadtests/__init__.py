"""Load-test suites (locust) with service-level-objective gates: `make loadtest`, docs/load-testing.md."""
