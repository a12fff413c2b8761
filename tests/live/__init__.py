"""The live tier against the local model server (make test-live)."""
