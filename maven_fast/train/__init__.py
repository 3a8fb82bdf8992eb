"""Training, evaluation and checkpoints (``maven-fast train / eval``)."""
