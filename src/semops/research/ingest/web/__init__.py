"""Web ingest: crawl pages once and keep snapshots of them on disk.

`semops research add URL` calls `crawl.crawl`; the research-embed stage later converts the
snapshots (rendered HTML + a metadata JSON per page) with Docling, so the stage never touches the
network. Pages are rendered in Debian's Chromium through Crawl4AI, connected over CDP to a browser
started and stopped here; where no browser can start, pages are fetched with plain HTTP and their
JavaScript is not run.
"""
