"""Models on offer: what a model is (`models`: names, inferred descriptions) and the TOML model catalog (`catalog`)."""
