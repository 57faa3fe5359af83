"""semops: reproducible ML pipeline and research RAG toolkit."""
