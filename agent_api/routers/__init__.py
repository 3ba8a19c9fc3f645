"""The thin HTTP layer: routes call services and the agents package, nothing else."""
