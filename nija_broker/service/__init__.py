"""The ways people run it: runtime, HTTP API, CLI, status, metrics, report, config."""
