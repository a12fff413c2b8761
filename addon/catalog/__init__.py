"""Models on offer: names and the TOML model catalog (`catalog`), and the upstream's cached model list (`directory`)."""
