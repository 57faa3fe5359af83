"""research-embed: ingest the corpus and the added sources, chunk, embed only what is new, and
sync the Qdrant index."""

from semops.config.schema import load_section
from semops.research.pipeline import run_research_embed
from semops.stage import run_stage


def main() -> None:
    built = run_research_embed(load_section("research"))
    print(f"research-embed: {built.chunk_count} chunks, {built.embedded} embedded now")


if __name__ == "__main__":
    run_stage(main)
