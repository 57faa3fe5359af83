"""research-eval: retrieval metrics of the research index on the evaluation set, per method."""

from semops import paths
from semops.config.schema import load_section
from semops.io import write_json
from semops.research.evaluate import evaluate_index
from semops.research.index.sync import open_index
from semops.stage import run_stage


def main() -> None:
    cfg = load_section("research")
    with open_index(cfg) as (store, embedder, chunks):
        metrics = evaluate_index(cfg, chunks, store, embedder)
    write_json(paths.RESEARCH_METRICS, metrics)
    method = cfg.retrieval.method
    for name, figures in metrics.items():
        if isinstance(figures, dict) and method in figures:
            print(f"research-eval: {name}: {method} nDCG@10 {figures[method]['ndcg_at_10']:.4f}")


if __name__ == "__main__":
    run_stage(main)
