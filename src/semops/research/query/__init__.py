"""Using the index: retrieval (dense, BM25, hybrid) and answers with citations."""
