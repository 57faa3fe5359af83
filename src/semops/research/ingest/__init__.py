"""Getting documents: local files through Docling, web pages through Chromium, the
evaluation corpus, and the snapshots `semops research add` keeps."""
