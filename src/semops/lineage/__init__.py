"""OpenLineage events of the pipeline's stages (README: "Lineage")."""
