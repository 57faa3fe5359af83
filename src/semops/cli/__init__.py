"""The `semops` command line: the top layer, over everything else."""
