"""Mirroring results to MLflow, and the plots logged with them."""
