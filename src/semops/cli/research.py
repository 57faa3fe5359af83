"""`semops research ...`: ask, search, add and remove sources, list them, rebuild a server's
collection."""

from __future__ import annotations

import argparse
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from semops import paths
from semops.config.research import ResearchConfig
from semops.config.schema import load_section
from semops.config.validation import check_http_url, url_credential
from semops.errors import SemopsError
from semops.research.ingest.sources import WAIT_S, wait_for_pipeline

WAIT_HELP = f"seconds to wait for a running dvc command to finish (default {WAIT_S:g})"


def _config(args: argparse.Namespace) -> ResearchConfig:
    from dataclasses import replace

    cfg: ResearchConfig = load_section("research")
    retrieval = cfg.retrieval
    if args.method:
        retrieval = replace(retrieval, method=args.method)
    if getattr(args, "top_k", None):
        retrieval = replace(retrieval, top_k=args.top_k)
    return replace(cfg, retrieval=retrieval)


def _passages(cfg: ResearchConfig, query: str, limit: int) -> list[Any]:
    from dataclasses import replace

    from semops.research.index.sync import open_index
    from semops.research.query import retrieval
    from semops.research.query.answer import Passage

    with open_index(cfg) as (store, embedder, _):
        hits = retrieval.search(
            store, embedder.embed_query(query), query, replace(cfg.retrieval, top_k=limit)
        )
    return [
        Passage(
            source=h.payload["source"],
            title_path=tuple(h.payload["title_path"]),
            page=h.payload["page"],
            text=h.payload["text"],
            score=h.score,
            opens_section=h.payload.get("opens_section", True),
        )
        for h in hits
    ]


def ask(args: argparse.Namespace) -> None:
    from semops.research.query.answer import answer, format_answer

    cfg = _config(args)
    passages = _passages(cfg, args.question, args.top_k or cfg.answer.top_k)
    print(format_answer(answer(args.question, passages, cfg.answer)))


def search(args: argparse.Namespace) -> None:
    cfg = _config(args)
    from semops.research.query.answer import citation_label

    for rank, p in enumerate(_passages(cfg, args.query, cfg.retrieval.top_k), 1):
        where = citation_label(p.source, p.title_path, p.page, p.opens_section)
        snippet = " ".join(p.text.split())[:160]
        print(f"{rank:>2}. {p.score:.4f}  {where}\n    {snippet}")


def rebuild(args: argparse.Namespace) -> None:
    from semops.research.index.sync import rebuild_collection

    cfg: ResearchConfig = load_section("research")
    print(rebuild_collection(cfg, args.collection, force=args.force))


def add(args: argparse.Namespace) -> None:
    from semops.research.ingest import sources

    cfg: ResearchConfig = load_section("research")
    root = paths.RESEARCH_SOURCES
    for target in args.targets:  # all checked before anything is written
        if "://" in target:
            _check_url(target)
    added = 0
    for target in args.targets:
        if "://" in target:
            entry, count = sources.add_web(target, root, _crawler(target, cfg), args.wait)
            print(f"research add: {target}: {count} page(s) -> {root / entry.snapshot}")
        else:
            entry, count, skipped = sources.add_local(Path(target), root, args.wait)
            for line in skipped:
                print(f"research add: skipped {line}")
            print(f"research add: {entry.origin}: {count} file(s) -> {root / entry.snapshot}")
        added += 1
    if added and not args.no_build:
        wait_for_pipeline("research add", args.wait)
        _rebuild()


def _check_url(url: str) -> None:
    """Refuse a URL with credentials before anything is written (sources.json is DVC-tracked and
    shared, and page URLs become citations), naming what carries them, never their value."""
    from urllib.parse import urlsplit

    try:
        urlsplit(url)
    except ValueError as exc:
        raise SemopsError(f"research add: not a valid URL ({exc})") from None
    found = url_credential(url)
    if found:
        raise SemopsError(
            f"research add: refused a URL with credentials ({found}; the value is not shown); "
            "nothing was added. Add the page without them"
        )
    check_http_url("research add", url)


def _crawler(url: str, cfg: ResearchConfig) -> Callable[[Path], int]:
    def crawl_into(folder: Path) -> int:
        from semops.research.ingest.web.crawl import crawl

        report = crawl([url], cfg.web, folder)
        for failure in report.failures:
            print(f"research add: skipped {failure.url}: {failure.reason}")
        return len(report.pages)

    return crawl_into


def remove(args: argparse.Namespace) -> None:
    from semops.research.ingest import sources

    entry = sources.remove(args.origin, paths.RESEARCH_SOURCES, args.wait)
    print(f"research remove: {entry.origin}")
    if not args.no_build:
        wait_for_pipeline("research remove", args.wait)
        _rebuild()


def list_sources(args: argparse.Namespace) -> None:
    from semops.research.ingest import sources

    entries = sources.read_manifest(paths.RESEARCH_SOURCES)
    cfg: ResearchConfig = load_section("research")
    print(f"corpus: {cfg.corpus}")
    print(f"documents: {cfg.documents}")
    for entry in entries:
        print(f"{entry.kind:<6} {entry.origin}  ({paths.RESEARCH_SOURCES / entry.snapshot})")


def _rebuild() -> None:
    """Index what was added through DVC, so dvc.lock and the cache record it."""
    result = subprocess.run(["dvc", "repro", "research-eval"], check=False)
    if result.returncode != 0:
        raise SemopsError("`dvc repro research-eval` failed (see above); the sources were saved")


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    research = commands.add_parser("research", help="the research index: ask, search, add sources")
    sub = research.add_subparsers(dest="research_command", required=True)
    methods = ("dense", "bm25", "hybrid")

    p = sub.add_parser("ask", help="answer a question from the index, with citations")
    p.add_argument("question")
    p.add_argument("--top-k", type=int, help="passages given to the answer (research.answer.top_k)")
    p.add_argument("--method", choices=methods, help="retrieval method (research.retrieval)")
    p.set_defaults(func=ask)

    p = sub.add_parser("search", help="the best-matching passages, ranked")
    p.add_argument("query")
    p.add_argument("--top-k", type=int, help="how many (research.retrieval.top_k)")
    p.add_argument("--method", choices=methods, help="retrieval method (research.retrieval)")
    p.set_defaults(func=search)

    p = sub.add_parser("add", help="add files, folders or web pages, then update the index")
    p.add_argument("targets", nargs="+", help="file, folder or http(s) URL")
    p.add_argument("--no-build", action="store_true", help="only save the sources")
    p.add_argument("--wait", type=float, default=WAIT_S, help=WAIT_HELP)
    p.set_defaults(func=add)

    p = sub.add_parser("remove", help="remove an added source, then update the index")
    p.add_argument("origin", help="the path or URL as added")
    p.add_argument("--no-build", action="store_true", help="only remove the source")
    p.add_argument("--wait", type=float, default=WAIT_S, help=WAIT_HELP)
    p.set_defaults(func=remove)

    sub.add_parser("sources", help="list the corpus and the added sources").set_defaults(
        func=list_sources
    )

    p = sub.add_parser(
        "rebuild", help="delete the Qdrant server's collection and build the index in it anew"
    )
    p.add_argument(
        "--collection", required=True, help="the collection, research.store.collection, by name"
    )
    p.add_argument("--force", action="store_true", help="do it (without: say what it would do)")
    p.set_defaults(func=rebuild)
