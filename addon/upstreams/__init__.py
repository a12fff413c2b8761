"""Several upstream servers behind one proxy (issue 15): `servers` (their configuration, health,
routing and merged model lists; pure) and `directory` (each server's model list, fetched
concurrently and cached, doubling as the health probe; the catalog plus all of them)."""
