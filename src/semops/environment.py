"""The project's .env, read by every entry point (the CLI and the stage scripts) as `make` reads
it: keys, MLflow and Qdrant URLs. A variable set in the environment wins over the file."""

from __future__ import annotations

from dotenv import load_dotenv

from semops import paths


def load_project_env() -> None:
    load_dotenv(paths.project_root() / ".env", override=False)
