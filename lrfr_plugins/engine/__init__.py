"""Training machinery: classifier, loop, checkpoints, embedding extraction."""
