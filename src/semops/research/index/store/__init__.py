"""The research index in Qdrant: the interface and what both backends share (base), Qdrant's
engine in this process (edge) and a Qdrant server (server)."""
