"""Building the index: chunks, embedders, the embedding store and the Qdrant stores."""
