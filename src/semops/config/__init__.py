"""Configuration: the typed schema of params.yaml (one home for every default) and the
composition of conf/ into it."""
