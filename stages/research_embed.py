"""research-embed: ingest the corpus and the added sources, chunk, embed only what is new, sync
the Qdrant index, and evaluate retrieval on the evaluation set."""

from semops import paths
from semops.config.schema import load_section
from semops.io import write_json
from semops.research.pipeline import run_research_embed
from semops.stage import run_stage


def main() -> None:
    cfg = load_section("research")
    built, metrics = run_research_embed(cfg)
    write_json(paths.RESEARCH_METRICS, metrics)
    summary = f"research-embed: {built.chunk_count} chunks, {built.embedded} embedded now"
    if "tfidf" in metrics:
        method = cfg.retrieval.method
        summary += (
            f"; {method} nDCG@10 {metrics[method]['ndcg_at_10']:.4f}"
            f" (TF-IDF {metrics['tfidf']['ndcg_at_10']:.4f})"
        )
    print(summary)


if __name__ == "__main__":
    run_stage(main)
