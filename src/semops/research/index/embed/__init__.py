"""Embedders behind one small interface (base.Embedder): the local all-MiniLM-L6-v2 on
onnxruntime (default), nomic-embed-text over Ollama's HTTP API, and OpenAI's
text-embedding-3-small; `make_embedder` picks the one research.embedder names."""

from __future__ import annotations

from pathlib import Path

from semops.config.research import (
    LocalEmbedderConfig,
    OllamaEmbedderConfig,
    OpenAIEmbedderConfig,
)
from semops.research.index.embed.base import Embedder, EmbedderError
from semops.research.index.embed.local import LocalEmbedder
from semops.research.index.embed.remote import OllamaEmbedder, OpenAIEmbedder


def make_embedder(
    name: str,
    local: LocalEmbedderConfig,
    ollama: OllamaEmbedderConfig,
    openai: OpenAIEmbedderConfig,
    model_dir: Path,
) -> Embedder:
    """The embedder `research.embedder` names; `model_dir` caches the local model's ONNX files."""
    if name == "local":
        return LocalEmbedder(local, model_dir)
    if name == "ollama":
        return OllamaEmbedder(ollama)
    if name == "openai":
        return OpenAIEmbedder(openai)
    raise EmbedderError(f"research.embedder must be local, ollama or openai, got {name!r}")
