"""The tabular pipeline: download, clean, featurize, train and evaluate."""
