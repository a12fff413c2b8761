"""The client compatibility suite (make test-clients)."""
