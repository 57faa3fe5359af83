"""Pages to look at: DVC's plots and the project's report, drawn with no network."""
