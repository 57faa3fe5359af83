"""Research RAG: ingest documents and web pages, chunk, embed, index in Qdrant, retrieve,
evaluate retrieval and answer with citations."""
